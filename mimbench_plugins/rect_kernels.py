"""Compiled CPU loops for the rectangle maskers (``region``, ``block``).

Both maskers add rectangles one round at a time, and each round depends on the last: a candidate
is kept only if it adds pixels without passing the budget. As batched tensor ops that is about 70
small ops per round, which on CPU cost far more in dispatch than in arithmetic (~10 ms for 256
images). These numba loops do the same rounds image by image, in place, in well under a
millisecond.

They are exact replicas, not approximations: the caller draws the same uniforms and computes the
same aspect ratios with torch (``torch.exp``'s rounding is torch's own), and every other step is a
float32 operation IEEE rounds the same way everywhere (+, -, *, /, sqrt, floor, round half to even).
tests/test_maskers.py checks the masks are bit-identical to the batched torch rounds.

Shapes: N images of the sub-batch (``active`` [N] indexes the full batch), R rounds, T tries.
Imported only when a CPU batch needs these masks, so that numba's import (~0.3 s) and the first
compilation (~2 s, then cached) are paid only by runs that use them.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, types
from numba.extending import intrinsic

WORD = 64  # a mask row is stored as bits, 64 columns per uint64 word: counting a rectangle costs a popcount per row


def _compiled(function):
    """numba-compiled ``function``, cached on disk (next to this file, else in the user's cache folder)
    so later processes load it in ~0.1 s instead of compiling it again; uncached where neither is writable."""
    try:
        return njit(cache=True, nogil=True)(function)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return njit(nogil=True)(function)


@intrinsic
def _popcount(typingctx, word):
    """The number of set bits of a uint64 (LLVM's ctpop: one instruction)."""
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return types.uint64(types.uint64), codegen


def words_per_row(width: int) -> int:
    """uint64 words holding a mask row of ``width`` columns."""
    return -(-width // WORD)


@_compiled
def _span(left, right, word):
    """The bits of columns [left, right) that fall in uint64 word number ``word`` of a row."""
    low = max(left - WORD * word, 0)
    high = min(right - WORD * word, WORD)
    if high <= low:
        return np.uint64(0)
    ones = np.uint64(0xFFFFFFFFFFFFFFFF) if high - low == WORD else (np.uint64(1) << np.uint64(high - low)) - np.uint64(1)
    return ones << np.uint64(low)


@_compiled
def _hidden_inside(bits, image, top, left, height, width, grid_w):
    """Hidden cells of bits [B, H, words] image ``image`` inside the rectangle, clipped to the grid
    (as the torch rounds clip it)."""
    bottom, right = min(top + height, bits.shape[1]), min(left + width, grid_w)
    total = 0
    for word in range(left // WORD, (right - 1) // WORD + 1):
        span = _span(left, right, word)
        for row in range(top, bottom):
            total += _popcount(bits[image, row, word] & span)
    return total


@_compiled
def _paint(bits, image, top, left, height, width, grid_w):
    """Hide the cells of the rectangle in image ``image`` of bits [B, H, words], clipped to the grid."""
    bottom, right = min(top + height, bits.shape[1]), min(left + width, grid_w)
    for word in range(left // WORD, (right - 1) // WORD + 1):
        span = _span(left, right, word)
        for row in range(top, bottom):
            bits[image, row, word] |= span


@_compiled
def _keep_if_new(bits, image, top, left, height, width, grid_w, limit):
    """Paint the rectangle into image ``image`` of bits [B, H, words] if it hides 0 < new <= limit
    more cells (limit float32). Returns new as float32, 0 when it was not kept."""
    new = np.float32(height * width - _hidden_inside(bits, image, top, left, height, width, grid_w))
    if new > 0 and new <= limit:
        _paint(bits, image, top, left, height, width, grid_w)
        return new
    return np.float32(0.0)


def torch_exp(arg: np.ndarray) -> np.ndarray:
    """exp of float32 arg, in place, computed by torch as the batched rounds compute it. torch's CPU exp
    maps every element through the same vectorised routine, tail and strided inputs included, so a
    value's exp does not depend on the shape of the call; numpy's and numba's exp round differently."""
    torch.from_numpy(arg).exp_()
    return arg


@_compiled
def scale_up(bits, grid_w, scale):
    """bits uint64 [B, h, words] of a patch grid as the bits of its pixels, [B, h * scale,
    words_per_row(grid_w * scale)]: each patch a scale x scale square."""
    batch, grid_h = bits.shape[0], bits.shape[1]
    words = (grid_w * scale + WORD - 1) // WORD
    pixels = np.empty((batch, grid_h * scale, words), np.uint64)
    for image in range(batch):
        for row in range(grid_h):
            for word in range(words):  # the patches [first, last) overlap this word of a pixel row
                first, last = WORD * word // scale, min(grid_w, (WORD * (word + 1) + scale - 1) // scale)
                value = np.uint64(0)
                for col in range(first, last):
                    if (bits[image, row, col // WORD] >> np.uint64(col % WORD)) & np.uint64(1):
                        value |= _span(col * scale, (col + 1) * scale, word)
                for pixel_row in range(row * scale, (row + 1) * scale):
                    pixels[image, pixel_row, word] = value
    return pixels


def unpack(bits: np.ndarray, grid_w: int) -> np.ndarray:
    """bits uint64 [B, h, words] as a uint8 0/1 mask [B, h, grid_w] (cell c is bit c % 64 of word c // 64)."""
    as_bytes = bits.astype("<u8", copy=False).view(np.uint8)  # little-endian: cell c is bit c % 8 of byte c // 8
    return np.unpackbits(as_bytes, axis=2, count=grid_w, bitorder="little")


@_compiled
def add_regions(bits, grid_w, count, active, target, min_area, u, aspect):
    """R rounds of RegionMasker for the images ``active`` (int64 [N]) of bits uint64 [B, H, words]
    and count float32 [B] (pixels hidden), both updated in place. Returns the images of ``active``
    still short of the target.

    target, min_area: float32. u: float32 [R, 4, N, T], the area, aspect, top and left uniforms of
    T tries per image and round; aspect: float32 [R, N, T], exp(log(aspect) * (1 - 2 u[:, 1])).
    """
    rounds, _, n, tries = u.shape
    one, fh, fw = np.float32(1.0), np.float32(bits.shape[1]), np.float32(grid_w)
    short = np.zeros(n, np.bool_)
    for j in range(n):
        i = active[j]
        for r in range(rounds):
            remaining = np.float32(target - count[i])
            if remaining <= 0:  # no try can be kept (it must add pixels, at most the remaining ones)
                break
            low = remaining if remaining < min_area else min_area
            for t in range(tries):
                area = np.float32(low + np.float32((remaining - low) * u[r, 0, j, t]))
                area = area if area > one else one
                rect_h = np.float32(np.rint(np.sqrt(np.float32(area * aspect[r, j, t]))))
                rect_h = min(max(min(rect_h, np.float32(np.floor(area))), one), fh)
                rect_w = min(max(np.float32(np.floor(np.float32(area / rect_h))), one), fw)
                top = int(np.floor(np.float32(u[r, 2, j, t] * np.float32(fh - rect_h + one))))
                left = int(np.floor(np.float32(u[r, 3, j, t] * np.float32(fw - rect_w + one))))
                added = _keep_if_new(bits, i, top, left, int(rect_h), int(rect_w), grid_w, remaining)
                if added > 0:
                    count[i] = np.float32(count[i] + added)
                    break
        short[j] = count[i] < target
    return active[short]


@_compiled
def add_blocks(bits, grid_w, count, active, budget, max_block, min_patches, u, aspect):
    """R rounds of BlockMasker (one block per image and round) for the images ``active`` (int64 [N])
    of bits uint64 [B, h, words] (the patch grid) and count float32 [B] (patches hidden), both
    updated in place. Returns the images of ``active`` still adding blocks: short of the budget,
    and none of their rounds failed all its tries.

    budget, max_block, min_patches: float32. u: float32 [R, 4, N, T], the area, aspect, top and
    left uniforms of T tries; aspect: float32 [R, N, T], exp(log_low + (log_high - log_low) u[:, 1]).
    """
    rounds, _, n, tries = u.shape
    one, fh, fw = np.float32(1.0), np.float32(bits.shape[1]), np.float32(grid_w)
    alive = np.ones(n, np.bool_)
    for j in range(n):
        i = active[j]
        for r in range(rounds):
            limit = np.float32(budget - count[i])
            limit = limit if limit < max_block else max_block
            added = np.float32(0.0)
            for t in range(tries):
                area = np.float32(min_patches + np.float32(np.float32(limit - min_patches) * u[r, 0, j, t]))
                rect_h = np.float32(np.rint(np.sqrt(np.float32(area * aspect[r, j, t]))))
                rect_w = np.float32(np.rint(np.sqrt(np.float32(area / aspect[r, j, t]))))
                if not (rect_h < fh and rect_w < fw):  # BEiT keeps blocks strictly smaller than the grid
                    continue
                top = int(min(np.float32(np.floor(np.float32(u[r, 2, j, t] * np.float32(fh - rect_h + one)))),
                              fh - rect_h))
                left = int(min(np.float32(np.floor(np.float32(u[r, 3, j, t] * np.float32(fw - rect_w + one)))),
                               fw - rect_w))
                added = _keep_if_new(bits, i, top, left, int(rect_h), int(rect_w), grid_w, limit)
                if added > 0:
                    break
            count[i] = np.float32(count[i] + added)
            if not (added > 0 and count[i] < budget):
                alive[j] = False
                break
    return active[alive]
