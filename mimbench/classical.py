"""Reconstructions by methods that learn nothing: the reference a trained reconstruction must beat.

Both fill the hidden pixels of an image from its visible pixels alone, on exactly the masks the
run is scored on (:func:`mimbench.evaluate.reconstruction_metrics`):

- ``inpaint``: biharmonic inpainting (scikit-image's ``inpaint_biharmonic``, each channel, each
  connected hidden region solved as a biharmonic boundary-value problem);
- ``meanfill``: every hidden value set to the mean of the image's visible values of its channel,
  the floor any model should clear.

An image with no visible pixel has nothing to fill from: both give mid-grey (0.5) there.
"""

from __future__ import annotations

import numpy as np
import torch

#: The fill of an image with no visible pixel.
NOTHING_VISIBLE = 0.5
#: The classical reconstructions by name, in the order the tables show them.
CLASSICAL = ("inpaint", "meanfill")


def mean_fill(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """images float [B, C, H, W] in [0, 1], mask bool [B, H, W] (True = hidden) -> [B, C, H, W]: the
    visible pixels as they are, each hidden value the mean of its image's visible values of its channel."""
    visible = (~mask).unsqueeze(1).to(images.dtype)  # [B, 1, H, W]
    count = visible.sum(dim=(2, 3), keepdim=True)
    mean = (images * visible).sum(dim=(2, 3), keepdim=True) / count.clamp_min(1)
    mean = torch.where(count > 0, mean, torch.full_like(mean, NOTHING_VISIBLE))
    return torch.where(mask.unsqueeze(1), mean.expand_as(images), images)


def biharmonic_fill(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """images float [B, C, H, W] in [0, 1], mask bool [B, H, W] -> [B, C, H, W]: the hidden pixels
    inpainted with scikit-image's biharmonic inpainting (on the CPU, one image at a time), clamped to
    [0, 1]; the visible pixels as they are."""
    from skimage.restoration import inpaint_biharmonic

    pictures = images.detach().to("cpu", torch.float64).numpy()
    hidden = mask.detach().cpu().numpy()
    filled = pictures.copy()
    for i in range(len(pictures)):
        if not hidden[i].any():
            continue
        if hidden[i].all():
            filled[i] = NOTHING_VISIBLE
            continue
        filled[i] = np.moveaxis(inpaint_biharmonic(np.moveaxis(pictures[i], 0, -1), hidden[i], channel_axis=-1), -1, 0)
    result = torch.from_numpy(filled).to(images.device, images.dtype).clamp(0.0, 1.0)
    return torch.where(mask.unsqueeze(1), result, images)


def classical_fills(images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each of :data:`CLASSICAL` by name: the images [B, C, H, W] with their hidden pixels filled."""
    return {"inpaint": biharmonic_fill(images, mask), "meanfill": mean_fill(images, mask)}
