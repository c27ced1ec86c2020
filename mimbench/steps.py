"""One training step's pieces: the batches of an epoch with their masks (:func:`masked_batches`),
and the model that turns images and a mask into a loss (:class:`MaskedModel`), what
:func:`mimbench.train.pretrain` steps through, DDP wraps and ``torch.compile`` compiles.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import nn

from mimbench.augment import random_resized_crop
from mimbench.contract import Components, check_target_output, mask_on_grid, reconstruct
from mimbench.data import Images, Normalizer
from mimbench.errors import ContractError
from mimbench.optim import autocast_for
from mimbench.schema import AugmentConfig


class MaskedModel(nn.Module):
    """Encoder + decoder + target + loss as one module: what DDP wraps and ``torch.compile`` compiles.

    forward(images float [B, C, H, W], mask bool [B, H, W]) -> scalar loss on the hidden cells of
    the target's grid (the hidden pixels for ``pixels``); encoder and decoder under the autocast of
    ``precision`` (``train.precision``), the loss in float32.
    """

    def __init__(self, parts: Components, precision: str = "auto"):
        super().__init__()
        self.precision = precision  # train.precision: the autocast of the forward pass
        self.encoder, self.decoder, self.loss, self.target = parts.encoder, parts.decoder, parts.loss, parts.target
        self.channels, self.stride = parts.target.channels, parts.target.stride

    def forward(self, images: torch.Tensor, mask: torch.Tensor, check: bool = False) -> torch.Tensor:
        with torch.no_grad():
            target = self.target(images)  # [B, D, H / s, W / s]; the teacher of ema_teacher sees every pixel
        hidden = mask_on_grid(mask, self.stride)
        if check:
            check_target_output(target, images, self.channels, self.stride)
            if not hidden.any():
                raise ContractError(f"the target predicts {self.stride}x{self.stride} cells and a cell counts as "
                                    f"hidden only when all its pixels are: the masker hid no whole cell")
        with autocast_for(images.device, self.precision):
            pred = reconstruct(self.encoder, self.decoder, images, mask, check, self.channels, self.stride)
        return self.loss(pred.float(), target.float(), hidden)


def masked_batches(data: Images, batch_size: int, generator: torch.Generator, normalize: Normalizer,
                   augment: AugmentConfig | None, masker: Callable[..., torch.Tensor]
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of training batches, every random draw from ``generator`` in a fixed order
    (shuffle, then per batch: augmentation, mask): normalised, augmented images float [B, C, H, W]
    and their mask bool [B, H, W] (True = hidden)."""
    for batch, _ in data.batches(batch_size, generator):
        images = normalize(batch)
        if augment is not None:
            images = random_resized_crop(images, generator, augment.crop_scale, augment.crop_ratio, augment.flip)
        yield images, masker(images, generator)


def training_batches(data: Images, batch_size: int, epochs: int, generator: torch.Generator, normalize: Normalizer,
                     augment: AugmentConfig | None, masker: Callable[..., torch.Tensor]
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`masked_batches` for ``epochs`` epochs in a row: len(data) // batch_size per epoch."""
    for _ in range(epochs):
        yield from masked_batches(data, batch_size, generator, normalize, augment, masker)
