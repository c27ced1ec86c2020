"""The maskers that hide pixels regardless of any patch grid: each pixel on its own (``pixel``) and
SimMIM's one square per image (``square``). Each maps images [B, C, H, W] to a bool mask
[B, H, W] (True = hidden)."""

from __future__ import annotations

import math

import torch

from mimbench_plugins.mask_utils import check_ratio, rand


class PixelMasker:
    """Hide each pixel independently with probability `ratio`."""

    def __init__(self, ratio: float = 0.6):
        check_ratio(ratio)
        self.ratio = ratio

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, _, h, w = images.shape
        return rand((b, h, w), generator, images.device) < self.ratio


class SquareMasker:
    """SimMIM's square baseline: one square of side round(sqrt(ratio) * min(H, W)) pixels per image, anywhere."""

    def __init__(self, ratio: float = 0.3):
        check_ratio(ratio)
        self.ratio = ratio

    def side(self, h: int, w: int) -> int:
        side = round(math.sqrt(self.ratio) * min(h, w))
        if side < 1 or side == h == w:
            raise ValueError(f"ratio {self.ratio} gives a square of side {side} in a {h}x{w} image: "
                             "it must hide some pixels and leave some visible")
        return side

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, _, h, w = images.shape
        side = self.side(h, w)
        device = images.device
        corner = rand((2, b, 1), generator, device)
        top = (corner[0] * (h - side + 1)).floor().clamp(max=h - side)  # uniform over every position inside
        left = (corner[1] * (w - side + 1)).floor().clamp(max=w - side)
        rows = torch.arange(h, device=device)
        cols = torch.arange(w, device=device)
        in_rows = (rows >= top) & (rows < top + side)  # [B, H]
        in_cols = (cols >= left) & (cols < left + side)  # [B, W]
        return in_rows.unsqueeze(2) & in_cols.unsqueeze(1)
