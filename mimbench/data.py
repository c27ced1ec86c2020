"""Image data held in memory as uint8 tensors, moved to the device once.

Datasets that fit in memory are batched by indexing a device tensor: no
DataLoader workers, no host-to-device copy per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm


class TensorImageDataset(Dataset):
    """A labelled image dataset kept in memory.

    Args:
        images: uint8 Tensor[N, C, H, W], pixel values 0..255.
        labels: int64 Tensor[N].
        num_classes: number of label classes.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()
        self.num_classes = num_classes

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].float() / 255.0, int(self.labels[index])


@dataclass
class DeviceImages:
    """One split on the device: uint8 images [N, C, S, S] and labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]


@dataclass
class Normalizer:
    """Per-channel normalisation measured on the train split: x -> (x - mean) / std."""

    mean: torch.Tensor  # [C], in [0, 1] pixel units
    std: torch.Tensor  # [C]

    @classmethod
    def measure(cls, images: torch.Tensor) -> "Normalizer":
        """Measure mean and std per channel of uint8 images [N, C, H, W]."""
        sums = torch.zeros(images.shape[1], dtype=torch.float64, device=images.device)
        squares = torch.zeros_like(sums)
        for chunk in images.split(4096):
            pixels = chunk.double().div(255.0)
            sums += pixels.sum(dim=(0, 2, 3))
            squares += pixels.pow(2).sum(dim=(0, 2, 3))
        count = images.shape[0] * images.shape[2] * images.shape[3]
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


def to_device_images(dataset: Dataset, image_size: int, device: torch.device) -> DeviceImages:
    """Hold a whole split on ``device`` as uint8 [N, C, image_size, image_size].

    A ``TensorImageDataset`` is taken as it is; any other dataset of
    ``(float image in [0, 1], label)`` pairs is read once and quantised to uint8.
    Images of another size are resized (bilinear, antialiased) once, here.
    """
    num_classes = int(getattr(dataset, "num_classes"))
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
    return DeviceImages(images, labels, num_classes)


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 [N, C, H, W] to [N, C, size, size] (bilinear, antialiased), in chunks."""
    out = []
    for chunk in images.split(2048):
        resized = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(resized.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)
