"""The maskers that hide whole patches of a grid: SimMIM's random patches (``patch``), MAE's
random tokens (``random_token``) and MAE's regular grid (``grid``). Each maps images
[B, C, H, W] to a bool mask [B, H, W] (True = hidden)."""

from __future__ import annotations

import math
from typing import Annotated

import torch

from mimbench.plugin import Interval

from mimbench_plugins.mask_utils import PatchSize, check_positive, check_ratio, patch_count, patch_grid, rand, smallest, to_pixels


class PatchMasker:
    """SimMIM random patch masking: hide ceil(cells * ratio) of the mask_patch_size grid cells per image."""

    def __init__(self, ratio: float = 0.6, mask_patch_size: PatchSize = 4):
        check_ratio(ratio)
        check_positive("mask_patch_size", mask_patch_size)
        self.ratio = ratio
        self.mask_patch_size = mask_patch_size

    def hidden_cells(self, cells: int) -> int:
        # The epsilon keeps float noise (e.g. 10 * 0.3 = 3.0000000000000004) from adding a cell.
        return min(cells, math.ceil(cells * self.ratio - 1e-9))

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, _, h, w = images.shape
        p = self.mask_patch_size
        grid_h, grid_w = patch_grid(h, w, p, "mask_patch_size")
        cells = grid_h * grid_w
        # A random permutation per image: the cells ranked below k are hidden.
        hidden = smallest(rand((b, cells), generator, images.device), self.hidden_cells(cells))
        return to_pixels(hidden.view(b, grid_h, grid_w), p)


class RandomTokenMasker:
    """MAE random masking: hide round(L * ratio) of the L patches of each image, chosen uniformly."""

    def __init__(self, ratio: float = 0.75, patch_size: PatchSize = 4):
        check_ratio(ratio)
        check_positive("patch_size", patch_size)
        self.ratio, self.patch_size = ratio, patch_size

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, _, h, w = images.shape
        grid_h, grid_w = patch_grid(h, w, self.patch_size)
        count = patch_count(self.ratio, grid_h, grid_w, self.patch_size)
        # As MAE: per-image noise, argsort; here the patches with the smallest noise are hidden.
        hidden = smallest(rand((b, grid_h * grid_w), generator, images.device), count)
        return to_pixels(hidden.view(b, grid_h, grid_w), self.patch_size)


class GridMasker:
    """MAE's regular grid: keep one patch in every keep_every x keep_every block (its top-left), hide the rest."""

    deterministic = True  # the same mask for every image and seed

    def __init__(self, patch_size: PatchSize = 4, keep_every: Annotated[int, Interval(ge=2, le=1024)] = 2):
        check_positive("patch_size", patch_size)
        if keep_every < 2:
            raise ValueError(f"keep_every must be >= 2, got {keep_every}")
        self.patch_size, self.keep_every = patch_size, keep_every

    @property
    def ratio(self) -> float:
        """1 - 1 / keep_every^2: exact when keep_every divides both grid sides."""
        return 1.0 - 1.0 / self.keep_every**2

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, _, h, w = images.shape
        grid_h, grid_w = patch_grid(h, w, self.patch_size)
        if grid_h == grid_w == 1:
            raise ValueError(f"a {h}x{w} image is a single patch at patch_size {self.patch_size}: nothing to hide")
        rows = torch.arange(grid_h, device=images.device) % self.keep_every == 0
        cols = torch.arange(grid_w, device=images.device) % self.keep_every == 0
        hidden = ~(rows.unsqueeze(1) & cols.unsqueeze(0))
        return to_pixels(hidden.unsqueeze(0), self.patch_size).expand(b, h, w).contiguous()
