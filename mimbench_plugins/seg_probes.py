"""Dense probes: semantic segmentation from the frozen encoder's feature grid.

Both read the grid of unmasked images (``ProbeContext.dense``: float16 ``[N, D, h, w]``, the encoder's
output or one block) and the dataset's masks (``[N, S, S]``, 255 = ignored), fit on the labelled
train split (or its ``eval.labels_per_class`` subset of images) and score every pixel of the
test split: mIoU and pixel accuracy (``mimbench.plugin.metrics.segmentation_scores``).

- ``seg_linear``: DINOv2's linear protocol: the grid normalised per channel without affine
  parameters (the train split's mean and std), a 1x1 linear layer, logits upsampled bilinearly to
  the mask, cross-entropy ignoring unlabelled pixels.
- ``seg_knn``: the Hummingbird protocol: a memory bank of train patch features with their label
  distributions; each test patch takes the softmax-weighted labels of its k nearest (cosine)
  neighbours, upsampled bilinearly to the pixels.
"""

from __future__ import annotations

import math
from typing import Annotated, Callable

import torch
import torch.nn.functional as F
from torch import nn

from mimbench.plugin import Interval, Layer, MetricColumn, ProbeContext, channel_stats, check_layer, hookimpl, metrics

IGNORE = 255


def _columns(prefix: str, name: str, layer: Layer, loss: bool) -> list[MetricColumn]:
    columns = [MetricColumn(f"{prefix}_miou", f"{name} mIoU", f"{name} mIoU (fraction)", "accuracy"),
               MetricColumn(f"{prefix}_pixel_acc", f"{name} pixel acc.", f"{name} pixel accuracy (fraction)",
                            "accuracy", headline=False)]
    if loss:
        columns.append(MetricColumn(f"{prefix}_train_loss", f"{name} train loss",
                                    f"{name} final train cross-entropy", "other", headline=False, digits=4))
    return columns


def probe_layers(context: ProbeContext, layer: Layer) -> list[int | str]:
    """The grids a probe scores: the output, one block, or (``all``) the output and every block."""
    if layer != "all":
        return [layer]
    if not context.has_blocks or callable(getattr(context.encoder, "dense_grid", None)):
        return ["last"]
    images = context.normalize(next(context.test.batches(2))[0])
    with torch.no_grad():
        return ["last", *range(len(context.encoder.blocks(images)))]


def scored_layers(prefix: str, layers: list[int | str], score) -> dict[str, float]:
    """``<prefix>_<column>`` for the output (or the one block asked for), ``<prefix>_<column>@<block>``
    for each block, as ``layerwise`` names the classification probes' columns."""
    result = {}
    for layer in layers:
        scores = score(layer)
        if layer != "last":
            result.update({f"{prefix}_{key}@{layer}": value for key, value in scores.items()})
        if layer == "last" or len(layers) == 1:
            result.update({f"{prefix}_{key}": value for key, value in scores.items()})
    return result


def _confusion(logits_of, grids: torch.Tensor, masks: torch.Tensor, classes: int, batch: int) -> torch.Tensor:
    """The test split's confusion matrix: class scores [B, K, h, w] of each batch of ``grids``,
    upsampled bilinearly to the masks [B, S, S] and compared pixel by pixel."""
    confusion = torch.zeros(classes, classes, dtype=torch.long, device=masks.device)
    for x, y in zip(grids.split(batch), masks.split(batch)):
        scores = F.interpolate(logits_of(x), size=y.shape[-2:], mode="bilinear", align_corners=False)
        confusion += metrics.confusion_matrix(scores.argmax(1), y, classes, IGNORE)
    return confusion


class SegLinearProbe:
    """DINOv2's linear segmentation probe: per-channel normalisation, 1x1 linear layer, upsampled logits.

    Trained with AdamW for ``steps`` steps of ``batch_size`` images (cosine lr decay); reports
    ``seg_miou``, ``seg_pixel_acc`` and ``seg_train_loss`` (the mean over the last tenth of the steps:
    a probe that did not converge shows it). ``layer``: ``last``, a block index or ``all``.
    """

    needs_masks = True

    def __init__(self, layer: Layer = "last", steps: Annotated[int, Interval(ge=1, le=10_000_000)] = 500, lr: float = 1e-2,
                 weight_decay: float = 1e-4, batch_size: Annotated[int, Interval(ge=1, le=65_536)] = 64):
        check_layer(layer)
        if steps < 1 or batch_size < 1 or not lr > 0 or weight_decay < 0:
            raise ValueError(f"need steps >= 1, batch_size >= 1, lr > 0, weight_decay >= 0; got {steps}, "
                             f"{batch_size}, {lr}, {weight_decay}")
        self.layer, self.steps, self.lr, self.weight_decay, self.batch_size = layer, steps, lr, weight_decay, batch_size

    def metric_columns(self) -> list[MetricColumn]:
        return _columns("seg", "seg. linear", self.layer, loss=True)

    def __call__(self, context: ProbeContext) -> dict[str, float]:
        return scored_layers("seg", probe_layers(context, self.layer), lambda layer: self.score(context, layer))

    def score(self, context: ProbeContext, layer: int | str) -> dict[str, float]:
        train, train_masks = context.dense("train", layer)
        test, test_masks = context.dense("test", layer)
        classes = context.train.mask_classes
        mean, std = channel_stats(train, 1)
        head = nn.Conv2d(train.shape[1], classes, kernel_size=1).to(context.device)

        def loss_of(index: torch.Tensor) -> torch.Tensor:
            logits = F.interpolate(head((train[index].float() - mean) / std), size=train_masks.shape[-2:],
                                   mode="bilinear", align_corners=False)
            return F.cross_entropy(logits, train_masks[index].long(), ignore_index=IGNORE)

        tail = fit_head(head, loss_of, len(train), self.steps, self.lr, self.weight_decay, self.batch_size,
                        context.seed, context.device)
        with torch.no_grad():
            confusion = _confusion(lambda x: head((x.float() - mean) / std), test, test_masks, classes, self.batch_size)
            if layer == "last" and context.save_picture is not None:
                logits = F.interpolate(head((test[:PICTURED].float() - mean) / std), size=test_masks.shape[-2:],
                                       mode="bilinear", align_corners=False)
                images = context.test.images[:PICTURED] if hasattr(context.test, "images") else None
                if images is not None:
                    context.save_picture("segmentations", segmentation_picture(images, test_masks[:PICTURED],
                                                                               logits.argmax(1), classes))
        scores = metrics.segmentation_scores(confusion)
        return {"miou": scores["miou"], "pixel_acc": scores["pixel_acc"], "train_loss": tail}


class SegKNNProbe:
    """Hummingbird's nearest-neighbour segmentation: label transfer from a bank of train patch features.

    The bank holds up to ``memory_size`` train patches (a seeded random sample), each its L2-normalised
    feature and the share of its pixels in each class; a test patch gets the mean of its ``k`` nearest
    (cosine) patches' shares, weighted by softmax(similarity / ``temperature``); the shares are
    upsampled bilinearly to the pixels. Reports ``seg_knn_miou`` and ``seg_knn_pixel_acc``.
    """

    needs_masks = True

    def __init__(self, layer: Layer = "last", k: Annotated[int, Interval(ge=1, le=10_000)] = 30, temperature: float = 0.02,
                 memory_size: Annotated[int, Interval(ge=1, le=1_000_000)] = 20_000):
        check_layer(layer)
        if k < 1 or memory_size < 1 or not temperature > 0:
            raise ValueError(f"need k >= 1, memory_size >= 1, temperature > 0; got {k}, {memory_size}, {temperature}")
        self.layer, self.k, self.temperature, self.memory_size = layer, k, temperature, memory_size

    def metric_columns(self) -> list[MetricColumn]:
        return _columns("seg_knn", "seg. k-NN", self.layer, loss=False)

    def __call__(self, context: ProbeContext) -> dict[str, float]:
        return scored_layers("seg_knn", probe_layers(context, self.layer), lambda layer: self.score(context, layer))

    @torch.no_grad()
    def score(self, context: ProbeContext, layer: int | str) -> dict[str, float]:
        train, train_masks = context.dense("train", layer)
        test, test_masks = context.dense("test", layer)
        classes = context.train.mask_classes
        shares = _label_shares(train_masks, classes, train.shape[-2:])  # [N, K, h, w]
        bank = F.normalize(train.movedim(1, -1).reshape(-1, train.shape[1]).float(), dim=1)  # [N*h*w, D]
        bank_labels = shares.movedim(1, -1).reshape(-1, classes)
        labelled = bank_labels.sum(1) > 0  # patches with a labelled pixel
        bank, bank_labels = bank[labelled], bank_labels[labelled]
        if len(bank) > self.memory_size:
            generator = torch.Generator().manual_seed(context.seed)
            keep = torch.randperm(len(bank), generator=generator)[:self.memory_size].to(bank.device)
            bank, bank_labels = bank[keep], bank_labels[keep]
        k = min(self.k, len(bank))

        def class_scores(x: torch.Tensor) -> torch.Tensor:
            b, d, h, w = x.shape
            query = F.normalize(x.movedim(1, -1).reshape(-1, d).float(), dim=1)
            similarity, index = (query @ bank.T).topk(k, dim=1)
            weights = torch.softmax(similarity / self.temperature, dim=1)  # [M, k]
            votes = (weights.unsqueeze(-1) * bank_labels[index]).sum(1)  # [M, K]
            return votes.view(b, h, w, classes).movedim(-1, 1)

        per_batch = max(1, 512 // (test.shape[-2] * test.shape[-1]))  # 512 query patches at a time
        confusion = _confusion(class_scores, test, test_masks, classes, per_batch)
        scores = metrics.segmentation_scores(confusion)
        return {"miou": scores["miou"], "pixel_acc": scores["pixel_acc"]}


def fit_head(head: nn.Module, loss_of: Callable[[torch.Tensor], torch.Tensor], count: int, steps: int, lr: float,
             weight_decay: float, batch_size: int, seed: int, device: torch.device) -> float:
    """Train ``head`` with AdamW for ``steps`` steps (cosine lr decay), each on ``loss_of(index)`` of
    ``min(batch_size, count)`` train items drawn with replacement by a generator seeded with ``seed``;
    returns the mean loss over the last tenth of the steps (a head that did not converge shows it)."""
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    generator = torch.Generator(device=device).manual_seed(seed)
    losses = []
    with torch.enable_grad():
        for _ in range(steps):
            index = torch.randint(0, count, (min(batch_size, count),), generator=generator, device=device)
            loss = loss_of(index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.detach())
    return torch.stack(losses[-max(1, steps // 10):]).mean().item()


#: Test images drawn in a run's ``segmentations.png``.
PICTURED = 6


def segmentation_picture(images: torch.Tensor, truth: torch.Tensor, pred: torch.Tensor, classes: int) -> torch.Tensor:
    """uint8 images [n, C, S, S], true and predicted class maps [n, S, S] -> one picture float
    [3, H, W] in [0, 1]: a column per image; rows: the image, the truth, the prediction (a colour per
    class, ignored pixels white), enlarged to at least 96 px."""
    from torchvision.utils import make_grid

    palette = _palette(classes).to(images.device)
    original = images.float() / 255.0
    if original.shape[1] == 1:
        original = original.expand(-1, 3, -1, -1)

    def coloured(classes_map: torch.Tensor) -> torch.Tensor:
        return palette[classes_map.long().clamp_max(len(palette) - 1)].movedim(-1, 1)

    rows = torch.cat([original, coloured(truth), coloured(pred)])
    scale = max(1, 96 // images.shape[-1])
    rows = rows.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    return make_grid(rows.cpu(), nrow=len(images), padding=4, pad_value=1.0)


def _palette(classes: int) -> torch.Tensor:
    """float [classes + 1, 3]: black for class 0 (background), distinct hues after, white last (ignored)."""
    hues = torch.arange(classes - 1, dtype=torch.float32) / max(1, classes - 1)
    k = (torch.tensor([5.0, 3.0, 1.0]) + hues[:, None] * 6) % 6  # HSV -> RGB at full saturation and value
    colours = 1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return torch.cat([torch.zeros(1, 3), colours, torch.ones(1, 3)])


def _label_shares(masks: torch.Tensor, classes: int, grid: torch.Size) -> torch.Tensor:
    """masks uint8 [N, S, S] -> float [N, K, h, w]: each grid cell's share of pixels in each class
    (ignored pixels count in no class)."""
    one_hot = F.one_hot(masks.long().clamp_max(classes), classes + 1)[..., :classes]  # 255 -> the dropped column
    return F.adaptive_avg_pool2d(one_hot.movedim(-1, 1).float(), grid)


@hookimpl
def mimbench_register_probes(register) -> None:
    register("seg_linear", SegLinearProbe)
    register("seg_knn", SegKNNProbe)
