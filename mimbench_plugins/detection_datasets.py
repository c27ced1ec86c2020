"""``detection-folder``: your own detection data, images with COCO-style box annotations.

``<root>/<split>/images/<file>`` and ``<root>/<split>/annotations.json``, a COCO "instances" file:
``images`` (``id``, ``file_name``, ``width``, ``height``), ``annotations`` (``image_id``,
``category_id``, ``bbox`` = [x, y, width, height] in pixels) and ``categories`` (``id``, ``name``).
Images are resized to the suite's ``image_size`` (bilinear) and their boxes with them. Categories
become classes 0..K-1 in the order of their ids (the same ``categories`` in both splits). Each
image's label for the classification probes is the class of its largest box, or K ("no object")
for an image without one: ``num_classes`` is K + 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mimbench.plugin import TensorImageDataset, hookimpl

from mimbench_plugins.datasets import check_split
from mimbench_plugins.seg_datasets import open_image


def detection_folder(split: str, root: str, image_size: int = 64, channels: Literal[1, 3] = 3) -> TensorImageDataset:
    """Images of ``<root>/<split>/images`` with the boxes of ``<root>/<split>/annotations.json``
    (COCO format), resized to ``image_size``; ``channels`` 3 (RGB) or 1. One clear error per bad
    file or annotation: which file, which entry, what is allowed."""
    check_split(split)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    folder = Path(root) / split
    path = folder / "annotations.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (expected <root>/<split>/images/ and <root>/<split>/annotations.json, "
                                f"COCO format)")
    document = _read(path)
    classes = _category_classes(document, path)
    objects = _objects_per_image(document, classes, path)
    from PIL import Image

    images, boxes = [], []
    for entry in document["images"]:
        picture = open_image(folder / "images" / str(entry["file_name"]), "image")
        width, height = picture.size
        array = np.asarray(picture.convert("RGB" if channels == 3 else "L").resize((image_size, image_size),
                                                                                 Image.BILINEAR), dtype=np.uint8)
        images.append(torch.from_numpy(array.reshape(image_size, image_size, channels).copy()).permute(2, 0, 1))
        scale = torch.tensor([image_size / width, image_size / height] * 2)
        boxes.append([(cls, *(torch.tensor(box) * scale).clamp(0, image_size).tolist())
                      for cls, box in objects.get(entry["id"], [])])
    if not images:
        raise ValueError(f"{path}: 'images' is empty")
    padded = torch.full((len(images), max(1, max(len(b) for b in boxes)), 5), -1.0)
    labels = torch.full((len(images),), len(classes), dtype=torch.long)  # K: no object
    for i, rows in enumerate(boxes):
        rows = [row for row in rows if row[3] > row[1] and row[4] > row[2]]  # boxes of no area after resizing
        if rows:
            padded[i, :len(rows)] = torch.tensor(rows)
            labels[i] = max(rows, key=lambda r: (r[3] - r[1]) * (r[4] - r[2]))[0]
    return TensorImageDataset(torch.stack(images), labels, len(classes) + 1, boxes=padded, box_classes=len(classes))


def _read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON file ({type(exc).__name__}: {exc})") from None
    missing = [key for key in ("images", "annotations", "categories")
               if not isinstance(document, dict) or not isinstance(document.get(key), list)]
    if missing:
        raise ValueError(f"{path}: a COCO annotations file needs lists 'images', 'annotations' and 'categories'; "
                         f"'{missing[0]}' is missing or not a list")
    for i, entry in enumerate(document["images"]):
        if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("file_name"), str):
            raise ValueError(f"{path}: images[{i}] needs an 'id' and a 'file_name'")
    return document


def _category_classes(document: dict[str, Any], path: Path) -> dict[Any, int]:
    """Category id -> class 0..K-1, in the order of the ids."""
    ids = []
    for i, category in enumerate(document["categories"]):
        if not isinstance(category, dict) or not isinstance(category.get("id"), int):
            raise ValueError(f"{path}: categories[{i}] needs an int 'id'")
        ids.append(category["id"])
    if not ids or len(set(ids)) != len(ids):
        raise ValueError(f"{path}: 'categories' must list at least one category, each id once")
    return {category: index for index, category in enumerate(sorted(ids))}


def _objects_per_image(document: dict[str, Any], classes: dict[Any, int], path: Path) -> dict[Any, list]:
    """Image id -> [(class, [x0, y0, x1, y1])], in the file's order."""
    known = {entry["id"] for entry in document["images"]}
    objects: dict[Any, list] = {}
    for i, annotation in enumerate(document["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(annotation, dict):
            raise ValueError(f"{where} is not an object")
        if annotation.get("image_id") not in known:
            raise ValueError(f"{where}: image_id {annotation.get('image_id')!r} is not the id of any of 'images'")
        if annotation.get("category_id") not in classes:
            raise ValueError(f"{where}: category_id {annotation.get('category_id')!r} is not the id of any of "
                             f"'categories' ({', '.join(map(str, classes))})")
        box = annotation.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
                and box[2] > 0 and box[3] > 0 and box[0] >= 0 and box[1] >= 0):
            raise ValueError(f"{where}: bbox must be [x, y, width, height] in pixels, x and y >= 0, width and "
                             f"height > 0; got {box!r}")
        x, y, w, h = (float(v) for v in box)
        objects.setdefault(annotation["image_id"], []).append((classes[annotation["category_id"]], [x, y, x + w, y + h]))
    return objects


@hookimpl
def mimbench_register_datasets(register) -> None:
    register("detection-folder", detection_folder)
