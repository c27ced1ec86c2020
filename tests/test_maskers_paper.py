"""The maskers of the MAE / BEiT / SimMIM papers (random_token, block, square, grid) and SimMIM's
AvgDist, pinned down beyond the conformance checks."""

import math
import random

import pytest
import torch

from mimbench.metrics import mask_avgdist
from mimbench.testing import check_masker
from mimbench_plugins import maskers
from mimbench_plugins.maskers import BlockMasker, GridMasker, RandomTokenMasker, SquareMasker


def images(batch=32, size=32, channels=3, width=None):
    return torch.zeros(batch, channels, size, width or size)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def cells_of(mask, patch):
    """bool [B, H, W] -> bool [B, H/p, W/p], asserting that every patch is wholly hidden or visible."""
    b, h, w = mask.shape
    grid = mask.view(b, h // patch, patch, w // patch, patch)
    assert torch.equal(grid.amin(dim=(2, 4)), grid.amax(dim=(2, 4))), "a patch is partly hidden"
    return grid.amax(dim=(2, 4))


# --- registration and conformance -------------------------------------------------------------

NEW = {"random_token": RandomTokenMasker, "block": BlockMasker, "square": SquareMasker, "grid": GridMasker}


def test_registered_with_a_one_line_description():
    registered = {}
    maskers.mimbench_register_maskers(lambda name, factory, description=None: registered.setdefault(name, factory))
    assert {name: registered.get(name) for name in NEW} == NEW
    for factory in NEW.values():  # the registry's description: the docstring's first line
        assert 20 < len(factory.__doc__.strip().splitlines()[0]) <= 120


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name,params", [
    ("random_token", {}), ("random_token", {"ratio": 0.5, "patch_size": 8}),
    ("block", {}), ("block", {"ratio": 0.6, "patch_size": 8, "min_num_patches": 2}),
    ("square", {}), ("square", {"ratio": 0.5}),
    ("grid", {}), ("grid", {"keep_every": 4, "patch_size": 2}),
])
def test_conforms(name, params, size):
    factory = NEW[name]
    check_masker(factory, params, image_size=size, random=not getattr(factory, "deterministic", False))


@pytest.mark.parametrize("name,params", [
    ("random_token", {"patch_size": 16}), ("block", {"patch_size": 16}), ("square", {}), ("grid", {"patch_size": 16}),
])
def test_conforms_at_224(name, params):
    factory = NEW[name]
    check_masker(factory, params, image_size=224, batch=8, random=not getattr(factory, "deterministic", False))


def test_grid_is_flagged_deterministic_and_the_others_are_not():
    assert GridMasker.deterministic is True
    assert not any(getattr(f, "deterministic", False) for f in (RandomTokenMasker, BlockMasker, SquareMasker))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(NEW))
def test_conforms_on_cuda(name):
    factory = NEW[name]
    check_masker(factory, {}, device="cuda", random=not getattr(factory, "deterministic", False))


# --- random_token (MAE) -----------------------------------------------------------------------

@pytest.mark.parametrize("ratio,patch,size", [(0.75, 4, 32), (0.5, 8, 32), (0.6, 7, 28), (0.3, 2, 16), (0.9, 16, 224)])
def test_random_token_hides_exactly_round_l_ratio_whole_patches(ratio, patch, size):
    mask = RandomTokenMasker(ratio=ratio, patch_size=patch)(images(batch=16, size=size), gen())
    cells = cells_of(mask, patch)
    expected = round((size // patch) ** 2 * ratio)
    assert (cells.flatten(1).sum(1) == expected).all()
    assert len({tuple(c.flatten().tolist()) for c in cells}) == 16, "two images got the same patches"


def test_random_token_picks_patches_uniformly():
    cells = cells_of(RandomTokenMasker(ratio=0.75)(images(batch=4000, size=32, channels=1), gen()), 4)
    per_patch = cells.float().mean(0)  # every one of the 64 patches is hidden ~75% of the time
    assert (per_patch - 0.75).abs().max() < 0.04  # 5.8 standard errors
    # rows and columns on a non-square image too
    mask = RandomTokenMasker(ratio=0.5, patch_size=4)(images(batch=8, size=16, width=32), gen())
    assert mask.shape == (8, 16, 32) and (cells_of(mask, 4).flatten(1).sum(1) == 16).all()


# --- block (BEiT) ---------------------------------------------------------------------------------

def beit_reference(height, width, budget, min_num=4, max_num=None, min_aspect=0.3, max_aspect=None, rng=random):
    """BEiT's MaskingGenerator (microsoft/unilm beit/masking_generator.py), restated in plain Python."""
    max_num = budget if max_num is None else max_num
    low, high = math.log(min_aspect), math.log(max_aspect or 1 / min_aspect)
    mask = [[0] * width for _ in range(height)]
    count = 0
    while count < budget:
        limit = min(budget - count, max_num)
        delta = 0
        for _ in range(10):
            area = rng.uniform(min_num, limit)
            aspect = math.exp(rng.uniform(low, high))
            h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if w < width and h < height:
                top, left = rng.randint(0, height - h), rng.randint(0, width - w)
                inside = [(i, j) for i in range(top, top + h) for j in range(left, left + w)]
                if 0 < h * w - sum(mask[i][j] for i, j in inside) <= limit:
                    for i, j in inside:
                        delta += 1 - mask[i][j]
                        mask[i][j] = 1
            if delta > 0:
                break
        if delta == 0:
            break
        count += delta
    return count


@pytest.mark.parametrize("grid,budget,min_num,tolerance", [(8, 26, 4, 0.03), (14, 75, 16, 0.07)])
def test_block_ends_short_exactly_as_often_as_beit(grid, budget, min_num, tolerance):
    # Every image hides at most the budget, and the budget unless 10 candidates in a row failed:
    # the same shortfall as BEiT's own code (8x8 / 26: ~4% of images 1-2 patches short;
    # 14x14 / 75 / min 16, BEiT's pre-training setting: ~1/3 short, by 0.5 patches on average).
    n = 1500
    rng = random.Random(0)
    reference = torch.tensor([beit_reference(grid, grid, budget, min_num, rng=rng) for _ in range(n)])
    masker = BlockMasker(patch_size=2, num_masking_patches=budget, min_num_patches=min_num)
    cells = cells_of(masker(images(batch=n, size=2 * grid, channels=1), gen()), 2)
    counts = cells.flatten(1).sum(1)
    assert counts.max() <= budget and reference.max() <= budget
    short, reference_short = (counts < budget).float().mean(), (reference < budget).float().mean()
    assert abs(short - reference_short) < tolerance, (short, reference_short)
    assert abs(counts.float().mean() - reference.float().mean()) < 0.1
    assert (budget - counts).float().mean() < 0.7


def run_traced(masker, batch, grid_h, grid_w, seed=0):
    trace = []
    cells, count = masker.patch_mask(batch, grid_h, grid_w, gen(seed), trace=trace)
    return cells, count, trace


@pytest.mark.parametrize("params,grid_h,grid_w", [
    ({}, 8, 8), ({"ratio": 0.75}, 8, 8), ({"num_masking_patches": 75, "min_num_patches": 16}, 14, 14),
    ({"ratio": 0.5, "max_num_patches": 6, "min_aspect": 0.5}, 8, 12),
    ({"ratio": 0.4, "min_aspect": 1.0, "max_aspect": 3.0}, 10, 10),
])
def test_block_is_a_union_of_beit_blocks(params, grid_h, grid_w):
    masker = BlockMasker(**params)
    budget = masker.budget(grid_h, grid_w)
    cells, count, trace = run_traced(masker, 256, grid_h, grid_w)
    low_aspect, high_aspect = math.exp(masker.log_aspect[0]), math.exp(masker.log_aspect[1])
    max_block = masker.max_num_patches or budget
    rebuilt = torch.zeros_like(cells)
    done = torch.zeros(256, dtype=torch.bool)
    hidden_so_far = torch.zeros(256, dtype=torch.long)
    aspects = []
    for index, top, left, h, w, added, limit in trace:
        kept = added > 0
        assert not (kept & done[index]).any(), "an image added a block after it stopped"
        done[index] |= ~kept
        index, top, left, h, w, added, limit = (t[kept] for t in (index, top, left, h, w, added, limit))
        # max_mask_patches = min(what is still missing, max_num_patches); 0 < new patches <= it
        assert torch.equal(limit, (budget - hidden_so_far[index]).clamp(max=max_block).float())
        assert ((added > 0) & (added <= limit)).all()
        # the block fits strictly inside the grid, as in BEiT (h < rows, w < cols)
        assert (h >= 1).all() and (w >= 1).all() and (h < grid_h).all() and (w < grid_w).all()
        assert (top >= 0).all() and (left >= 0).all() and (top + h <= grid_h).all() and (left + w <= grid_w).all()
        # h = round(sqrt(area * aspect)), w = round(sqrt(area / aspect)): some aspect in range and
        # some area between min_num_patches and max_mask_patches round to these sides
        hf, wf = h.double(), w.double()
        assert ((hf - 0.5) / (wf + 0.5) <= high_aspect + 1e-9).all()
        assert ((hf + 0.5) / (wf - 0.5).clamp_min(1e-9) >= low_aspect - 1e-9).all()
        area_low = torch.minimum(limit.double(), torch.tensor(float(masker.min_num_patches)))
        area_high = torch.maximum(limit.double(), torch.tensor(float(masker.min_num_patches)))
        assert ((hf - 0.5) * (wf - 0.5) <= area_high + 1e-9).all()
        assert ((hf + 0.5) * (wf + 0.5) >= area_low - 1e-9).all()
        for i, t, l, hh, ww in zip(index.tolist(), top.tolist(), left.tolist(), h.tolist(), w.tolist()):
            rebuilt[i, t:t + hh, l:l + ww] = True
        hidden_so_far[index] += added.long()
        aspects.append((hf / wf).log())
    assert torch.equal(rebuilt, cells), "the mask is not the union of the kept blocks"
    assert torch.equal(hidden_so_far, count) and torch.equal(cells.flatten(1).sum(1), count)
    assert (count <= budget).all() and (count == budget).float().mean() > 0.5
    assert (done | (count == budget)).all()
    log_aspect = torch.cat(aspects)
    middle = (masker.log_aspect[0] + masker.log_aspect[1]) / 2
    assert abs(log_aspect.mean().item() - middle) < 0.25, "aspect ratios are not log-uniform around the middle"


@pytest.mark.parametrize("side,grid", [(1, 4), (2, 8), (3, 8), (4, 7)])
def test_block_of_one_square_budget_is_one_square_anywhere(side, grid):
    # area fixed at side^2 (min = budget) and aspect fixed at 1: each image is one side x side
    # square of whole patches, and every position inside the grid occurs.
    masker = BlockMasker(patch_size=4, num_masking_patches=side**2, min_num_patches=side**2, min_aspect=1.0)
    cells = cells_of(masker(images(batch=400, size=4 * grid, channels=1), gen()), 4)
    tops = cells.any(2).int().argmax(1)
    lefts = cells.any(1).int().argmax(1)
    index = torch.arange(grid)
    in_rows = (index >= tops[:, None]) & (index < tops[:, None] + side)
    in_cols = (index >= lefts[:, None]) & (index < lefts[:, None] + side)
    assert torch.equal(cells, in_rows[:, :, None] & in_cols[:, None, :])
    positions = set(zip(tops.tolist(), lefts.tolist()))
    assert len(positions) == (grid - side + 1) ** 2


def test_block_budget_from_ratio_or_count():
    assert BlockMasker(ratio=0.4).budget(8, 8) == 26  # round(25.6)
    assert BlockMasker(ratio=0.4).budget(14, 14) == 78
    assert BlockMasker(num_masking_patches=75).budget(14, 14) == 75
    cells = cells_of(BlockMasker(patch_size=16, num_masking_patches=75, min_num_patches=16)(
        images(batch=64, size=224, channels=1), gen()), 16)
    assert cells.flatten(1).sum(1).max() <= 75 and cells.flatten(1).sum(1).float().mean() > 73.8


def test_block_is_reproducible_and_differs_per_image():
    masker = BlockMasker()
    a, b = masker(images(), gen(3)), masker(images(), gen(3))
    assert torch.equal(a, b)
    assert len({tuple(m.flatten().tolist()) for m in a}) == len(a)


# --- square (SimMIM) ------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio,h,w", [(0.3, 32, 32), (0.5, 28, 28), (0.1, 32, 48), (0.3, 48, 32)])
def test_square_is_one_filled_square_inside_at_random_positions(ratio, h, w):
    mask = SquareMasker(ratio=ratio)(images(batch=1500, size=h, width=w, channels=1), gen())
    side = round(math.sqrt(ratio) * min(h, w))
    assert (mask.flatten(1).sum(1) == side * side).all()
    tops = mask.any(2).int().argmax(1)
    lefts = mask.any(1).int().argmax(1)
    for m, t, l in zip(mask[:200], tops[:200].tolist(), lefts[:200].tolist()):
        assert m[t:t + side, l:l + side].all()  # with the count: exactly this square
    # every position fully inside occurs, the corners included, roughly uniformly
    assert (tops + side <= h).all() and (lefts + side <= w).all()
    assert set(tops.tolist()) == set(range(h - side + 1)) and set(lefts.tolist()) == set(range(w - side + 1))
    assert abs(tops.float().mean().item() - (h - side) / 2) < 0.1 * (h - side + 1)


def test_square_sides():
    assert SquareMasker(0.3).side(32, 32) == 18  # 0.5477 * 32 = 17.5
    assert SquareMasker(0.25).side(28, 28) == 14
    assert SquareMasker(0.9).side(16, 48) == 15


# --- grid (MAE) ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("patch,keep,h,w", [(4, 2, 32, 32), (4, 2, 28, 28), (2, 3, 36, 24), (8, 2, 32, 64)])
def test_grid_hides_every_patch_but_one_in_keep_squared(patch, keep, h, w):
    masker = GridMasker(patch_size=patch, keep_every=keep)
    mask = masker(images(batch=3, size=h, width=w), gen())
    cells = cells_of(mask, patch)
    rows, cols = torch.meshgrid(torch.arange(h // patch), torch.arange(w // patch), indexing="ij")
    expected = ~((rows % keep == 0) & (cols % keep == 0))
    assert all(torch.equal(c, expected) for c in cells)
    assert torch.equal(mask, masker(images(batch=3, size=h, width=w), gen(1)))
    assert torch.equal(mask, masker(images(batch=3, size=h, width=w)))
    assert masker.ratio == pytest.approx(1 - 1 / keep**2)
    if (h // patch) % keep == 0 and (w // patch) % keep == 0:
        assert mask.float().mean().item() == pytest.approx(masker.ratio)
    mask[0, 0, 0] = not mask[0, 0, 0]  # a real tensor, not a broadcast view
    assert mask[1, 0, 0] != mask[0, 0, 0]


# --- bad parameters and sizes -------------------------------------------------------------------------

@pytest.mark.parametrize("factory,params,message", [
    (RandomTokenMasker, {"ratio": 1.0}, r"ratio must be in \(0, 1\), got 1.0"),
    (RandomTokenMasker, {"patch_size": 0}, "patch_size must be >= 1, got 0"),
    (BlockMasker, {"ratio": 0.0}, r"ratio must be in \(0, 1\)"),
    (BlockMasker, {"patch_size": -2}, "patch_size must be >= 1, got -2"),
    (BlockMasker, {"num_masking_patches": 0}, "num_masking_patches must be >= 1, got 0"),
    (BlockMasker, {"min_num_patches": 0}, "min_num_patches must be >= 1, got 0"),
    (BlockMasker, {"min_num_patches": 8, "max_num_patches": 4}, "max_num_patches must be >= min_num_patches=8, got 4"),
    (BlockMasker, {"min_aspect": 0.0}, "min_aspect must be > 0, got 0.0"),
    (BlockMasker, {"min_aspect": 2.0, "max_aspect": 1.0}, "max_aspect must be >= min_aspect=2.0, got 1.0"),
    (BlockMasker, {"min_aspect": 2.0}, r"max_aspect must be >= min_aspect=2.0, got 0.5 \(1 / min_aspect\)"),
    (SquareMasker, {"ratio": -0.3}, r"ratio must be in \(0, 1\), got -0.3"),
    (GridMasker, {"keep_every": 1}, "keep_every must be >= 2, got 1"),
    (GridMasker, {"patch_size": 0}, "patch_size must be >= 1, got 0"),
])
def test_bad_params_are_refused_in_one_line(factory, params, message):
    with pytest.raises(ValueError, match=message) as info:
        factory(**params)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("masker,size,message", [
    (RandomTokenMasker(patch_size=8), 28, "image size 28x28 is not divisible by patch_size 8"),
    (BlockMasker(patch_size=3), 32, "image size 32x32 is not divisible by patch_size 3"),
    (GridMasker(patch_size=5), 32, "image size 32x32 is not divisible by patch_size 5"),
    (RandomTokenMasker(ratio=0.01), 16, "ratio 0.01 hides 0 of the 16 patches of a 16x16 image at patch_size 4"),
    (RandomTokenMasker(ratio=0.99), 16, "ratio 0.99 hides 16 of the 16 patches"),
    (BlockMasker(ratio=0.02), 16, "ratio 0.02 hides 0 of the 16 patches"),
    (BlockMasker(num_masking_patches=16), 16, "num_masking_patches 16 must be below the 16 patches of a 16x16 image"),
    (SquareMasker(ratio=0.0001), 16, "ratio 0.0001 gives a square of side 0 in a 16x16 image"),
    (SquareMasker(ratio=0.99), 32, "ratio 0.99 gives a square of side 32 in a 32x32 image"),
    (GridMasker(patch_size=8), 8, "a 8x8 image is a single patch at patch_size 8"),
])
def test_sizes_the_masker_cannot_handle_are_refused(masker, size, message):
    with pytest.raises(ValueError, match=message):
        masker(images(batch=2, size=size))


# --- AvgDist -------------------------------------------------------------------------------------------

def brute_avgdist(mask):
    out = []
    for m in mask:
        hidden, visible = m.nonzero().double(), (~m).nonzero().double()
        if len(hidden) == 0 or len(visible) == 0:
            out.append(float("nan"))
        else:
            out.append(torch.cdist(hidden, visible).amin(dim=1).mean().item())
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("shape", [(40, 5, 7), (40, 9, 4), (20, 16, 16), (10, 1, 12), (10, 12, 1), (6, 23, 31)])
def test_avgdist_matches_brute_force(shape):
    g = gen(sum(shape))
    for p in (0.1, 0.5, 0.9, 0.99):
        mask = torch.rand(shape, generator=g) < p
        mask[0] = True  # nothing visible -> NaN
        mask[1] = False  # nothing hidden -> NaN
        if shape[1] > 2:
            mask[2, 1] = True  # a fully hidden row
            mask[3, :, 0] = True  # a fully hidden column
            mask[4, 0] = False  # a fully visible row
        got = mask_avgdist(mask)
        assert got.dtype == torch.float64 and got.shape == (shape[0],)
        assert torch.allclose(got, brute_avgdist(mask), atol=1e-9, equal_nan=True)
        assert got[:2].isnan().all()


def test_avgdist_of_paper_maskers_matches_brute_force_and_chunks_agree():
    masks = torch.cat([
        BlockMasker(patch_size=2)(images(batch=4, size=24, channels=1), gen()),
        SquareMasker(ratio=0.5)(images(batch=4, size=24, channels=1), gen()),
        RandomTokenMasker(ratio=0.9, patch_size=4)(images(batch=4, size=24, channels=1), gen()),
    ])
    expected = brute_avgdist(masks)
    assert torch.allclose(mask_avgdist(masks), expected, atol=1e-9)
    assert torch.allclose(mask_avgdist(masks, max_elements=1000), expected, atol=1e-9)  # 1 image per chunk


def test_avgdist_hand_computed():
    one = torch.zeros(1, 5, 5, dtype=torch.bool)
    one[0, 2, 2] = True
    assert mask_avgdist(one).item() == 1.0
    block = torch.zeros(1, 5, 5, dtype=torch.bool)
    block[0, 1:4, 1:4] = True  # 8 pixels at distance 1, the centre at distance 2
    assert mask_avgdist(block).item() == pytest.approx(10 / 9)
    corner = torch.ones(1, 3, 3, dtype=torch.bool)
    corner[0, 0, 0] = False  # distances sqrt(i^2 + j^2) to the one visible corner
    expected = (1 + 1 + 2 + 2 + math.sqrt(2) + 2 * math.sqrt(5) + math.sqrt(8)) / 8
    assert mask_avgdist(corner).item() == pytest.approx(expected)
    band = torch.zeros(1, 6, 4, dtype=torch.bool)
    band[0, 1:4] = True  # rows 1 and 3 at distance 1, row 2 at distance 2 (the long way around is longer)
    assert mask_avgdist(band).item() == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match=r"mask must be \[B, H, W\], got shape \(5, 5\)"):
        mask_avgdist(one[0])
