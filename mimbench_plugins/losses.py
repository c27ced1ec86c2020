"""Built-in reconstruction losses: loss(pred, target, mask) -> scalar, all [B, C, H, W] / [B, H, W].

``pred`` and ``target`` are normalised images (the core subtracts the train split's per-channel
mean and divides by its std), ``mask`` is True where a pixel was hidden.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F

from mimbench.plugin import Interval, hookimpl, metrics

PatchSize = Annotated[int, Interval(ge=1, le=1024)]

NORM_PIX_EPS = 1e-6  # MAE's


def _patches(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, H/p, p, W/p, p]; ValueError unless p divides H and W and a patch holds 2+ values."""
    b, c, h, w = images.shape
    if patch_size < 1 or h % patch_size or w % patch_size:
        raise ValueError(f"norm_pix needs image sides divisible by norm_pix_patch_size={patch_size}, got {h}x{w}")
    if c * patch_size * patch_size < 2:
        raise ValueError(f"norm_pix needs at least 2 values per patch, got {c} channel(s) x {patch_size}x{patch_size}")
    return images.reshape(b, c, h // patch_size, patch_size, w // patch_size, patch_size)


def _patch_stats(patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and sqrt(unbiased var + 1e-6) of each patch of [B, C, H/p, p, W/p, p], over its pixels and channels."""
    dims = (1, 3, 5)
    return patches.mean(dim=dims, keepdim=True), (patches.var(dim=dims, keepdim=True) + NORM_PIX_EPS).sqrt()


def norm_pix_target(target: torch.Tensor, patch_size: int) -> torch.Tensor:
    """MAE's normalised-pixel target: target [B, C, H, W] -> [B, C, H, W] where every non-overlapping
    patch_size x patch_size patch has had its mean subtracted and been divided by sqrt(var + 1e-6).

    Mean and variance are taken over the patch's pixels and channels together; the variance is
    the unbiased one, as ``torch.var`` in MAE's ``forward_loss``. H and W must be multiples of
    ``patch_size``, and a patch must hold at least two values.
    """
    patches = _patches(target, patch_size)
    mean, std = _patch_stats(patches)
    return ((patches - mean) / std).reshape(target.shape)


def norm_pix_to_image(pred: torch.Tensor, target: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Undo ``norm_pix_target`` on a prediction [B, C, H, W] with the target's patch statistics
    (MAE's visualisation) -> [B, C, H, W] in the target's units.

    The statistics include the target's hidden pixels, which the model never saw, so pixel-space
    metrics of the result are optimistic and not comparable with runs trained without norm_pix.
    """
    mean, std = _patch_stats(_patches(target, patch_size))
    return (_patches(pred, patch_size) * std + mean).reshape(pred.shape)


def _weight(mask: torch.Tensor, masked_only: bool, like: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] weights of the pixels a loss averages over: the hidden ones, or all."""
    return mask.unsqueeze(1).to(like.dtype) if masked_only else torch.ones_like(like[:, :1])


def _reduce(per_value: torch.Tensor, mask: torch.Tensor, masked_only: bool) -> torch.Tensor:
    """Mean of per_value [B, C, H, W] over hidden pixel values (SimMIM: sum(loss * mask) /
    (hidden pixels * C)), or over all values; 0 when nothing is hidden."""
    weight = _weight(mask, masked_only, per_value)
    return (per_value * weight).sum() / (weight.sum() * per_value.shape[1]).clamp_min(1.0)


class _PixelLoss:
    """An element-wise loss averaged over hidden pixel values, optionally against MAE's norm_pix target.

    ``norm_pix``: the prediction is compared with ``norm_pix_target(target, norm_pix_patch_size)``,
    so the decoder learns per-patch normalised pixels rather than the image itself.
    """

    def __init__(self, masked_only: bool = True, norm_pix: bool = False, norm_pix_patch_size: PatchSize = 4):
        if norm_pix_patch_size < 1:
            raise ValueError(f"norm_pix_patch_size must be >= 1, got {norm_pix_patch_size}")
        self.masked_only = masked_only
        self.norm_pix = norm_pix
        self.norm_pix_patch_size = norm_pix_patch_size
        # For the core's pixel-space metrics (see the losses hookspec): a norm_pix prediction
        # is mapped back with the target's per-patch mean and std, as MAE's visualisation does.
        self.prediction_to_image = self._from_norm_pix if norm_pix else None

    def _from_norm_pix(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return norm_pix_to_image(pred, target, self.norm_pix_patch_size)

    def target_for(self, target: torch.Tensor) -> torch.Tensor:
        """What the prediction is compared with: target [B, C, H, W], or its norm_pix version."""
        return norm_pix_target(target, self.norm_pix_patch_size) if self.norm_pix else target

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-value loss [B, C, H, W]."""
        raise NotImplementedError

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return _reduce(self.elementwise(pred, self.target_for(target)), mask, self.masked_only)


class L1Loss(_PixelLoss):
    """Mean absolute error, over hidden pixels by default (SimMIM's loss)."""

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(pred, target, reduction="none")


class MSELoss(_PixelLoss):
    """Mean squared error, over hidden pixels by default (MAE's loss)."""

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred, target, reduction="none")


class SmoothL1Loss(_PixelLoss):
    """Smooth L1 (Huber / beta): 0.5 e^2 / beta where |e| < beta, else |e| - 0.5 beta; over hidden pixels."""

    def __init__(self, beta: float = 1.0, masked_only: bool = True, norm_pix: bool = False,
                 norm_pix_patch_size: PatchSize = 4):
        super().__init__(masked_only, norm_pix, norm_pix_patch_size)
        if not beta > 0:
            raise ValueError(f"beta must be > 0 (beta 0 is the l1 loss), got {beta}")
        self.beta = beta

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.smooth_l1_loss(pred, target, reduction="none", beta=self.beta)


class PSNRLoss:
    """Negative PSNR of the hidden pixels, averaged over the images that have some.

    Per image: mse = mean of (pred - target)^2 over its hidden values (all values when
    ``masked_only`` is false), PSNR = 10 * log10(max_value^2 / mse); the loss is minus the mean
    PSNR over the images with at least one hidden pixel (0 when there are none). mse is clamped
    at 1e-10, so a perfect image scores 10 * log10(max_value^2 / 1e-10).

    ``max_value`` is the peak signal in the units the loss sees, i.e. *normalised* images:
    1.0 = one train-split standard deviation. The [0, 1] pixel range spans 1 / std there, so
    ``max_value = 1 / std`` gives the pixel-space PSNR of a one-channel dataset (before
    clamping). max_value only shifts the loss by a constant; the gradient does not depend on it.
    """

    def __init__(self, max_value: float = 1.0, masked_only: bool = True):
        if not max_value > 0:
            raise ValueError(f"max_value must be > 0, got {max_value}")
        self.max_value = max_value
        self.masked_only = masked_only

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weight = _weight(mask, self.masked_only, pred).expand_as(pred)
        counts = weight.flatten(1).sum(1)  # hidden values per image, [B]
        mse = ((pred - target).square() * weight).flatten(1).sum(1) / counts.clamp_min(1.0)
        psnr = metrics.psnr(mse, self.max_value)
        counted = (counts > 0).to(psnr.dtype)
        return -(psnr * counted).sum() / counted.sum().clamp_min(1.0)


@hookimpl
def mimbench_register_losses(register) -> None:
    register("l1", L1Loss)
    register("mse", MSELoss)
    register("smooth_l1", SmoothL1Loss)
    register("psnr", PSNRLoss)
