"""Built-in mask strategies. Every masker maps images [B, C, H, W] to a bool mask
[B, H, W] (True = hidden), made on the images' device for the whole batch at once."""

from __future__ import annotations

import math

import torch

from mimbench import hookimpl


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device)


def _check_ratio(ratio: float) -> None:
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")


class PixelMasker:
    """Hide each pixel independently with probability `ratio`."""

    def __init__(self, ratio: float = 0.6):
        _check_ratio(ratio)
        self.ratio = ratio

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, _, h, w = images.shape
        return _rand((b, h, w), generator, images.device) < self.ratio


class PatchMasker:
    """SimMIM random patch masking: hide ceil(cells * ratio) of the mask_patch_size grid cells per image."""

    def __init__(self, ratio: float = 0.6, mask_patch_size: int = 4):
        _check_ratio(ratio)
        if mask_patch_size < 1:
            raise ValueError(f"mask_patch_size must be >= 1, got {mask_patch_size}")
        self.ratio = ratio
        self.mask_patch_size = mask_patch_size

    def hidden_cells(self, cells: int) -> int:
        # The epsilon keeps float noise (e.g. 10 * 0.3 = 3.0000000000000004) from adding a cell.
        return min(cells, math.ceil(cells * self.ratio - 1e-9))

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, _, h, w = images.shape
        p = self.mask_patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not divisible by mask_patch_size {p}")
        grid_h, grid_w = h // p, w // p
        cells = grid_h * grid_w
        # A random permutation per image: the cells ranked below k are hidden.
        ranks = _rand((b, cells), generator, images.device).argsort(dim=1).argsort(dim=1)
        hidden = (ranks < self.hidden_cells(cells)).view(b, grid_h, grid_w)
        return hidden.repeat_interleave(p, dim=1).repeat_interleave(p, dim=2)


class RegionMasker:
    """BEiT-style block-wise masking: random rectangles added until `ratio` of the pixels are hidden."""

    def __init__(self, ratio: float = 0.6, min_area: float = 0.02, aspect: float = 0.3, max_rounds: int = 256):
        """Args:
            ratio: fraction of pixels to hide (reached exactly unless max_rounds runs out).
            min_area: smallest rectangle, as a fraction of the image area (BEiT: 4 of 196 patches).
            aspect: aspect ratios are log-uniform in [aspect, 1 / aspect].
            max_rounds: rectangles tried per image at most.
        """
        _check_ratio(ratio)
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
        mask = torch.zeros(b, h, w, dtype=torch.bool, device=device)
        count = torch.zeros(b, device=device)
        active = torch.arange(b, device=device)  # images still short of the target
        for first_round in range(0, self.max_rounds, self.ROUNDS_PER_SYNC):
            rounds = min(self.ROUNDS_PER_SYNC, self.max_rounds - first_round)
            # As fewer images remain, try more candidates per image per round: same work per round.
            tries = max(1, min(self.MAX_TRIES, b // max(1, active.numel())))
            sub_mask, sub_count = self._add_blocks(mask[active], count[active], target, rounds, tries, generator)
            mask[active], count[active] = sub_mask, sub_count
            active = active[sub_count < target]
            if active.numel() == 0:  # the only host sync: once per ROUNDS_PER_SYNC rounds
                break
        return mask

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
        rows = torch.arange(h, device=device, dtype=torch.float32).view(1, 1, h)
        cols = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, w)
        first = torch.arange(n, device=device)
        # Float 0/1 masks: counting and painting rectangles become small batched matmuls,
        # much faster than broadcast boolean ops over [N, T, H, W].
        hidden = mask.float()
        for _ in range(rounds):
            remaining = (target - count).unsqueeze(1)  # [N, 1]
            low = remaining.clamp(max=min_area)
            u = _rand((4, n, tries), generator, device)
            area = (low + (remaining - low) * u[0]).clamp_min(1.0)  # [N, T]
            aspect = torch.exp(log_aspect * (1 - 2 * u[1]))
            rect_h = torch.minimum((area * aspect).sqrt().round(), area.floor()).clamp(1, h)
            rect_w = (area / rect_h).floor().clamp(1, w)
            top = (u[2] * (h - rect_h + 1)).floor().unsqueeze(2)
            left = (u[3] * (w - rect_w + 1)).floor().unsqueeze(2)
            in_rows = ((rows >= top) & (rows < top + rect_h.unsqueeze(2))).float()  # [N, T, H]
            in_cols = ((cols >= left) & (cols < left + rect_w.unsqueeze(2))).float()  # [N, T, W]
            already = (torch.bmm(in_rows, hidden) * in_cols).sum(dim=2)  # hidden pixels inside, [N, T]
            added = rect_h * rect_w - already
            valid = (added > 0) & (added <= remaining)
            pick = valid.int().argmax(dim=1)  # the first valid try (0 if none)
            kept = valid[first, pick].float()
            rect = torch.bmm((in_rows[first, pick] * kept.unsqueeze(1)).unsqueeze(2), in_cols[first, pick].unsqueeze(1))
            hidden = torch.maximum(hidden, rect)
            count = count + added[first, pick] * kept
        mask = hidden > 0.5
        return mask, count

@hookimpl
def mimbench_register_maskers(register) -> None:
    register("pixel", PixelMasker)
    register("patch", PatchMasker)
    register("region", RegionMasker)
