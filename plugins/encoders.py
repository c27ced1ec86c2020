"""Built-in encoders: images [B, C, H, W] -> features [B, out_dim, H / stride, W / stride]."""

from __future__ import annotations

import torch
from torch import nn

from mimbench import hookimpl


class ConvEncoder(nn.Module):
    """Small conv net: two stages of 3x3 conv + ReLU + 2x2 max-pool (stride 4)."""

    stride = 4

    def __init__(self, in_channels: int, image_size: int, hidden_dim: int = 64):
        super().__init__()
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim must be >= 1, got {hidden_dim}")
        if image_size % self.stride:
            raise ValueError(f"image_size must be divisible by {self.stride}, got {image_size}")
        self.out_dim = hidden_dim
        self.stages = nn.Sequential(
            nn.Conv2d(in_channels, hidden_dim, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """images [B, C, H, W] (hidden pixels already zeroed by the core) -> [B, hidden_dim, H/4, W/4]."""
        return self.stages(images)

    def blocks(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The feature grid after each stage: [B, hidden_dim, H/2, W/2], [B, hidden_dim, H/4, W/4]."""
        return [self.stages[:3](images), self.stages(images)]


@hookimpl
def mimbench_register_encoders(register) -> None:
    register("cnn", ConvEncoder)
