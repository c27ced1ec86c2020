"""Image data as uint8 tensors: held on the device, or streamed when too large.

Datasets that fit are moved to the device once and batched by indexing a device
tensor: no DataLoader workers, no host-to-device copy per step. Larger ones stream
through a DataLoader with workers and pinned memory (``StreamedImages``); both
offer the same ``batches(batch_size, generator)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from mimbench.protocols import capability


#: The label of a pixel a segmentation mask leaves out (unlabelled, a boundary): no loss, no score.
IGNORE_INDEX = 255


class TensorImageDataset(Dataset):
    """A labelled image dataset kept in memory.

    Args:
        images: uint8 Tensor[N, C, H, W], pixel values 0..255.
        labels: int64 Tensor[N].
        num_classes: number of label classes.
        masks: optional uint8 Tensor[N, H, W], a segmentation class per pixel (0..mask_classes - 1,
            ``IGNORE_INDEX`` = 255 for pixels without a label): a dataset with masks feeds dense probes.
        mask_classes: the number of segmentation classes (needed with ``masks``).
        boxes: optional float32 Tensor[N, M, 5], each image's objects as rows (class, x0, y0, x1, y1):
            the object's class (0..box_classes - 1) and its box in pixels of the image (pixel edges:
            a box around columns 3..5 has x0 = 3, x1 = 6); rows of class -1 pad an image with fewer
            than M objects. A dataset with boxes feeds detection probes (:func:`check_boxes`).
        box_classes: the number of object classes (needed with ``boxes``).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 masks: torch.Tensor | None = None, mask_classes: int | None = None,
                 boxes: torch.Tensor | None = None, box_classes: int | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if masks is not None:
            n, _, h, w = images.shape
            if masks.dtype != torch.uint8 or tuple(masks.shape) != (n, h, w):
                raise ValueError(f"masks must be uint8 [{n}, {h}, {w}], got {masks.dtype} {tuple(masks.shape)}")
            if not mask_classes or mask_classes < 2 or mask_classes >= IGNORE_INDEX:
                raise ValueError(f"mask_classes must be in 2..{IGNORE_INDEX - 1} with masks, got {mask_classes!r}")
        self.images = images
        self.labels = labels.long()
        self.num_classes = num_classes
        if boxes is not None:
            check_boxes(boxes, box_classes, images.shape[0], images.shape[-1], images.shape[-2])
        self.masks, self.mask_classes = masks, mask_classes
        self.boxes, self.box_classes = boxes, box_classes

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].float() / 255.0, int(self.labels[index])


def check_boxes(boxes: torch.Tensor, box_classes: int | None, count: int, width: int, height: int) -> None:
    """Raise ValueError unless ``boxes`` is float [count, M, 5] of (class, x0, y0, x1, y1) rows, each
    a class of 0..box_classes - 1 with 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, or a
    padding row of class -1."""
    if not boxes.is_floating_point() or boxes.ndim != 3 or boxes.shape[0] != count or boxes.shape[2] != 5:
        raise ValueError(f"boxes must be float [{count}, M, 5] (class, x0, y0, x1, y1), got {boxes.dtype} "
                         f"{tuple(boxes.shape)}")
    if not box_classes or box_classes < 1:
        raise ValueError(f"box_classes must be >= 1 with boxes, got {box_classes!r}")
    real = boxes[boxes[..., 0] >= 0]
    bad = (real[:, 0] != real[:, 0].round()) | (real[:, 0] >= box_classes) | (real[:, 1] < 0) | (real[:, 2] < 0) \
        | (real[:, 3] > width) | (real[:, 4] > height) | (real[:, 1] >= real[:, 3]) | (real[:, 2] >= real[:, 4])
    padding = boxes[..., 0] < 0
    if bad.any() or (padding & (boxes[..., 0] != -1)).any():
        row = real[bad][0].tolist() if bad.any() else boxes[padding & (boxes[..., 0] != -1)][0].tolist()
        raise ValueError(f"box {row}: a box is (class in 0..{box_classes - 1}, x0, y0, x1, y1) with 0 <= x0 < x1 <= "
                         f"{width} and 0 <= y0 < y1 <= {height}, or a padding row of class -1")


#: One batch: uint8 images [B, C, S, S] and int64 labels [B], both on the device.
Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class DeviceImages:
    """One split held on the device: uint8 images [N, C, S, S] and labels [N], and for a dataset
    that has them, segmentation masks uint8 [N, S, S] of ``mask_classes`` classes (255: ignored).
    Batches are taken by indexing: no DataLoader, no host-to-device copy per step."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    masks: torch.Tensor | None = None
    mask_classes: int | None = None
    #: For a dataset that has them, its objects: float [N, M, 5] (class, x0, y0, x1, y1) in pixels
    #: of the held images, class -1 padding (see :class:`TensorImageDataset`).
    boxes: torch.Tensor | None = None
    box_classes: int | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """In order and all of them; or, with ``generator``, shuffled and only full batches."""
        if generator is None:
            yield from zip(self.images.split(batch_size), self.labels.split(batch_size))
            return
        order = torch.randperm(len(self), generator=generator, device=self.images.device)
        for i in range(len(self) // batch_size):
            index = order[i * batch_size:(i + 1) * batch_size]
            yield self.images[index], self.labels[index]

    def head(self, count: int) -> torch.Tensor:
        """The first ``count`` images, uint8 [count, C, S, S]."""
        return self.images[:count]

    def all_labels(self) -> torch.Tensor:
        """Every label of the split, int64 [N]."""
        return self.labels

    def subset(self, indices: torch.Tensor) -> "DeviceImages":
        """The images at ``indices`` (int64 [K]), in that order."""
        indices = indices.to(self.images.device)
        masks = None if self.masks is None else self.masks[indices]
        boxes = None if self.boxes is None else self.boxes[indices.to(self.boxes.device)]
        return DeviceImages(self.images[indices], self.labels[indices], self.num_classes, masks, self.mask_classes,
                            boxes, self.box_classes)

    def mask_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Images uint8 [B, C, S, S] with their masks uint8 [B, S, S], in order; ValueError without masks."""
        if self.masks is None:
            raise ValueError("this split has no segmentation masks")
        yield from zip(self.images.split(batch_size), self.masks.split(batch_size))


class StreamedImages:
    """One split too large for the device: read by a DataLoader (worker processes, pinned
    memory), quantised to uint8 and resized to ``image_size`` on the device, batch by batch.
    Same interface as ``DeviceImages`` (``batches``, ``head``, ``len``)."""

    def __init__(self, dataset: Dataset, image_size: int, device: torch.device, workers: int):
        self.dataset, self.device, self.workers = dataset, device, workers
        self.num_classes = int(getattr(dataset, "num_classes"))
        self.masks, self.mask_classes = None, None  # dense probes need the split held on the device
        self.boxes, self.box_classes = None, None  # and so do detection probes
        self.channels = int(dataset[0][0].shape[0])
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        shuffle = generator is not None
        order = None
        if shuffle:  # the loader shuffles on the host, from a seed drawn from the run's generator
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
            order = torch.Generator().manual_seed(seed)
        loader = DataLoader(self.dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle,
                            generator=order, num_workers=self.workers, pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        for images, labels in loader:
            images = images.to(self.device, non_blocking=True).clamp(0, 1).mul(255).round().to(torch.uint8)
            if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
                images = resize_uint8(images, self.image_size)
            yield images, torch.as_tensor(labels).long().to(self.device, non_blocking=True)

    def head(self, count: int) -> torch.Tensor:
        return next(self.batches(count))[0][:count]

    def all_labels(self) -> torch.Tensor:
        """Every label of the split, int64 [N] on the CPU (the dataset's ``labels`` when it has them)."""
        labels = getattr(self.dataset, "labels", None)
        if isinstance(labels, torch.Tensor) and labels.shape == (len(self.dataset),):
            return labels.long().cpu()
        return torch.tensor([int(self.dataset[i][1]) for i in range(len(self.dataset))])

    def subset(self, indices: torch.Tensor) -> "StreamedImages":
        """The images at ``indices`` (int64 [K]), in that order, still streamed."""
        subset = Subset(self.dataset, indices.tolist())
        subset.num_classes = self.num_classes  # type: ignore[attr-defined]
        return StreamedImages(subset, self.image_size, self.device, self.workers)


#: A split of images the core can batch: held on the device, or streamed.
Images = DeviceImages | StreamedImages


def class_balanced_indices(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """``per_class`` indices of each class present in ``labels`` (int64 [N]), drawn without
    replacement by a CPU generator seeded with ``seed``; int64 [per_class * classes], sorted.

    A function of the labels, ``per_class`` and ``seed`` only: every run and baseline of a seed
    gets the same subset. Raises ValueError when a class has fewer than ``per_class`` images.
    """
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in labels.unique(sorted=True).tolist():
        members = (labels == label).nonzero().squeeze(1)
        if len(members) < per_class:
            raise ValueError(f"labels_per_class {per_class}: class {label} has only {len(members)} labelled "
                             f"train images")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


@dataclass
class Normalizer:
    """Per-channel normalisation measured on the train split: x -> (x - mean) / std."""

    mean: torch.Tensor  # [C], in [0, 1] pixel units
    std: torch.Tensor  # [C]

    @classmethod
    def measure(cls, data: "Images") -> "Normalizer":
        """Measure mean and std per channel of a split's uint8 images, in one pass."""
        sums = squares = None
        count = 0
        for chunk, _ in data.batches(4096):
            pixels = chunk.double().div(255.0)
            if sums is None:
                sums = torch.zeros(pixels.shape[1], dtype=torch.float64, device=pixels.device)
                squares = torch.zeros_like(sums)
            sums += pixels.sum(dim=(0, 2, 3))
            squares += pixels.pow(2).sum(dim=(0, 2, 3))
            count += pixels.shape[0] * pixels.shape[2] * pixels.shape[3]
        mean = sums / count
        std = (squares / count - mean.pow(2)).clamp_min(1e-12).sqrt()
        return cls(mean.float(), std.float())

    def __call__(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] -> normalised float32 [B, C, H, W]."""
        pixels = images_uint8.float().div_(255.0)
        return (pixels - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    def to_pixels(self, normalised: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation: float [B, C, H, W] -> [0, 1] pixel space (unclamped)."""
        return normalised * self.std.view(1, -1, 1, 1) + self.mean.view(1, -1, 1, 1)

    def to(self, device: torch.device) -> "Normalizer":
        return Normalizer(self.mean.to(device), self.std.to(device))


def load_images(dataset: Dataset, image_size: int, device: torch.device, limit_bytes: int | None,
                workers: int) -> Images:
    """A split on ``device`` when its uint8 images fit in ``limit_bytes`` (None: no limit),
    else streamed through a DataLoader with ``workers`` processes."""
    if limit_bytes is not None and len(dataset) > 0:
        channels = dataset.images.shape[1] if isinstance(dataset, TensorImageDataset) else dataset[0][0].shape[0]
        if len(dataset) * channels * image_size * image_size > limit_bytes:
            return StreamedImages(dataset, image_size, device, workers)
    return to_device_images(dataset, image_size, device)


def to_device_images(dataset: Dataset, image_size: int, device: torch.device) -> DeviceImages:
    """Hold a whole split on ``device`` as uint8 [N, C, image_size, image_size].

    A ``TensorImageDataset`` is taken as it is; any other dataset of
    ``(float image in [0, 1], label)`` pairs is read once and quantised to uint8.
    Images of another size are resized (bilinear, antialiased) once, here.
    """
    num_classes = int(getattr(dataset, "num_classes"))
    masks, mask_classes = capability("dataset", dataset, "masks"), capability("dataset", dataset, "mask_classes")
    if isinstance(dataset, TensorImageDataset):
        images, labels = dataset.images, dataset.labels
    else:
        batches, label_batches = [], []
        loader = DataLoader(dataset, batch_size=512, shuffle=False)
        for x, y in tqdm(loader, desc="reading dataset", leave=False, unit="batch"):
            batches.append(x.clamp(0, 1).mul(255).round().to(torch.uint8))
            label_batches.append(torch.as_tensor(y).long())
        images, labels = torch.cat(batches), torch.cat(label_batches)
    images, labels = images.to(device), labels.to(device)
    if images.shape[-2:] != (image_size, image_size):
        images = resize_uint8(images, image_size)
    if masks is not None:
        masks = masks.to(device)
        if masks.shape[-2:] != (image_size, image_size):  # nearest: a class is never blended with another
            masks = F.interpolate(masks[:, None].float(), size=(image_size, image_size), mode="nearest")[:, 0].to(torch.uint8)
    boxes, box_classes = capability("dataset", dataset, "boxes"), capability("dataset", dataset, "box_classes")
    if boxes is not None:  # scaled with the image: (class, x0, y0, x1, y1) in pixels of the held images
        height, width = (dataset.images.shape[-2:] if isinstance(dataset, TensorImageDataset)
                         else dataset[0][0].shape[-2:])
        scale = torch.tensor([1.0, image_size / width, image_size / height, image_size / width, image_size / height])
        boxes = torch.where(boxes[..., :1] >= 0, boxes.float() * scale, boxes.float()).to(device)
    return DeviceImages(images, labels, num_classes, masks, mask_classes, boxes, box_classes)


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 [N, C, H, W] to [N, C, size, size] (bilinear, antialiased), in chunks."""
    out = []
    for chunk in images.split(2048):
        resized = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(resized.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)
