"""Segmentation datasets for users with real data: Pascal VOC 2012 (through torchvision) and a
folder of images with same-named PNG label maps. Both are resized to the suite's image size
(images bilinear, label maps nearest) and held in memory with their masks (255 = no label).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Iterable, Literal

import numpy as np
import torch

from mimbench.plugin import Interval, TensorImageDataset, hookimpl, one_line

from mimbench_plugins.datasets import check_split

IGNORE = 255
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Pascal VOC's 21 classes: background and 20 objects; its label maps mark object boundaries 255.
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


def _as_dataset(pairs: Iterable[tuple[object, object, str]], image_size: int, channels: int, classes: int,
                ignore_index: int, background: int | None = None) -> TensorImageDataset:
    """(PIL image, PIL label map, name) pairs -> images uint8 [N, C, S, S], masks [N, S, S] (255 =
    ignored) and, per image, its most frequent labelled class as its label (``background`` counted
    only in an image that has nothing else)."""
    from PIL import Image

    images, masks = [], []
    for image, label_map, name in pairs:
        if image.size != label_map.size:
            raise ValueError(f"{name}: the image is {image.size[0]}x{image.size[1]} but its label map "
                             f"{label_map.size[0]}x{label_map.size[1]}")
        picture = image.convert("RGB" if channels == 3 else "L").resize((image_size, image_size), Image.BILINEAR)
        labels = np.asarray(label_map.resize((image_size, image_size), Image.NEAREST), dtype=np.int64)
        if labels.ndim != 2:
            raise ValueError(f"{name}: a label map must have one channel (a class per pixel), got {labels.shape}")
        labels = np.where(labels == ignore_index, IGNORE, labels)
        bad = labels[(labels != IGNORE) & (labels >= classes)]
        if bad.size:
            raise ValueError(f"{name}: label {int(bad[0])} is not a class of 0..{classes - 1} nor the ignore "
                             f"index {ignore_index}")
        array = np.asarray(picture, dtype=np.uint8)
        images.append(torch.from_numpy(array.reshape(image_size, image_size, channels).copy()).permute(2, 0, 1))
        masks.append(torch.from_numpy(labels.astype(np.uint8)))
    if not images:
        raise ValueError("no images found")
    masks_tensor = torch.stack(masks)
    counts = torch.nn.functional.one_hot(masks_tensor.long().clamp_max(classes), classes + 1)[..., :classes]
    counts = counts.flatten(1, 2).sum(1).double()  # [N, classes]
    if background is not None:
        counts[:, background] *= 1e-9  # wins only where nothing else is labelled
    return TensorImageDataset(torch.stack(images), counts.argmax(1), classes, masks_tensor, classes)


def voc_segmentation(split: str, image_size: int = 128, root: str | None = None, download: bool = False,
                     year: Literal["2012"] = "2012") -> TensorImageDataset:
    """Pascal VOC 2012 semantic segmentation through torchvision: 21 classes (background + 20),
    object boundaries ignored (255). ``train`` is VOC's train set (1,464 images), ``test`` its val
    set (1,449). ``root`` holds ``VOCdevkit/VOC2012`` (default ``~/.cache/mimbench``);
    ``download: true`` fetches it with torchvision (2 GB, needs a network). Resized to ``image_size``.
    """
    check_split(split)
    from torchvision.datasets import VOCSegmentation

    folder = Path(root).expanduser() if root else Path("~/.cache/mimbench").expanduser()
    try:
        voc = VOCSegmentation(str(folder), year=year, image_set="train" if split == "train" else "val",
                              download=download)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        raise FileNotFoundError(f"Pascal VOC {year} not found under {folder / 'VOCdevkit'} ({exc}); point 'root' at "
                                f"the folder holding VOCdevkit/, or set 'download: true'") from None
    pairs = ((image, label, voc.images[i]) for i, (image, label) in enumerate(voc))
    return _as_dataset(pairs, image_size, 3, len(VOC_CLASSES), IGNORE, background=0)


def segmentation_folder(split: str, root: str, classes: Annotated[int, Interval(ge=2, le=254)], image_size: int = 64,
                        channels: Literal[1, 3] = 3, ignore_index: Annotated[int, Interval(ge=0, le=255)] = 255) -> TensorImageDataset:
    """Your own segmentation data: ``<root>/<split>/images/<name>.<png|jpg|...>`` and, for each,
    ``<root>/<split>/masks/<name>.png``, a one-channel PNG whose values are classes 0..``classes``-1
    (``ignore_index``: no label). Resized to ``image_size``; ``channels`` 3 (RGB) or 1."""
    check_split(split)

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if not 2 <= classes < IGNORE:
        raise ValueError(f"classes must be in 2..{IGNORE - 1}, got {classes}")
    images_dir, masks_dir = Path(root) / split / "images", Path(root) / split / "masks"
    if not images_dir.is_dir():
        raise FileNotFoundError(f"{images_dir} not found (expected <root>/<split>/images and <root>/<split>/masks)")
    files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    missing = [p.name for p in files if not (masks_dir / f"{p.stem}.png").is_file()]
    if missing:
        raise FileNotFoundError(f"{masks_dir / (Path(missing[0]).stem + '.png')} not found: every image needs a "
                                f"label map of the same name ({len(missing)} missing)")
    pairs = ((open_image(p, "image"), open_image(masks_dir / f"{p.stem}.png", "label map"), str(p)) for p in files)
    return _as_dataset(pairs, image_size, channels, classes, ignore_index)


def open_image(path: Path, what: str):
    """``path`` opened with PIL and decoded; a file PIL cannot read (not an image, truncated) is a
    ValueError that names it and says why (exit 2), not PIL's bare exception."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
        return image
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: cannot read the {what} ({type(exc).__name__}: {one_line(exc)[:160]})") from None


@hookimpl
def mimbench_register_datasets(register) -> None:
    register("voc", voc_segmentation)
    register("segmentation-folder", segmentation_folder)
