"""Built-in reconstruction losses: loss(pred, target, mask) -> scalar, all [B, C, H, W] / [B, H, W]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mimbench import hookimpl


def _reduce(per_pixel: torch.Tensor, mask: torch.Tensor, masked_only: bool) -> torch.Tensor:
    """Mean of per_pixel [B, C, H, W] over hidden pixels (SimMIM), or over all pixels."""
    if not masked_only:
        return per_pixel.mean()
    weight = mask.unsqueeze(1).to(per_pixel.dtype)  # [B, 1, H, W]
    hidden_values = weight.sum() * per_pixel.shape[1]
    return (per_pixel * weight).sum() / hidden_values.clamp_min(1.0)


class L1Loss:
    """Mean absolute error, over hidden pixels by default (SimMIM's loss)."""

    def __init__(self, masked_only: bool = True):
        self.masked_only = masked_only

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return _reduce(F.l1_loss(pred, target, reduction="none"), mask, self.masked_only)


class MSELoss:
    """Mean squared error, over hidden pixels by default (MAE's loss)."""

    def __init__(self, masked_only: bool = True):
        self.masked_only = masked_only

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return _reduce(F.mse_loss(pred, target, reduction="none"), mask, self.masked_only)


@hookimpl
def mimbench_register_losses(register) -> None:
    register("l1", L1Loss)
    register("mse", MSELoss)
