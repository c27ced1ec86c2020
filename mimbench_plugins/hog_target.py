"""MaskFeat's target: histograms of oriented gradients (HOG) per cell, per channel.

MaskFeat (Wei et al., 2022) predicts, for each masked patch, the HOG of each colour channel:
Sobel gradients, unsigned orientations in 9 bins, magnitudes summed over 8x8-pixel cells of a
224-px image with a Gaussian window over each 16-px ViT patch, each cell's histogram
L2-normalised. At 28-32 px the same recipe at 1/8 the scale has 4-px cells and a 4-px window
(the default ViT's patch): 7x7 cells at 28 px, 8x8 at 32.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from mimbench.plugin import Interval


#: Gradient kernels along the columns (x); the row kernel is the transpose. Central differences are
#: scikit-image's ``hog``; Sobel is MaskFeat's.
GRADIENT_KERNELS = {"sobel": [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
                    "central": [[0.0, 0.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]}


def gaussian_kernel(size: int) -> torch.Tensor:
    """MaskFeat's window: exp(-n^2 / 2) over n = (i - mean) / (size / 2), outer product, summing to 1: [size, size]."""
    n = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2) / (size / 2)
    w = torch.exp(-0.5 * n**2)
    window = w[:, None] * w[None, :]
    return window / window.sum()


class HOGTarget(nn.Module):
    """MaskFeat's HOG: orientation histograms over cells, Gaussian-weighted, L2-normalised per cell.

    Per channel: gradients g_x, g_y (``gradient`` kernels, reflected borders), magnitude
    sqrt(g_x^2 + g_y^2) and unsigned orientation atan2(g_y, g_x) mod pi, in ``bins`` equal bins of
    [0, pi); each pixel adds its magnitude (times a Gaussian window tiled every ``gaussian_window``
    px; 0: no window) to its bin in its ``cell_size`` cell; each cell's histogram is divided by its
    L2 norm (zero where there is no gradient). Output [B, C * bins, H / cell_size, W / cell_size],
    channel c * bins + bin.
    """

    def __init__(self, in_channels: int, image_size: int, cell_size: Annotated[int, Interval(ge=1, le=1024)] = 4,
                 bins: Annotated[int, Interval(ge=2, le=360)] = 9, gaussian_window: Annotated[int, Interval(ge=0, le=1024)] = 4,
                 gradient: Literal["sobel", "central"] = "sobel"):
        super().__init__()
        if cell_size < 1 or image_size % cell_size:
            raise ValueError(f"cell_size must be >= 1 and divide the image size {image_size}, got {cell_size}")
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        if gaussian_window < 0 or (gaussian_window and (image_size % gaussian_window or gaussian_window % cell_size)):
            raise ValueError(f"gaussian_window must be 0 (none) or a multiple of cell_size {cell_size} that divides "
                             f"the image size {image_size}, got {gaussian_window}")
        self.cell_size, self.bins, self.in_channels = cell_size, bins, in_channels
        self.channels, self.stride = in_channels * bins, cell_size
        kernel = torch.tensor(GRADIENT_KERNELS[gradient])
        kernels = torch.stack([kernel, kernel.T])[:, None].repeat(in_channels, 1, 1, 1)  # [2C, 1, 3, 3]: x, y per channel
        self.register_buffer("kernels", kernels, persistent=False)
        weight = torch.ones(1, 1) if not gaussian_window else gaussian_kernel(gaussian_window)
        tiles = image_size // weight.shape[0]
        self.register_buffer("weight", weight.repeat(tiles, tiles).float(), persistent=False)  # [H, W]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] -> HOG [B, C * bins, H / cell_size, W / cell_size]."""
        b, c, h, w = images.shape
        padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
        grads = F.conv2d(padded, self.kernels.to(images.dtype), groups=c).view(b, c, 2, h, w)
        gx, gy = grads[:, :, 0], grads[:, :, 1]
        magnitude = torch.sqrt(gx * gx + gy * gy) * self.weight.to(images.dtype)  # [B, C, H, W]
        angle = torch.remainder(torch.atan2(gy, gx), math.pi)  # [0, pi)
        index = (angle * (self.bins / math.pi)).floor().long().clamp_(0, self.bins - 1)
        hist = images.new_zeros(b, c, self.bins, h, w).scatter_(2, index.unsqueeze(2), magnitude.unsqueeze(2))
        s = self.cell_size
        cells = hist.view(b, c, self.bins, h // s, s, w // s, s).sum(dim=(4, 6))  # [B, C, bins, h/s, w/s]
        return F.normalize(cells, dim=2).reshape(b, c * self.bins, h // s, w // s)
