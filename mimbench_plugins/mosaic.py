"""``fashion-mosaic``: a segmentation dataset made offline from real Fashion-MNIST images.

Each canvas holds a few Fashion-MNIST items, each resized to a random side and pasted at a random
place (a later item covers an earlier one); every pixel is labelled with the class of the item
whose ink is there (class + 1), background (0) elsewhere: 11 segmentation classes. Train canvases
are made only from the train split's images, test canvases only from the test split's, so the two
share no source image. Deterministic from ``seed``.

Every canvas also carries a box per item (for detection probes): the item's class (0..9) and the
tight box of its *visible* ink, in pixels (pixel edges); an item that later items cover entirely
has no box. Boxes are read off the same drawing: images, labels and masks are what they were
before boxes existed (and so are the run ids of suites that use them).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F

from mimbench.plugin import Interval, TensorImageDataset, hookimpl

from mimbench_plugins.datasets import ImageCount, Seed, stream_seed, check_split, fashion_mnist, fashion_mnist_mini

#: Items on a canvas (a 56-px canvas holds about 11 at the smallest scale).
Items = Annotated[int, Interval(ge=1, le=16)]
#: Canvases per split when ``num_images`` is null.
DEFAULT_CANVASES = {"train": 4000, "test": 1000}
#: Segmentation classes: background and the 10 Fashion-MNIST classes.
MOSAIC_CLASSES = ("background", "t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                  "sneaker", "bag", "ankle boot")


def fashion_mosaic(split: str, image_size: int = 56, source: Literal["mini", "full"] = "mini",
                   root: str | None = None, num_images: ImageCount | None = None,
                   min_items: Items = 2, max_items: Items = 4,
                   min_scale: float = 0.3, max_scale: float = 0.6, ink: Annotated[int, Interval(ge=0, le=255)] = 40, seed: Seed = 0
                   ) -> TensorImageDataset:
    """Fashion-MNIST items on canvases, every pixel labelled (11 classes: background + 10 items), every item boxed.

    ``source``: the embedded subset (``mini``) or the full dataset (``full``, found as the
    ``fashion-mnist`` dataset finds it, ``root`` included). Per canvas, ``min_items``..``max_items``
    items, each a random image of the split resized to a side of ``min_scale``..``max_scale`` of the
    canvas, at a uniform random place; pixels of value > ``ink`` (of 255) are the item's. ``num_images``
    canvases (null: 4000 train / 1000 test). The image's class label (for classification probes and
    ``eval.labels_per_class``) is the class with the most pixels on it.
    Returns uint8 images [N, 1, S, S], labels [N], masks [N, S, S] (S = ``image_size``) and boxes
    [N, ``max_items``, 5] (class 0..9, x0, y0, x1, y1 of each item's visible ink; class -1 pads).
    """
    check_split(split)
    if not 1 <= min_items <= max_items:
        raise ValueError(f"need 1 <= min_items <= max_items, got {min_items} and {max_items}")
    if not 0 < min_scale <= max_scale <= 1:
        raise ValueError(f"need 0 < min_scale <= max_scale <= 1, got {min_scale} and {max_scale}")
    if round(min_scale * image_size) < 4:
        raise ValueError(f"min_scale {min_scale} makes items of {round(min_scale * image_size)} px on a "
                         f"{image_size} px canvas: at least 4 px are needed")
    if not 0 <= ink < 255:
        raise ValueError(f"ink must be in 0..254, got {ink}")
    items = fashion_mnist_mini(split) if source == "mini" else fashion_mnist(split, root=root)
    count = DEFAULT_CANVASES[split] if num_images is None else num_images
    if count < 1:
        raise ValueError(f"num_images must be >= 1, got {count}")
    generator = torch.Generator().manual_seed(stream_seed("fashion-mosaic", seed, split))
    images, masks, sources, boxes = _paint(items, count, image_size, (min_items, max_items), (min_scale, max_scale),
                                           ink, generator)
    per_class = F.one_hot(masks.long().flatten(1), len(MOSAIC_CLASSES))[:, :, 1:].sum(1)  # [N, 10] pixels per item class
    dataset = TensorImageDataset(images[:, None], per_class.argmax(1), 10, masks, len(MOSAIC_CLASSES),
                                 boxes, len(MOSAIC_CLASSES) - 1)
    dataset.item_images = items.images[sources, 0]  # [T, 28, 28]: the source image of every item pasted
    return dataset


def _paint(items: TensorImageDataset, count: int, size: int, item_range: tuple[int, int],
           scale_range: tuple[float, float], ink: int, generator: torch.Generator
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` canvases uint8 [N, S, S], their masks uint8 [N, S, S], the index in ``items`` of
    every item pasted [T] and the boxes of the items still visible, float [N, max items, 5] (class -1
    pads); every draw from ``generator``."""
    low, high = item_range
    per_canvas = torch.randint(low, high + 1, (count,), generator=generator)
    total = int(per_canvas.sum())
    canvas_of = torch.repeat_interleave(torch.arange(count), per_canvas)  # [T]: the canvas each item goes on
    source = torch.randint(0, len(items), (total,), generator=generator)
    sides = (torch.empty(total).uniform_(*scale_range, generator=generator) * size).round().long()
    x = (torch.rand(total, generator=generator) * (size - sides + 1)).floor().long()
    y = (torch.rand(total, generator=generator) * (size - sides + 1)).floor().long()
    resized: dict[int, torch.Tensor] = {}
    for side in sides.unique().tolist():  # one resize per distinct side
        which = (sides == side).nonzero().squeeze(1)
        scaled = F.interpolate(items.images[source[which]].float(), size=(side, side), mode="bilinear",
                               antialias=True, align_corners=False)
        resized.update(zip(which.tolist(), scaled.round().clamp(0, 255).to(torch.uint8)[:, 0]))
    images = torch.zeros(count, size, size, dtype=torch.uint8)
    masks = torch.zeros(count, size, size, dtype=torch.uint8)
    owner = torch.full((count, size, size), -1, dtype=torch.long)  # the item whose ink is at each pixel
    labels = items.labels[source] + 1
    for i in range(total):  # in order: a later item covers an earlier one
        n, s, top, left = int(canvas_of[i]), int(sides[i]), int(y[i]), int(x[i])
        pixels = resized[i]
        on = pixels > ink
        images[n, top:top + s, left:left + s][on] = pixels[on]
        masks[n, top:top + s, left:left + s][on] = int(labels[i])
        owner[n, top:top + s, left:left + s][on] = i
    return images, masks, source, _visible_boxes(owner, canvas_of, labels - 1, high)


def _visible_boxes(owner: torch.Tensor, canvas_of: torch.Tensor, classes: torch.Tensor, per_canvas: int) -> torch.Tensor:
    """The tight box of each item's visible pixels (``owner`` [N, S, S]: the item at each pixel, -1
    none), float [N, per_canvas, 5] rows (class, x0, y0, x1, y1) in paste order, class -1 pads."""
    boxes = torch.full((owner.shape[0], per_canvas, 5), -1.0)
    filled = torch.zeros(owner.shape[0], dtype=torch.long)
    for i, n in enumerate(canvas_of.tolist()):
        rows, cols = (owner[n] == i).nonzero(as_tuple=True)
        if len(rows):
            boxes[n, filled[n]] = torch.tensor([float(classes[i]), cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
            filled[n] += 1
    return boxes


@hookimpl
def mimbench_register_datasets(register) -> None:
    register("fashion-mosaic", fashion_mosaic)
