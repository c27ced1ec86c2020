"""Targets computed from the pixels alone: ``pixels`` (SimMIM), ``norm_pix`` (MAE) and ``fourier``.

Every target maps normalised images [B, C, H, W] (after augmentation, before masking) to what the
decoder predicts, [B, channels, H / stride, W / stride]; see ``mimbench_register_targets``.
"""

from __future__ import annotations

import torch

from mimbench_plugins.losses import PatchSize, norm_pix_target, norm_pix_to_image


def _require_divisible(image_size: int, size: int, name: str) -> None:
    if size < 1 or image_size % size:
        raise ValueError(f"{name} must be >= 1 and divide the image size {image_size}, got {size}")


class PixelsTarget:
    """The normalised image itself (SimMIM): today's behaviour, and the default."""

    predicts_image = True  # the loss is already a pixel loss: no target_loss column

    def __init__(self, in_channels: int, image_size: int):
        self.channels, self.stride = in_channels, 1

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] -> the same tensor."""
        return images

    def to_image(self, pred: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return pred


class NormPixTarget:
    """MAE's per-patch normalised pixels: each patch_size x patch_size patch minus its mean, over its std.

    Mean and unbiased variance over the patch's pixels and channels, std = sqrt(var + 1e-6), as
    MAE's ``forward_loss``. Reconstruction metrics map predictions back with the target's own
    patch statistics (which include hidden pixels): the run is marked ``recon_uses_target_stats``.
    """

    uses_target_stats = True

    def __init__(self, in_channels: int, image_size: int, patch_size: PatchSize = 4):
        _require_divisible(image_size, patch_size, "patch_size")
        if in_channels * patch_size * patch_size < 2:
            raise ValueError(f"patch_size {patch_size} leaves one value per patch: nothing to normalise")
        self.channels, self.stride, self.patch_size = in_channels, 1, patch_size

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] -> [B, C, H, W], every patch at zero mean and unit std."""
        return norm_pix_target(images, self.patch_size)

    def to_image(self, pred: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return norm_pix_to_image(pred, images, self.patch_size)


class FourierTarget:
    """Each patch's 2-D spectrum: real and imaginary parts of its orthonormal ``rfft2``, per channel.

    A patch_size p patch of C channels gives C * p * (p // 2 + 1) * 2 values at stride p. Real and
    imaginary parts rather than amplitude and phase: they are linear in the pixels, defined
    everywhere (a phase is not where the amplitude is 0) and have no wrap-around at +-pi, and their
    squared error is the squared distance of complex coefficients that MFM's frequency loss uses.
    The map is invertible, so predictions have exact pixel-space metrics (:meth:`to_image`), which
    use nothing of the target. With the ``mse`` loss the objective is a pixel MSE that weighs the
    frequencies differently (Parseval: the half spectrum counts each conjugate pair once).
    """

    def __init__(self, in_channels: int, image_size: int, patch_size: PatchSize = 4):
        _require_divisible(image_size, patch_size, "patch_size")
        self.in_channels, self.patch_size, self.stride = in_channels, patch_size, patch_size
        self.channels = in_channels * patch_size * (patch_size // 2 + 1) * 2

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] -> [B, C * p * (p//2 + 1) * 2, H / p, W / p]."""
        b, c, h, w = images.shape
        p = self.patch_size
        patches = images.float().reshape(b, c, h // p, p, w // p, p).permute(0, 1, 2, 4, 3, 5)  # [B, C, h, w, p, p]
        spectrum = torch.view_as_real(torch.fft.rfft2(patches, norm="ortho"))  # [B, C, h, w, p, q, 2]
        return spectrum.permute(0, 1, 4, 5, 6, 2, 3).reshape(b, self.channels, h // p, w // p)

    def to_image(self, pred: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """A predicted spectrum [B, D, H / p, W / p] -> the image [B, C, H, W] it is the spectrum of."""
        b, _, h, w = pred.shape
        p, q = self.patch_size, self.patch_size // 2 + 1
        spectrum = pred.float().reshape(b, self.in_channels, p, q, 2, h, w).permute(0, 1, 5, 6, 2, 3, 4)
        patches = torch.fft.irfft2(torch.view_as_complex(spectrum.contiguous()), s=(p, p), norm="ortho")
        return patches.permute(0, 1, 2, 4, 3, 5).reshape(b, self.in_channels, h * p, w * p)
