"""The built-in maskers' algorithms, pinned down beyond the conformance checks."""

import math

import pytest
import torch

from mimbench_plugins.maskers import BlockMasker, PatchMasker, PixelMasker, RegionMasker


def images(batch=32, size=32, channels=3):
    return torch.zeros(batch, channels, size, size)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("ratio,patch,size", [(0.6, 4, 32), (0.5, 8, 32), (0.75, 4, 28), (0.3, 2, 16), (0.6, 7, 28)])
def test_patch_hides_exactly_ceil_cells_times_ratio_whole_cells(ratio, patch, size):
    mask = PatchMasker(ratio=ratio, mask_patch_size=patch)(images(size=size), gen())
    cells = (size // patch) ** 2
    expected = math.ceil(round(cells * ratio, 9))
    grid = mask.view(mask.shape[0], size // patch, patch, size // patch, patch)
    cell_min = grid.amin(dim=(2, 4))
    cell_max = grid.amax(dim=(2, 4))
    assert torch.equal(cell_min, cell_max), "a cell is partly hidden"
    assert (cell_max.flatten(1).sum(1) == expected).all()
    # different images get different cells
    assert len({tuple(m.flatten().tolist()) for m in cell_max}) > 1


def test_patch_needs_a_dividing_grid():
    with pytest.raises(ValueError, match="not divisible by mask_patch_size 8"):
        PatchMasker(mask_patch_size=8)(images(size=28))


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_ratio_out_of_range_is_refused(ratio):
    for masker in (PixelMasker, PatchMasker, RegionMasker):
        with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\)"):
            masker(ratio=ratio)


def test_pixel_mask_is_iid_at_the_ratio():
    mask = PixelMasker(ratio=0.3)(images(batch=64, size=64), gen())
    assert abs(mask.float().mean().item() - 0.3) < 0.01
    # independence: neighbours are hidden together about ratio^2 of the time
    both = (mask[:, :, 1:] & mask[:, :, :-1]).float().mean().item()
    assert abs(both - 0.09) < 0.01


@pytest.mark.parametrize("ratio", [0.4, 0.6, 0.75])
def test_region_reaches_its_pixel_budget_exactly(ratio):
    mask = RegionMasker(ratio=ratio)(images(batch=64, size=32), gen())
    counts = mask.flatten(1).sum(1)
    assert (counts == round(ratio * 32 * 32)).all()


def test_region_blocks_are_rectangles_with_bounded_aspect():
    # min_area == ratio and one round: a single block of the whole budget's area, kept when
    # rounding its sides does not overshoot the budget (as in BEiT), so each mask is one rectangle.
    masker = RegionMasker(ratio=0.2, min_area=0.2, max_rounds=1)
    mask = masker(images(batch=512, size=32), gen())
    mask = mask[mask.flatten(1).any(1)]
    assert len(mask) > 100
    for m in mask:
        rows = m.any(1).nonzero().flatten()
        cols = m.any(0).nonzero().flatten()
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert m[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all(), "not a filled rectangle"
        assert m.sum() == h * w <= round(0.2 * 32 * 32)
        assert 0.25 <= (h / w).item() <= 4.0  # log-uniform in [0.3, 1/0.3], plus rounding
    heights = mask.any(2).sum(1).float()
    widths = mask.any(1).sum(1).float()
    log_aspect = (heights / widths).log()
    assert log_aspect.min() < -0.6 and log_aspect.max() > 0.6, "aspect ratios do not spread"
    assert abs(log_aspect.mean().item()) < 0.15, "aspect ratios are not symmetric in log space"


def test_region_masks_are_blocky_not_scattered():
    region = RegionMasker(ratio=0.6)(images(batch=32, size=32), gen())
    pixel = PixelMasker(ratio=0.6)(images(batch=32, size=32), gen())

    def same_as_right_neighbour(m):
        return (m[:, :, 1:] == m[:, :, :-1]).float().mean().item()

    assert same_as_right_neighbour(region) > 0.85
    assert same_as_right_neighbour(pixel) < 0.6


@pytest.mark.parametrize("masker", [PixelMasker(), PatchMasker(), RegionMasker()], ids=["pixel", "patch", "region"])
def test_masks_are_reproducible_and_differ_per_image(masker):
    a = masker(images(), gen(3))
    b = masker(images(), gen(3))
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])


@pytest.mark.parametrize("masker,size,batches", [
    (RegionMasker(), (28, 28), (1, 5, 256)),  # the quick suite's masker
    (RegionMasker(ratio=0.3, min_area=0.05, aspect=0.5), (32, 48), (64,)),
    (RegionMasker(ratio=0.8, aspect=0.1, max_rounds=20), (16, 16), (64,)),  # stops short: max_rounds runs out
    (RegionMasker(ratio=0.5), (24, 64), (16,)),  # rows of exactly one 64-bit word
    (RegionMasker(ratio=0.5), (20, 130), (16,)),  # rows spanning three words
    (BlockMasker(), (28, 28), (1, 5, 256)),
    (BlockMasker(patch_size=16, num_masking_patches=75, min_num_patches=16), (224, 224), (64,)),  # BEiT's setting
    (BlockMasker(patch_size=4, ratio=0.8), (28, 28), (64,)),  # often ends short: blocks too large to fit
    (BlockMasker(patch_size=1, ratio=0.5, min_aspect=0.05), (70, 66), (8,)),  # tiny aspects, 2-word rows
], ids=["region-quick", "region-wide", "region-short", "region-64", "region-130",
        "block-quick", "block-beit", "block-0.8", "block-2words"])
def test_compiled_rounds_make_the_masks_of_the_torch_rounds(monkeypatch, masker, size, batches):
    """On CPU, region and block add rectangles with numba loops (rect_kernels); CUDA and CPU without numba
    use batched torch rounds. Both must draw the same uniforms and make bit-identical masks, or runs would
    depend on the machine."""
    pytest.importorskip("numba")
    from mimbench_plugins import rect_maskers

    def two_masks_then_a_draw(compiled: bool, batch: int, seed: int):
        monkeypatch.setattr(rect_maskers, "_compiled_rounds", lambda device: compiled)
        g = gen(seed)
        x = torch.zeros(batch, 1, *size)
        return [masker(x, g), masker(x, g), torch.rand(4, generator=g)]  # the draw checks the generator's state

    for batch in batches:
        for seed in range(3):
            torch_rounds = two_masks_then_a_draw(False, batch, seed)
            compiled = two_masks_then_a_draw(True, batch, seed)
            for a, b in zip(torch_rounds, compiled):
                assert a.dtype == b.dtype and torch.equal(a, b), f"batch {batch}, seed {seed}"
    assert torch_rounds[0].any() and not torch_rounds[0].all()


@pytest.mark.parametrize("levels", [6, 60, None], ids=["many-ties", "few-ties", "uniform"])
def test_smallest_is_the_first_k_of_argsort_even_with_ties(levels):
    """patch and random_token hide the k smallest of per-cell noise. On CPU they are found by a partition,
    which must give exactly the cells argsort would put first, ties included."""
    from mimbench_plugins.mask_utils import smallest as _smallest

    g = gen(0)
    for k in range(1, 49):
        noise = torch.rand(64, 49, generator=g) if levels is None else \
            torch.randint(0, levels, (64, 49), generator=g).float()
        by_sorting = torch.zeros(64, 49, dtype=torch.bool).scatter_(1, noise.argsort(dim=1)[:, :k], True)
        hidden = _smallest(noise, k)
        assert torch.equal(hidden, by_sorting), f"k={k}"
        assert (hidden.sum(1) == k).all()


def test_torch_exp_does_not_depend_on_the_shape_of_the_call():
    """The compiled rounds get their aspect ratios from one torch.exp per draw, where the torch rounds call it
    once per round: the same only because torch's CPU exp maps each element through one routine, whatever
    the tensor's length, tail or strides. If a torch version broke that, the compiled masks would drift."""
    values = (math.log(0.3) * (1 - 2 * torch.rand(100_003, generator=gen(0))))
    whole = torch.exp(values)
    for piece in (1, 3, 7, 15, 17, 33, 255):
        assert torch.equal(torch.cat([torch.exp(p) for p in values.split(piece)]), whole), f"pieces of {piece}"
    strided = torch.stack([values, values], dim=1)[:, 0]
    assert torch.equal(torch.exp(strided), whole)
