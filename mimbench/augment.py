"""Training augmentation on the device, for the whole batch at once: random-resized-crop + flip.

One ``affine_grid``/``grid_sample`` call crops, rescales and flips every image of the
batch with its own random box: no per-image Python loop, no host round trip.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_resized_crop(
    images: torch.Tensor,
    generator: torch.Generator | None,
    scale: tuple[float, float] = (0.67, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
) -> torch.Tensor:
    """Crop a random box from each image and resize it back to the full size (bilinear).

    images: float Tensor[B, C, H, W] -> Tensor[B, C, H, W]. Each box covers a fraction of the
    image area drawn uniformly from ``scale`` and has an aspect ratio (w / h) drawn log-uniformly
    from ``ratio``, like torchvision's ``RandomResizedCrop``; a side that would exceed the image
    is clipped to it (torchvision retries and then falls back to a centre crop instead). With
    ``flip``, each image is mirrored left-right with probability 1/2.
    """
    b, device = images.shape[0], images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(b, generator=generator, device=device)

    area = uniform(*scale)
    aspect = uniform(math.log(ratio[0]), math.log(ratio[1])).exp()
    width = (area * aspect).sqrt().clamp(max=1.0)  # box sides as fractions of the image's
    height = (area / aspect).sqrt().clamp(max=1.0)
    # box centre in affine_grid's [-1, 1] coordinates, so that the box stays inside the image
    centre_x = (2 * torch.rand(b, generator=generator, device=device) - 1) * (1 - width)
    centre_y = (2 * torch.rand(b, generator=generator, device=device) - 1) * (1 - height)
    sign = torch.ones(b, device=device)
    if flip:
        sign = torch.where(torch.rand(b, generator=generator, device=device) < 0.5, -sign, sign)
    theta = torch.zeros(b, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2] = width * sign, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = height, centre_y
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False)
