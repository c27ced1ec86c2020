"""The masked forward pass, with run-time checks of every component's contract.

``encode_visible`` is the only way the core calls an encoder on masked images: it
zeroes hidden pixels first, so no encoder can see what it has to reconstruct.
"""

from __future__ import annotations

import torch
from torch import nn

from mimbench.errors import ContractError


def check_mask(mask: object, images: torch.Tensor, name: str = "masker") -> torch.Tensor:
    """Raise ContractError unless ``mask`` is a bool Tensor[B, H, W] on the images' device."""
    b, _, h, w = images.shape
    if not isinstance(mask, torch.Tensor):
        raise ContractError(f"{name} returned {type(mask).__name__}, expected a bool Tensor[{b}, {h}, {w}]")
    if mask.dtype != torch.bool or tuple(mask.shape) != (b, h, w) or mask.device != images.device:
        raise ContractError(
            f"{name} returned a mask {mask.dtype} {list(mask.shape)} on {mask.device}; "
            f"expected torch.bool [{b}, {h}, {w}] on {images.device}"
        )
    return mask


def check_features(features: object, encoder: nn.Module, images: torch.Tensor, name: str = "encoder") -> torch.Tensor:
    """Raise ContractError unless ``features`` is Tensor[B, out_dim, H/stride, W/stride]."""
    b, _, h, w = images.shape
    stride, out_dim = getattr(encoder, "stride", None), getattr(encoder, "out_dim", None)
    if not isinstance(stride, int) or not isinstance(out_dim, int):
        raise ContractError(f"{name} must have int attributes out_dim and stride, got {out_dim!r} and {stride!r}")
    expected = (b, out_dim, h // stride, w // stride)
    if not isinstance(features, torch.Tensor) or tuple(features.shape) != expected:
        got = list(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ContractError(f"{name} returned features {got}; expected {list(expected)} (out_dim={out_dim}, stride={stride})")
    return features


def check_reconstruction(pred: object, images: torch.Tensor, name: str = "decoder") -> torch.Tensor:
    """Raise ContractError unless ``pred`` is a float Tensor shaped like ``images``."""
    if not isinstance(pred, torch.Tensor) or pred.shape != images.shape or not pred.is_floating_point():
        got = f"{pred.dtype} {list(pred.shape)}" if isinstance(pred, torch.Tensor) else type(pred).__name__
        raise ContractError(f"{name} returned {got}; expected a float tensor {list(images.shape)}")
    return pred


def hide(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """images [B, C, H, W] with every hidden pixel (mask [B, H, W] True) set to 0, the mean pixel."""
    return images.masked_fill(mask.unsqueeze(1), 0.0)


def encode_visible(encoder: nn.Module, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Encode what is visible: hidden pixels are zeroed before the encoder sees the images."""
    return encoder(hide(images, mask), mask)


def reconstruct(encoder: nn.Module, decoder: nn.Module, images: torch.Tensor, mask: torch.Tensor,
                check: bool = False) -> torch.Tensor:
    """images [B, C, H, W], mask [B, H, W] -> prediction [B, C, H, W]; ``check`` validates shapes."""
    features = encode_visible(encoder, images, mask)
    if check:
        check_features(features, encoder, images)
    pred = decoder(features, mask)
    if check:
        check_reconstruction(pred, images)
    return pred
