"""The maskers that add random rectangles until a budget is hidden: BEiT-style regions of pixels
(``region``) and BEiT's blocks of whole patches (``block``). Both map images [B, C, H, W] to a
bool mask [B, H, W] (True = hidden); on CPU with numba the rectangles are added by the compiled
loops of :mod:`rect_kernels`, elsewhere by batched torch rounds that make the same masks."""

from __future__ import annotations

import functools
import importlib.util
import math
from typing import Annotated

import numpy as np
import torch

from mimbench.plugin import Interval

from mimbench_plugins.mask_utils import PatchCount, PatchSize, check_positive, check_ratio, patch_count, patch_grid, rand, to_pixels


@functools.cache
def _numba_installed() -> bool:
    return importlib.util.find_spec("numba") is not None


def _compiled_rounds(device: torch.device) -> bool:
    """Whether to add rectangles with the compiled loops of rect_kernels (CPU, with numba, a dependency)
    rather than with batched torch rounds (other devices; CPU without numba, ~10x slower)."""
    return device.type == "cpu" and _numba_installed()


class _Rects:
    """Count and paint T candidate rectangles per image on float 0/1 masks hidden [N, H, W]: the
    engine shared by the region and block maskers.

    Float 0/1 masks make counting and painting rectangles small batched matmuls, much faster on
    CPU than broadcast boolean ops over [N, T, H, W] or summed-area tables (cumsum).
    """

    def __init__(self, n: int, h: int, w: int, device: torch.device | str):
        self.rows = torch.arange(h, device=device, dtype=torch.float32).view(1, 1, h)
        self.cols = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, w)
        self.first = torch.arange(n, device=device)

    def propose(self, hidden: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: torch.Tensor,
                width: torch.Tensor) -> torch.Tensor:
        """Candidates with corners and sides float [N, T]: returns the cells each would newly hide, [N, T]."""
        self.corners = (top, left, height, width)
        self.in_rows = ((self.rows >= top.unsqueeze(2)) & (self.rows < (top + height).unsqueeze(2))).float()
        self.in_cols = ((self.cols >= left.unsqueeze(2)) & (self.cols < (left + width).unsqueeze(2))).float()
        already = (torch.bmm(self.in_rows, hidden) * self.in_cols).sum(dim=2)  # hidden cells inside, [N, T]
        self.added = height * width - already
        return self.added

    def add_first(self, hidden: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Paint each image's first valid (bool [N, T]) candidate: the new mask [N, H, W] and the cells
        it added [N] (0 where no candidate was valid). Trying them one by one would keep the same one."""
        first = self.first
        self.pick = pick = valid.int().argmax(dim=1)  # the first valid try (0 if none)
        kept = valid[first, pick].float()
        rows = (self.in_rows[first, pick] * kept.unsqueeze(1)).unsqueeze(2)
        rect = torch.bmm(rows, self.in_cols[first, pick].unsqueeze(1))
        return torch.maximum(hidden, rect), self.added[first, pick] * kept

    def chosen(self) -> tuple[torch.Tensor, ...]:
        """top, left, height, width [N] of the candidates add_first picked (meaningless where none was valid)."""
        return tuple(t[self.first, self.pick].long() for t in self.corners)


class RegionMasker:
    """BEiT-style block-wise masking: random rectangles added until `ratio` of the pixels are hidden."""

    def __init__(self, ratio: float = 0.6, min_area: float = 0.02, aspect: float = 0.3,
                 max_rounds: Annotated[int, Interval(ge=1, le=100_000)] = 256):
        """Args:
            ratio: fraction of pixels to hide (reached exactly unless max_rounds runs out).
            min_area: smallest rectangle, as a fraction of the image area (BEiT: 4 of 196 patches).
            aspect: aspect ratios are log-uniform in [aspect, 1 / aspect].
            max_rounds: rectangles tried per image at most.
        """
        check_ratio(ratio)
        if not 0.0 < min_area <= ratio:
            raise ValueError(f"min_area must be in (0, ratio={ratio}], got {min_area}")
        if not 0.0 < aspect <= 1.0:
            raise ValueError(f"aspect must be in (0, 1], got {aspect}")
        if max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
        self.ratio, self.min_area, self.aspect, self.max_rounds = ratio, min_area, aspect, max_rounds

    ROUNDS_PER_SYNC = 8
    MAX_TRIES = 16

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, _, h, w = images.shape
        device = images.device
        target = float(round(self.ratio * h * w))
        if _compiled_rounds(device):
            return self._compiled_mask(b, h, w, target, generator)
        mask = torch.zeros(b, h, w, dtype=torch.bool, device=device)
        count = torch.zeros(b, device=device)
        active = torch.arange(b, device=device)  # images still short of the target
        for rounds, tries in self._schedule(b, lambda: active.numel()):
            sub_mask, sub_count = self._add_blocks(mask[active], count[active], target, rounds, tries, generator)
            mask[active], count[active] = sub_mask, sub_count
            active = active[sub_count < target]  # the only host sync: once per ROUNDS_PER_SYNC rounds
        return mask

    def _schedule(self, batch: int, active_count):
        """(rounds, tries) of each draw until max_rounds or no image is short (active_count() == 0).

        As fewer images remain, try more candidates per image per round: the same work per round.
        """
        for first_round in range(0, self.max_rounds, self.ROUNDS_PER_SYNC):
            active = active_count()
            if active == 0:
                return
            yield min(self.ROUNDS_PER_SYNC, self.max_rounds - first_round), max(1, min(self.MAX_TRIES, batch // active))

    def _compiled_mask(self, b: int, h: int, w: int, target: float, generator: torch.Generator | None) -> torch.Tensor:
        """The mask bool [B, H, W] of __call__ on CPU, with the compiled rounds: the same uniforms, drawn
        once per ROUNDS_PER_SYNC rounds, and the same masks."""
        from . import rect_kernels

        bits = np.zeros((b, h, rect_kernels.words_per_row(w)), np.uint64)
        count = np.zeros(b, np.float32)
        active = np.arange(b)
        min_area = np.float32(max(1.0, self.min_area * h * w))
        log_aspect = np.float32(math.log(self.aspect))  # float32 scalars: numpy computes as torch does
        for rounds, tries in self._schedule(b, lambda: active.size):
            u = rand((rounds, 4, active.size, tries), generator, torch.device("cpu")).numpy()
            aspect = rect_kernels.torch_exp(log_aspect * (np.float32(1) - np.float32(2) * u[:, 1]))
            active = rect_kernels.add_regions(bits, w, count, active, np.float32(target), min_area, u, aspect)
        return torch.from_numpy(rect_kernels.unpack(bits, w)).view(torch.bool)

    def _add_blocks(self, mask: torch.Tensor, count: torch.Tensor, target: float, rounds: int, tries: int,
                    generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Add up to ``rounds`` rectangles to each of mask [N, H, W], whose images hide count [N] pixels.

        Each round draws ``tries`` candidate rectangles per image, as BEiT draws them: area
        up to what is still missing (at least min_area), log-uniform aspect ratio, sides
        rounded so the rectangle never covers more than that area. The first candidate that
        adds pixels without passing the target is kept: the same as trying them one by one.
        """
        n, h, w = mask.shape
        device = mask.device
        min_area = max(1.0, self.min_area * h * w)
        log_aspect = math.log(self.aspect)
        hidden = mask.float()
        rects = _Rects(n, h, w, device)
        for _ in range(rounds):
            remaining = (target - count).unsqueeze(1)  # [N, 1]
            low = remaining.clamp(max=min_area)
            u = rand((4, n, tries), generator, device)
            area = (low + (remaining - low) * u[0]).clamp_min(1.0)  # [N, T]
            aspect = torch.exp(log_aspect * (1 - 2 * u[1]))
            rect_h = torch.minimum((area * aspect).sqrt().round(), area.floor()).clamp(1, h)
            rect_w = (area / rect_h).floor().clamp(1, w)
            top = (u[2] * (h - rect_h + 1)).floor()
            left = (u[3] * (w - rect_w + 1)).floor()
            added = rects.propose(hidden, top, left, rect_h, rect_w)
            hidden, added = rects.add_first(hidden, (added > 0) & (added <= remaining))
            count = count + added
        return hidden > 0.5, count


class BlockMasker:
    """BEiT block-wise masking: rectangles of whole patches added until a patch budget is hidden."""

    ATTEMPTS = 10  # candidate blocks per block, as BEiT
    ROUNDS_PER_SYNC = 4

    def __init__(self, patch_size: PatchSize = 4, ratio: float = 0.4, num_masking_patches: PatchCount | None = None,
                 min_num_patches: PatchCount = 4, max_num_patches: PatchCount | None = None, min_aspect: float = 0.3,
                 max_aspect: float | None = None):
        """Args:
            patch_size: pixels per side of a patch; blocks are made of whole patches.
            ratio: budget round(ratio * L) of the L patches, unless num_masking_patches is given.
            num_masking_patches: the patch budget (BEiT: 75 of 196).
            min_num_patches: a block's area is drawn uniformly in [min_num_patches, max_mask_patches],
                max_mask_patches = min(patches still missing, max_num_patches).
            max_num_patches: largest block area (default: the budget).
            min_aspect, max_aspect: aspect ratios h/w are log-uniform in
                [min_aspect, max_aspect or 1 / min_aspect].

        Each block is kept only if it fits strictly inside the grid (h < rows, w < cols, as BEiT)
        and adds 0 < new <= max_mask_patches patches; up to 10 candidates per block. An image stops
        when its budget is reached or 10 candidates in a row failed. Guaranteed: every image hides
        at most the budget, as the union of its kept blocks, and exactly the budget unless 10
        candidates in a row failed. That shortfall is BEiT's own (the tests compare with a port of
        its code): 8x8 grid, 26 patches: ~4% of images 1-2 patches short; 14x14, 75, min 16:
        ~1/3 short, 0.5 patches on average; 7x7, 39 (ratio 0.8): ~13% short, and about 1 image in
        6,500 with nothing hidden at all (the first block failed 10 times: too large to fit).
        """
        check_positive("patch_size", patch_size)
        check_ratio(ratio)
        if num_masking_patches is not None:
            check_positive("num_masking_patches", num_masking_patches)
        check_positive("min_num_patches", min_num_patches)
        if max_num_patches is not None and max_num_patches < min_num_patches:
            raise ValueError(f"max_num_patches must be >= min_num_patches={min_num_patches}, got {max_num_patches}")
        if not min_aspect > 0.0:
            raise ValueError(f"min_aspect must be > 0, got {min_aspect}")
        high = 1.0 / min_aspect if max_aspect is None else max_aspect
        if not high >= min_aspect:
            raise ValueError(f"max_aspect must be >= min_aspect={min_aspect}, got {high}"
                             + (" (1 / min_aspect)" if max_aspect is None else ""))
        self.patch_size, self.ratio, self.num_masking_patches = patch_size, ratio, num_masking_patches
        self.min_num_patches, self.max_num_patches = min_num_patches, max_num_patches
        self.min_aspect, self.max_aspect = min_aspect, max_aspect
        self.log_aspect = (math.log(min_aspect), math.log(high))

    def budget(self, grid_h: int, grid_w: int) -> int:
        """The number of patches to hide on a grid_h x grid_w grid."""
        if self.num_masking_patches is None:
            return patch_count(self.ratio, grid_h, grid_w, self.patch_size)
        if self.num_masking_patches >= grid_h * grid_w:
            raise ValueError(f"num_masking_patches {self.num_masking_patches} must be below the {grid_h * grid_w} "
                             f"patches of a {grid_h * self.patch_size}x{grid_w * self.patch_size} image "
                             f"at patch_size {self.patch_size}")
        return self.num_masking_patches

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, _, h, w = images.shape
        grid_h, grid_w = patch_grid(h, w, self.patch_size)
        if _compiled_rounds(images.device):
            return self._compiled_patch_mask(b, grid_h, grid_w, generator, pixels_per_patch=self.patch_size)[0]
        cells, _ = self.patch_mask(b, grid_h, grid_w, generator, images.device)
        return to_pixels(cells, self.patch_size)

    def patch_mask(self, batch: int, grid_h: int, grid_w: int, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu", trace: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The mask on the patch grid, bool [B, grid_h, grid_w], and the patches hidden per image [B].

        With ``trace`` a list, appends per round (image indices [N], top, left, h, w, added, limit [N])
        of the blocks kept (added == 0: that image stopped), for tests; traced masks use the torch rounds.
        """
        if trace is None and _compiled_rounds(torch.device(device)):
            return self._compiled_patch_mask(batch, grid_h, grid_w, generator)
        budget = float(self.budget(grid_h, grid_w))
        max_block = float(self.max_num_patches or budget)
        mask = torch.zeros(batch, grid_h, grid_w, device=device)
        count = torch.zeros(batch, device=device)
        active = torch.arange(batch, device=device)  # images still adding blocks
        while active.numel():
            sub_mask, sub_count, alive = mask[active], count[active], torch.ones_like(active, dtype=torch.bool)
            rects = _Rects(active.numel(), grid_h, grid_w, device)
            for _ in range(self.ROUNDS_PER_SYNC):
                sub_mask, added, limit = self._add_block(rects, sub_mask, sub_count, alive, budget, max_block,
                                                         generator)
                sub_count = sub_count + added
                alive = alive & (added > 0) & (sub_count < budget)
                if trace is not None:
                    trace.append((active, *rects.chosen(), added, limit))
            mask[active], count[active] = sub_mask, sub_count
            active = active[alive]  # the only host sync: once per ROUNDS_PER_SYNC rounds
        return mask > 0.5, count.long()

    def _compiled_patch_mask(self, batch: int, grid_h: int, grid_w: int, generator: torch.Generator | None,
                             pixels_per_patch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """patch_mask on CPU with the compiled rounds (the same uniforms, drawn once per ROUNDS_PER_SYNC
        rounds, and the same masks); with pixels_per_patch p, the mask [B, grid_h * p, grid_w * p]."""
        from . import rect_kernels

        budget = np.float32(self.budget(grid_h, grid_w))
        max_block = np.float32(self.max_num_patches or budget)
        bits = np.zeros((batch, grid_h, rect_kernels.words_per_row(grid_w)), np.uint64)
        count = np.zeros(batch, np.float32)
        active = np.arange(batch)
        low, high = self.log_aspect
        low, spread = np.float32(low), np.float32(high - low)  # float32 scalars: numpy computes as torch does
        while active.size:
            u = rand((self.ROUNDS_PER_SYNC, 4, active.size, self.ATTEMPTS), generator, torch.device("cpu")).numpy()
            aspect = rect_kernels.torch_exp(low + spread * u[:, 1])
            active = rect_kernels.add_blocks(bits, grid_w, count, active, budget, max_block,
                                             np.float32(self.min_num_patches), u, aspect)
        if pixels_per_patch > 1:
            bits = rect_kernels.scale_up(bits, grid_w, pixels_per_patch)
        mask = rect_kernels.unpack(bits, grid_w * pixels_per_patch)
        return torch.from_numpy(mask).view(torch.bool), torch.from_numpy(count).long()

    def _add_block(self, rects: _Rects, mask: torch.Tensor, count: torch.Tensor, alive: torch.Tensor, budget: float,
                   max_block: float, generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
        """One BEiT block for each alive image of float mask [N, h, w]: 10 candidates, the first valid kept."""
        n, grid_h, grid_w = mask.shape
        limit = (budget - count).clamp(max=max_block).unsqueeze(1)  # max_mask_patches, [N, 1]
        u = rand((4, n, self.ATTEMPTS), generator, mask.device)
        area = self.min_num_patches + (limit - self.min_num_patches) * u[0]  # uniform, either order (as random.uniform)
        aspect = torch.exp(self.log_aspect[0] + (self.log_aspect[1] - self.log_aspect[0]) * u[1])
        rect_h, rect_w = (area * aspect).sqrt().round(), (area / aspect).sqrt().round()
        fits = (rect_h < grid_h) & (rect_w < grid_w) & alive.unsqueeze(1)
        rect_h, rect_w = rect_h.clamp(max=grid_h), rect_w.clamp(max=grid_w)  # in range for indexing
        top = (u[2] * (grid_h - rect_h + 1)).floor().clamp(max=grid_h - rect_h)
        left = (u[3] * (grid_w - rect_w + 1)).floor().clamp(max=grid_w - rect_w)
        added = rects.propose(mask, top, left, rect_h, rect_w)
        mask, added = rects.add_first(mask, fits & (added > 0) & (added <= limit))
        return mask, added, limit.squeeze(1)
