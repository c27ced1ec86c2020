"""The COCO box metric, computed by pycocotools' ``COCOeval`` on COCO-format documents.

A detection probe turns its test boxes into two documents, written to the run folder as they are
scored: the ground truth as COCO annotations (``detections_gt.json``) and the detections as COCO
results (``detections.json``). Anyone can re-score them::

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    truth = COCO("detections_gt.json")
    evaluation = COCOeval(truth, truth.loadRes("detections.json"), "bbox")
    evaluation.evaluate(); evaluation.accumulate(); evaluation.summarize()
    evaluation.stats[0], evaluation.stats[1]  # det_map (AP@[.5:.95]), det_map50 (AP@.5)

Image ids are the test images' indices + 1, category ids the classes + 1; boxes are [x, y, width,
height] in pixels of the images the encoder saw, rounded to 1/1000 of a pixel, scores to 1e-6.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any, Sequence

import torch


def ground_truth(boxes: torch.Tensor, image_size: int, class_names: Sequence[str]) -> dict[str, Any]:
    """boxes float [N, M, 5] (class, x0, y0, x1, y1; class -1 pads) -> a COCO annotations document."""
    images = [{"id": i + 1, "width": image_size, "height": image_size} for i in range(boxes.shape[0])]
    annotations = []
    for i, rows in enumerate(boxes.tolist()):
        for cls, x0, y0, x1, y1 in rows:
            if cls < 0:
                continue
            box = _xywh(x0, y0, x1, y1)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(cls) + 1,
                                "bbox": box, "area": round(box[2] * box[3], 3), "iscrowd": 0})
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def results(detections: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> list[dict[str, Any]]:
    """Per test image (in order), its detections: boxes float [K, 4] (x0, y0, x1, y1), scores [K] and
    classes int [K] -> COCO results."""
    out = []
    for i, (boxes, scores, classes) in enumerate(detections):
        for (x0, y0, x1, y1), score, cls in zip(boxes.tolist(), scores.tolist(), classes.tolist()):
            out.append({"image_id": i + 1, "category_id": int(cls) + 1, "bbox": _xywh(x0, y0, x1, y1),
                        "score": round(float(score), 6)})
    return out


def average_precision(truth: dict[str, Any], found: list[dict[str, Any]]) -> dict[str, float]:
    """COCOeval's ``bbox`` summary of ``found`` against ``truth``: ``map`` (AP@[.5:.95], area all, 100
    detections per image), ``map50``, ``map75``. No detection at all: 0.0 where there are objects
    (pycocotools cannot load an empty result list), NaN where there are none."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not truth["annotations"]:
        return {"map": float("nan"), "map50": float("nan"), "map75": float("nan")}
    if not found:
        return {"map": 0.0, "map50": 0.0, "map75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary table
        coco = COCO()
        coco.dataset = copy.deepcopy(truth)  # pycocotools adds fields to what it is given
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(copy.deepcopy(found)), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {"map": float(evaluation.stats[0]), "map50": float(evaluation.stats[1]), "map75": float(evaluation.stats[2])}


def _xywh(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)]
