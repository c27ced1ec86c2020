"""Reconstruction metrics: small pure functions on [0, 1] pixel-space tensors.

pred, target: float Tensor[B, C, H, W] in [0, 1]; mask: bool Tensor[B, H, W], True = hidden.
Only hidden pixels count; every channel of a hidden pixel counts.
"""

from __future__ import annotations

import torch

#: PSNR of a perfect reconstruction would be infinite; MSE is floored here (100 dB).
MSE_FLOOR = 1e-10


def hidden_squared_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: (sum of squared errors over hidden values [B], number of hidden values [B])."""
    weight = mask.unsqueeze(1).to(torch.float64)
    squared = (pred.double() - target.double()).pow(2) * weight
    return squared.sum(dim=(1, 2, 3)), weight.sum(dim=(1, 2, 3)) * pred.shape[1]


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over hidden values, per image: Tensor[B] (NaN for an image with nothing hidden)."""
    sse, count = hidden_squared_error(pred, target, mask)
    return sse / count


def psnr(mse: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """10 * log10(max_value^2 / mse), elementwise, with mse floored at MSE_FLOOR."""
    return 10.0 * torch.log10(max_value**2 / mse.clamp_min(MSE_FLOOR))


def hidden_fraction(mask: torch.Tensor) -> torch.Tensor:
    """Fraction of pixels hidden, per image: bool [B, H, W] -> float Tensor[B]."""
    return mask.flatten(1).float().mean(dim=1)
