"""What the built-in maskers share: their random draws, the checks of their params, the patch
grid of an image, the k smallest of per-cell noise, and patch-grid masks as pixel masks."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch

from mimbench.plugin import Interval

#: A patch's side in pixels (a count that sizes masks and loops: declared, see mimbench.plugin).
PatchSize = Annotated[int, Interval(ge=1, le=1024)]
#: A count of patches.
PatchCount = Annotated[int, Interval(ge=1, le=2**20)]


def rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniforms in [0, 1) of ``shape`` on ``device``, from ``generator`` (None: torch's default)."""
    return torch.rand(shape, generator=generator, device=device)


def check_ratio(ratio: float) -> None:
    """ValueError unless 0 < ratio < 1."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")


def check_positive(name: str, value: int) -> None:
    """ValueError naming ``name`` unless value >= 1."""
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def patch_grid(h: int, w: int, patch_size: int, name: str = "patch_size") -> tuple[int, int]:
    """The (rows, cols) of the patch grid of an h x w image; ValueError if patch_size does not divide it."""
    if h % patch_size or w % patch_size:
        raise ValueError(f"image size {h}x{w} is not divisible by {name} {patch_size}")
    return h // patch_size, w // patch_size


def patch_count(ratio: float, grid_h: int, grid_w: int, patch_size: int) -> int:
    """round(ratio * L) of the L patches; ValueError if that hides none or all of them."""
    cells = grid_h * grid_w
    count = round(ratio * cells)
    if not 0 < count < cells:
        raise ValueError(f"ratio {ratio} hides {count} of the {cells} patches of a {grid_h * patch_size}x"
                         f"{grid_w * patch_size} image at patch_size {patch_size}: "
                         "it must hide some and leave some visible")
    return count


def smallest(noise: torch.Tensor, k: int) -> torch.Tensor:
    """bool [B, L], True at the k smallest values of each row of noise [B, L]: the first k of
    ``noise.argsort(dim=1)``, ties broken as that sort breaks them.

    On CPU a partition finds them ~10x faster than sorting, and gives the same set whenever each
    row's k-th and (k+1)-th smallest differ. A batch where some row ties there (float32 uniforms
    collide about once in 10^4 rows of 49) is sorted instead, so the masks are always argsort's.
    """
    if noise.device.type == "cpu" and 0 < k:
        values = noise.numpy()
        hidden = values <= np.partition(values, k - 1, axis=1)[:, k - 1:k]
        if (hidden.sum(axis=1) == k).all():
            return torch.from_numpy(hidden)
    hidden = torch.zeros(noise.shape, dtype=torch.bool, device=noise.device)
    return hidden.scatter_(1, noise.argsort(dim=1)[:, :k], True)


def to_pixels(cells: torch.Tensor, patch_size: int) -> torch.Tensor:
    """A patch-grid mask [B, h, w] as a pixel mask [B, h * patch_size, w * patch_size]."""
    return cells.repeat_interleave(patch_size, dim=1).repeat_interleave(patch_size, dim=2)
