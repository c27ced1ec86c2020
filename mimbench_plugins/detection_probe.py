"""``detection``: object detection from the frozen encoder's feature grid (an FCOS-style probe).

The grid of unmasked images (``ProbeContext.grids``: float16 ``[N, D, h, w]``) is normalised per
channel with the train split's statistics and read by one convolution (``kernel`` x ``kernel``, no
hidden layer: a linear head) that gives, at every grid cell, K class logits, 4 box distances and a
centre-ness logit (Tian et al. 2019, FCOS, anchor-free):

- a cell is a positive of the object whose box centre lies within ``radius`` cells of the cell's
  centre on both axes (FCOS's centre sampling; of several, the smallest box), every other cell
  background. FCOS uses 1.5 with a deep head; a linear head reads a cell's own neighbourhood only,
  and 1.0 (the cells around the centre) found solid and hollow squares in raw pixels at AP@[.5:.95]
  0.81-0.87 over 4 initialisations where 1.5 reached 0.43-0.47 (``tests/test_detection.py``'s
  squares, not any suite's data);
- the distances from the cell centre to the box's left, top, right and bottom edges are
  ``stride * exp(t)``; losses: sigmoid focal loss over all cells (per positive), GIoU loss of the
  positives' boxes, binary cross-entropy of their centre-ness;
- at test time a cell scores each class sqrt(sigmoid(class) * sigmoid(centre-ness)); candidates over
  ``score_threshold`` go through class-wise NMS (``torchvision.ops.batched_nms``, IoU ``nms_iou``),
  the ``max_detections`` best per image are kept.

Scored with pycocotools' COCOeval (:mod:`mimbench_plugins.coco_metric`): ``det_map`` (AP@[.5:.95])
and ``det_map50`` (AP@.5). The run folder gets ``detections.json`` (COCO results) and
``detections_gt.json`` (COCO annotations) of the scored layer's test detections, and
``detections.png``: true (white) and predicted (coloured by class) boxes on fixed test canvases.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, generalized_box_iou_loss, nms, sigmoid_focal_loss

from mimbench.plugin import Interval, Layer, MetricColumn, ProbeContext, channel_stats, check_layer, hookimpl

from mimbench_plugins import coco_metric
from mimbench_plugins.seg_probes import fit_head, probe_layers, scored_layers

#: Test canvases drawn in a run's ``detections.png``, and the score a drawn detection needs.
PICTURED, PICTURED_SCORE = 6, 0.3


class DetectionProbe:
    """An anchor-free (FCOS-style) linear detection head on the frozen feature grid; COCO box AP.

    Trained with AdamW for ``steps`` steps of ``batch_size`` images (cosine lr decay) on the labelled
    train split (or its ``eval.labels_per_class`` subset). ``layer``: ``last``, a block index or ``all``.
    """

    needs_boxes = True

    def __init__(self, layer: Layer = "last", steps: Annotated[int, Interval(ge=1, le=10_000_000)] = 1000,
                 lr: float = 3e-3, weight_decay: float = 1e-4,
                 batch_size: Annotated[int, Interval(ge=1, le=65_536)] = 64,
                 kernel: Annotated[int, Interval(ge=1, le=7)] = 3, radius: float = 1.0,
                 score_threshold: float = 0.05, nms_iou: float = 0.6,
                 max_detections: Annotated[int, Interval(ge=1, le=1000)] = 100):
        check_layer(layer)
        if kernel % 2 != 1:
            raise ValueError(f"kernel must be odd (the head keeps the grid's size), got {kernel}")
        if not lr > 0 or weight_decay < 0 or not radius > 0 or not 0 <= score_threshold < 1 or not 0 < nms_iou <= 1:
            raise ValueError(f"need lr > 0, weight_decay >= 0, radius > 0, 0 <= score_threshold < 1, 0 < nms_iou <= 1; "
                             f"got {lr}, {weight_decay}, {radius}, {score_threshold}, {nms_iou}")
        self.layer, self.steps, self.lr, self.weight_decay, self.batch_size = layer, steps, lr, weight_decay, batch_size
        self.kernel, self.radius, self.score_threshold = kernel, radius, score_threshold
        self.nms_iou, self.max_detections = nms_iou, max_detections

    def metric_columns(self) -> list[MetricColumn]:
        return [MetricColumn("det_map", "det. mAP", "detection AP@[.5:.95] (COCO, fraction)", "accuracy"),
                MetricColumn("det_map50", "det. AP50", "detection AP@.5 (COCO, fraction)", "accuracy"),
                MetricColumn("det_map75", "det. AP75", "detection AP@.75 (COCO, fraction)", "accuracy",
                             headline=False),
                MetricColumn("det_train_loss", "det. train loss", "detection final train loss (focal + GIoU + "
                             "centre-ness)", "other", headline=False, digits=4)]

    def __call__(self, context: ProbeContext) -> dict[str, float]:
        return scored_layers("det", probe_layers(context, self.layer), lambda layer: self.score(context, layer))

    def score(self, context: ProbeContext, layer: int | str) -> dict[str, float]:
        train, test = context.grids("train", layer), context.grids("test", layer)
        train_boxes, test_boxes = context.boxes("train"), context.boxes("test")
        classes, size = context.train.box_classes, context.train.image_size
        mean, std = channel_stats(train, 1)
        head = nn.Conv2d(train.shape[1], classes + 5, self.kernel, padding=self.kernel // 2).to(context.device)
        nn.init.constant_(head.bias[:classes], -math.log(99))  # FCOS's prior: 1% of cells hold an object
        targets = fcos_targets(train_boxes, train.shape[-2:], size, self.radius)
        tail = fit_head(head, lambda index: fcos_loss(head((train[index].float() - mean) / std), targets.subset(index),
                                                      size),
                        len(train), self.steps, self.lr, self.weight_decay, self.batch_size, context.seed, context.device)
        with torch.no_grad():
            found = [detection for x in test.split(self.batch_size)
                     for detection in self.decode(head((x.float() - mean) / std), size)]
        truth = coco_metric.ground_truth(test_boxes.cpu(), size, [str(k) for k in range(classes)])
        results = coco_metric.results(found)
        scores = coco_metric.average_precision(truth, results)
        if layer == "last" or isinstance(self.layer, int):
            if context.save_json is not None:
                context.save_json("detections", results)
                context.save_json("detections_gt", truth)
            if context.save_picture is not None and hasattr(context.test, "images"):
                context.save_picture("detections", detection_picture(context.test.images[:PICTURED],
                                                                     test_boxes[:PICTURED], found[:PICTURED]))
        return {"map": scores["map"], "map50": scores["map50"], "map75": scores["map75"], "train_loss": tail}

    @torch.no_grad()
    def decode(self, out: torch.Tensor, size: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Head outputs [B, K + 5, h, w] -> per image: boxes float [k, 4] (x0, y0, x1, y1), scores [k],
        classes int64 [k], the best first."""
        classes = out.shape[1] - 5
        boxes = cell_boxes(out[:, classes:classes + 4].float(), size)  # [B, h*w, 4]
        scores = (torch.sigmoid(out[:, :classes].float()) * torch.sigmoid(out[:, -1:].float())).sqrt()
        scores = scores.flatten(2).transpose(1, 2)  # [B, h*w, K]
        detections = []
        for image_boxes, image_scores in zip(boxes, scores):
            cell, cls = (image_scores > self.score_threshold).nonzero(as_tuple=True)
            kept_scores = image_scores[cell, cls]
            if len(kept_scores) > 1000:  # the best 1000 candidates go through NMS
                best = kept_scores.topk(1000).indices
                cell, cls, kept_scores = cell[best], cls[best], kept_scores[best]
            candidates = image_boxes[cell].clamp(0, size)
            keep = batched_nms(candidates, kept_scores, cls, self.nms_iou)[:self.max_detections]
            detections.append((candidates[keep].cpu(), kept_scores[keep].cpu(), cls[keep].cpu()))
        return detections


class Targets:
    """FCOS's per-cell targets of a split: ``classes`` int64 [N, h, w] (-1: background) and ``boxes``
    float [N, h, w, 4] (x0, y0, x1, y1 of the cell's object; anything where background)."""

    def __init__(self, classes: torch.Tensor, boxes: torch.Tensor):
        self.classes, self.boxes = classes, boxes

    def subset(self, index: torch.Tensor) -> "Targets":
        return Targets(self.classes[index], self.boxes[index])


def cell_centres(grid: tuple[int, int], size: int, device: torch.device) -> torch.Tensor:
    """The pixel centres of a h x w grid's cells on a ``size`` px image, float [h*w, 2] (x, y)."""
    h, w = grid
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * (size / h)
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * (size / w)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)


def cell_boxes(distances: torch.Tensor, size: int) -> torch.Tensor:
    """Box distances [B, 4, h, w] (log of left, top, right, bottom in strides) -> boxes [B, h*w, 4]."""
    b, _, h, w = distances.shape
    centres = cell_centres((h, w), size, distances.device)  # [h*w, 2]
    stride = torch.tensor([size / w, size / h, size / w, size / h], device=distances.device)
    ltrb = distances.clamp(max=math.log(4 * max(h, w))).exp().flatten(2).transpose(1, 2) * stride
    return torch.cat([centres - ltrb[..., :2], centres + ltrb[..., 2:]], dim=-1)


def fcos_targets(boxes: torch.Tensor, grid: tuple[int, int] | torch.Size, size: int, radius: float) -> Targets:
    """Each cell's object: the smallest of the boxes [N, M, 5] whose centre is within ``radius``
    cells of the cell's centre (both axes), or background."""
    h, w = grid
    centres = cell_centres((h, w), size, boxes.device)  # [h*w, 2]
    valid = boxes[..., 0] >= 0  # [N, M]
    box_centres = (boxes[..., 1:3] + boxes[..., 3:5]) / 2  # [N, M, 2]
    reach = torch.tensor([radius * size / w, radius * size / h], device=boxes.device)
    near = ((centres[None, :, None] - box_centres[:, None]).abs() < reach).all(-1) & valid[:, None]  # [N, h*w, M]
    area = (boxes[..., 3] - boxes[..., 1]) * (boxes[..., 4] - boxes[..., 2])
    area = torch.where(near, area[:, None], torch.inf)
    smallest = area.argmin(-1)  # [N, h*w]
    has = near.any(-1)
    chosen = torch.gather(boxes, 1, smallest[..., None].expand(-1, -1, 5))  # [N, h*w, 5]
    classes = torch.where(has, chosen[..., 0].long(), -1).view(-1, h, w)
    return Targets(classes, chosen[..., 1:].reshape(-1, h, w, 4))


def fcos_loss(out: torch.Tensor, targets: Targets, size: int) -> torch.Tensor:
    """Focal loss of the class logits over every cell (per positive cell), GIoU loss of the positive
    cells' boxes and binary cross-entropy of their centre-ness. out: [B, K + 5, h, w]."""
    classes = out.shape[1] - 5
    positive = targets.classes >= 0  # [B, h, w]
    wanted = F.one_hot(targets.classes.clamp_min(0), classes).float() * positive[..., None]
    count = positive.sum().clamp_min(1)
    loss = sigmoid_focal_loss(out[:, :classes].permute(0, 2, 3, 1), wanted, reduction="sum") / count
    if positive.any():
        predicted = cell_boxes(out[:, classes:classes + 4], size).view(*positive.shape, 4)[positive]
        truth = targets.boxes[positive]
        loss = loss + generalized_box_iou_loss(predicted, truth, reduction="mean")
        centres = cell_centres(positive.shape[1:], size, out.device).view(*positive.shape[1:], 2)
        centres = centres.expand(positive.shape[0], -1, -1, -1)[positive]
        ltrb = torch.cat([centres - truth[:, :2], truth[:, 2:] - centres], dim=1).clamp_min(0)
        centreness = ((ltrb[:, [0, 1]].minimum(ltrb[:, [2, 3]]) / ltrb[:, [0, 1]].maximum(ltrb[:, [2, 3]]).clamp_min(1e-6))
                      .prod(1).sqrt())
        logits = out[:, -1][positive]
        loss = loss + F.binary_cross_entropy_with_logits(logits, centreness)
    return loss


def detection_picture(images: torch.Tensor, truth: torch.Tensor,
                      found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """uint8 images [n, C, S, S], their true boxes [n, M, 5] and detections -> one picture float
    [3, H, W] in [0, 1]: each image enlarged to at least 160 px, true boxes white; the detections
    that survive class-agnostic NMS (IoU 0.5) and score over :data:`PICTURED_SCORE`, at most twice
    as many as true boxes, coloured by class."""
    from torchvision.utils import draw_bounding_boxes, make_grid

    scale = max(1, 160 // images.shape[-1])
    drawn = []
    for image, rows, (boxes, scores, classes) in zip(images.cpu(), truth.cpu(), found):
        picture = image.expand(3, -1, -1).repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        real = rows[rows[:, 0] >= 0]
        picture = draw_bounding_boxes(picture, real[:, 1:] * scale, colors="white", width=1)
        shown = nms(boxes, scores, 0.5)  # one box per place, whatever its class: a readable picture
        shown = shown[scores[shown] > PICTURED_SCORE][:max(1, 2 * len(real))]
        if len(shown):
            colours = [_colour(int(k)) for k in classes[shown]]
            picture = draw_bounding_boxes(picture, boxes[shown] * scale, colors=colours, width=2)
        drawn.append(picture.float() / 255)
    return make_grid(torch.stack(drawn), nrow=len(drawn), padding=4, pad_value=1.0)


def _colour(k: int) -> tuple[int, int, int]:
    hue = (k * 0.13) % 1.0
    r, g, b = (max(0.0, min(1.0, abs((hue * 6 + shift) % 6 - 3) - 1)) for shift in (0, 4, 2))
    return int(255 * r), int(255 * g), int(255 * b)


@hookimpl
def mimbench_register_probes(register) -> None:
    register("detection", DetectionProbe)
