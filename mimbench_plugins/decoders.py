"""Built-in decoders: features [B, in_dim, H / stride, W / stride] -> images [B, C, H, W]."""

from __future__ import annotations

import math

import torch
from torch import nn

from mimbench.plugin import hookimpl
from mimbench_plugins.vit import Width


def _to_pixels(in_dim: int, stride: int, out_channels: int) -> list[nn.Module]:
    """[B, in_dim, h, w] -> [B, out_channels, h * stride, w * stride]: a 1x1 conv to
    stride^2 * out_channels channels, then PixelShuffle(stride)."""
    if stride < 1:
        raise ValueError(f"needs an encoder stride >= 1, got {stride}")
    return [nn.Conv2d(in_dim, stride * stride * out_channels, kernel_size=1), nn.PixelShuffle(stride)]


class LinearDecoder(nn.Module):
    """SimMIM's head: a 1x1 conv to stride^2 * C channels, then PixelShuffle back to full size."""

    def __init__(self, in_dim: int, stride: int, out_channels: int, image_size: int):
        super().__init__()
        self.head = nn.Sequential(*_to_pixels(in_dim, stride, out_channels))

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """features [B, in_dim, H/stride, W/stride] -> [B, out_channels, H, W]."""
        return self.head(features)


class MLPDecoder(nn.Module):
    """Per-location MLP head: 1x1 conv to hidden_dim, GELU, 1x1 conv to stride^2 * C, PixelShuffle."""

    def __init__(self, in_dim: int, stride: int, out_channels: int, image_size: int, hidden_dim: Width = 256):
        super().__init__()
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim must be >= 1, got {hidden_dim}")
        self.head = nn.Sequential(nn.Conv2d(in_dim, hidden_dim, kernel_size=1), nn.GELU(),
                                  *_to_pixels(hidden_dim, stride, out_channels))

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """features [B, in_dim, H/stride, W/stride] -> [B, out_channels, H, W]."""
        return self.head(features)


class UpsampleDecoder(nn.Module):
    """Conv + nearest-upsample (x2) stages back to full size, then a 3x3 conv to the image channels."""

    def __init__(self, in_dim: int, stride: int, out_channels: int, image_size: int, hidden_dim: Width = 64):
        super().__init__()
        stages = int(round(math.log2(stride))) if stride >= 1 else -1
        if stages < 0 or 2**stages != stride:
            raise ValueError(f"needs an encoder stride that is a power of two, got {stride}")
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim must be >= 1, got {hidden_dim}")
        layers: list[nn.Module] = []
        channels = in_dim
        for _ in range(stages):
            layers += [nn.Conv2d(channels, hidden_dim, kernel_size=3, padding=1), nn.ReLU(),
                       nn.Upsample(scale_factor=2, mode="nearest")]
            channels = hidden_dim
        layers.append(nn.Conv2d(channels, out_channels, kernel_size=3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.layers(features)


@hookimpl
def mimbench_register_decoders(register) -> None:
    register("linear", LinearDecoder)
    register("upsample", UpsampleDecoder)
    register("mlp", MLPDecoder)
