"""Built-in mask strategies. Every masker maps images [B, C, H, W] to a bool mask
[B, H, W] (True = hidden), made on the images' device for the whole batch at once.

The maskers live by family: :mod:`.pixel_maskers` (``pixel``, ``square``), :mod:`.patch_maskers`
(``patch``, ``random_token``, ``grid``) and :mod:`.rect_maskers` (``region``, ``block``), with what
they share in :mod:`.mask_utils`; this module registers them all.
"""

from __future__ import annotations

from mimbench.plugin import hookimpl

from mimbench_plugins.patch_maskers import GridMasker, PatchMasker, RandomTokenMasker
from mimbench_plugins.pixel_maskers import PixelMasker, SquareMasker
from mimbench_plugins.rect_maskers import BlockMasker, RegionMasker


@hookimpl
def mimbench_register_maskers(register) -> None:
    register("pixel", PixelMasker)
    register("patch", PatchMasker)
    register("region", RegionMasker)
    register("random_token", RandomTokenMasker)
    register("block", BlockMasker)
    register("square", SquareMasker)
    register("grid", GridMasker)
