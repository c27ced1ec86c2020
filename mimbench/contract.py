"""The masked forward pass, with run-time checks of every component's contract.

``encode_visible`` is the only way the core calls an encoder on masked images: it
zeroes hidden pixels first, so no encoder can see what it has to reconstruct. A target of
stride s is predicted on its own grid: :func:`mask_on_grid` says which of its cells are hidden,
:func:`decoder_grid` what the decoder is built for.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from mimbench.errors import ConfigError, ContractError


@dataclass
class Components:
    """The parts of one run (built by :meth:`mimbench.runtime.Runtime.components`): what is trained
    (encoder, decoder), the masker, the loss and the target (``mimbench_register_targets``)."""

    encoder: nn.Module
    decoder: nn.Module
    masker: Callable[..., torch.Tensor]
    loss: Callable[..., torch.Tensor]
    target: Any


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


def check_reconstruction(pred: object, images: torch.Tensor, name: str = "decoder",
                         shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Raise ContractError unless ``pred`` is a float Tensor of ``shape`` (default: the images')."""
    shape = tuple(images.shape) if shape is None else shape
    if not isinstance(pred, torch.Tensor) or tuple(pred.shape) != shape or not pred.is_floating_point():
        got = f"{pred.dtype} {list(pred.shape)}" if isinstance(pred, torch.Tensor) else type(pred).__name__
        raise ContractError(f"{name} returned {got}; expected a float tensor {list(shape)}")
    return pred


def target_shape(images: torch.Tensor, channels: int, stride: int) -> tuple[int, int, int, int]:
    """What a target of ``channels`` at ``stride`` gives for images [B, C, H, W]: (B, channels, H/stride, W/stride)."""
    b, _, h, w = images.shape
    return b, channels, h // stride, w // stride


def check_target_output(out: object, images: torch.Tensor, channels: int, stride: int,
                        name: str = "target") -> torch.Tensor:
    """Raise ContractError unless ``out`` is a float Tensor[B, channels, H/stride, W/stride] on the images' device."""
    check_reconstruction(out, images, name, target_shape(images, channels, stride))
    if out.device != images.device:
        raise ContractError(f"{name} returned a tensor on {out.device}; expected {images.device}")
    return out


def mask_on_grid(mask: torch.Tensor, stride: int) -> torch.Tensor:
    """mask [B, H, W] -> [B, H/stride, W/stride]: a cell is hidden when every one of its pixels is
    (the mask itself at stride 1). A cell with a visible pixel is never asked for."""
    if stride == 1:
        return mask
    b, h, w = mask.shape
    return mask.view(b, h // stride, stride, w // stride, stride).permute(0, 1, 3, 2, 4).flatten(3).all(dim=-1)


def decoder_grid(encoder_stride: int, target_stride: int, image_size: int, target: str = "target") -> tuple[int, int]:
    """The decoder's ``stride`` and ``image_size`` for a target at ``target_stride``: it upsamples
    each feature cell by encoder stride / target stride, to a grid of image size / target stride.
    ConfigError unless the target's stride divides the encoder's."""
    if encoder_stride % target_stride:
        raise ConfigError(f"target {target!r} predicts {target_stride}x{target_stride} cells, but the encoder's "
                          f"features are at encoder stride {encoder_stride}: a target's stride must divide the "
                          f"encoder's (change the target's cell/patch size or the encoder's patch size)")
    return encoder_stride // target_stride, image_size // target_stride


def hide(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """images [B, C, H, W] with every hidden pixel (mask [B, H, W] True) set to 0, the mean pixel."""
    return images.masked_fill(mask.unsqueeze(1), 0.0)


def encode_visible(encoder: nn.Module, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Encode what is visible: hidden pixels are zeroed before the encoder sees the images."""
    return encoder(hide(images, mask), mask)


def reconstruct(encoder: nn.Module, decoder: nn.Module, images: torch.Tensor, mask: torch.Tensor,
                check: bool = False, channels: int | None = None, stride: int = 1) -> torch.Tensor:
    """images [B, C, H, W], mask [B, H, W] -> prediction [B, channels, H/stride, W/stride] of a
    target of ``channels`` (default C) at ``stride`` (default 1: the image); the decoder gets the
    mask on that grid. ``check`` validates shapes."""
    features = encode_visible(encoder, images, mask)
    if check:
        check_features(features, encoder, images)
    pred = decoder(features, mask_on_grid(mask, stride))
    if check:
        check_reconstruction(pred, images, shape=target_shape(images, channels or images.shape[1], stride))
    return pred


def check_probe_output(out: object, declared: list, name: str = "probe") -> dict[str, Any]:
    """Raise ContractError unless a probe's ``out`` is ``{column: number or None}`` whose declared
    columns (``declared``: its ``metric_columns()``) hold what their kind says: an ``accuracy`` a
    fraction in [0, 1] (NaN allowed: nothing to score), a ``count`` a whole number. A declared
    column the probe did not return is allowed (a best block where there are no blocks)."""
    if not isinstance(out, dict):
        raise ContractError(f"{name} returned {type(out).__name__}, expected a dict of column -> number")
    for key, value in out.items():
        if not isinstance(key, str) or not (value is None or isinstance(value, numbers.Real)):
            raise ContractError(f"{name} returned {key!r}: {type(value).__name__}; expected str keys and numbers")
    kinds = {column.key: column.kind for column in declared}
    for key, value in out.items():
        kind = kinds.get(key)
        if value is None or kind is None:
            continue
        if kind == "accuracy" and not (math.isnan(value) or 0.0 <= value <= 1.0):
            raise ContractError(f"{name} returned {key} = {value}, declared an accuracy: a fraction in [0, 1]")
        if kind == "count" and not float(value).is_integer():
            raise ContractError(f"{name} returned {key} = {value}, declared a count: a whole number")
    return out
