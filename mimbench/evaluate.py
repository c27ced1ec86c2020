"""Evaluation of a trained run on the test split: how well it predicts what was hidden.

Pixel metrics are in [0, 1] pixel space: the normalisation is undone and the prediction
clamped to [0, 1] before comparing; only hidden pixels count. They exist where a prediction
stands for an image (the ``pixels`` target, or a target's ``to_image``); a target that is not
the image also gets ``target_loss``, the run's loss on the hidden cells of its grid.
"""

from __future__ import annotations

from typing import Callable

import torch
from torchvision.utils import make_grid

from mimbench import metrics
from mimbench.contract import Components, check_mask, mask_on_grid, reconstruct
from mimbench.data import Images, Normalizer
from mimbench.optim import autocast_for
from mimbench.protocols import capability

ToImage = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _predict(parts: Components, images: torch.Tensor, mask: torch.Tensor, device: torch.device,
             check: bool = True) -> torch.Tensor:
    """The run's prediction of its target, float [B, D, H / s, W / s]."""
    with autocast_for(device):
        pred = reconstruct(parts.encoder, parts.decoder, images, mask, check, parts.target.channels,
                           parts.target.stride)
    return pred.float()


@torch.no_grad()
def reconstruction_metrics(parts: Components, masker: Callable[..., torch.Tensor], data: Images, normalize: Normalizer,
                           mask_seed: int, batch_size: int, device: torch.device,
                           to_image: ToImage | None = None) -> dict[str, float]:
    """Hidden-pixel errors, the target's loss and statistics of the masks the masker really made.

    Returns, with ``to_image`` (the image a prediction stands for, given the normalised images;
    the identity for ``pixels``): ``mse`` (squared error summed over every hidden value of the
    split, divided by their number) and ``psnr`` (mean over images of 10*log10(1/mse_image);
    images with nothing hidden are left out). For a target that is not the image itself:
    ``target_loss``, ``parts.loss`` on the hidden cells of each batch, averaged over the split
    weighted by hidden cells (absent when no cell was hidden). Always: ``mask_ratio`` (hidden pixels
    / all pixels) and ``mask_avgdist`` (SimMIM's AvgDist: mean over images of the mean distance in
    pixels from a hidden pixel to the nearest visible one). The masks come from a generator seeded
    with ``mask_seed``: the same for every run.
    """
    parts.encoder.eval(), parts.decoder.eval()
    generator = torch.Generator(device=device).manual_seed(mask_seed)
    sums = {key: torch.zeros((), dtype=torch.float64, device=device) for key in
            ("sse", "values", "psnr", "images_with_hidden", "hidden", "avgdist", "avgdist_count", "loss", "cells")}
    total_pixels = 0
    target_is_image = capability("target", parts.target, "predicts_image")
    for batch, _ in data.batches(batch_size):
        total_pixels += batch.shape[0] * batch.shape[2] * batch.shape[3]
        images = normalize(batch)
        mask = check_mask(masker(images, generator), images)
        pred = _predict(parts, images, mask, device)
        if not target_is_image:
            hidden_cells = mask_on_grid(mask, parts.target.stride)
            cells = hidden_cells.sum()
            sums["loss"] += parts.loss(pred, parts.target(images).float(), hidden_cells).double() * cells
            sums["cells"] += cells
        if to_image is not None:
            pred_pixels = normalize.to_pixels(to_image(pred, images)).clamp(0.0, 1.0)
            sse, values = metrics.hidden_squared_error(pred_pixels, batch.float() / 255.0, mask)
            has_hidden = values > 0
            sums["sse"] += sse.sum()
            sums["values"] += values.sum()
            sums["psnr"] += metrics.psnr(sse[has_hidden] / values[has_hidden]).sum()
            sums["images_with_hidden"] += has_hidden.sum()
        sums["hidden"] += mask.sum()
        avgdist = metrics.mask_avgdist(mask)
        sums["avgdist"] += avgdist.nan_to_num(0.0).sum()
        sums["avgdist_count"] += avgdist.isfinite().sum()
    result = {"mask_ratio": sums["hidden"].item() / total_pixels,
              "mask_avgdist": (sums["avgdist"] / sums["avgdist_count"]).item()}
    if to_image is not None:
        result.update(mse=(sums["sse"] / sums["values"]).item(), psnr=(sums["psnr"] / sums["images_with_hidden"]).item())
    if not target_is_image and sums["cells"] > 0:
        result["target_loss"] = (sums["loss"] / sums["cells"]).item()
    return result


@torch.no_grad()
def reconstruction_grid(parts: Components, masker: Callable[..., torch.Tensor], data: Images, normalize: Normalizer,
                        mask_seed: int, device: torch.device, to_image: ToImage, count: int = 8) -> torch.Tensor:
    """A picture of ``count`` fixed test images, one column each; rows: original, what the
    encoder saw (hidden pixels as a grey checkerboard), the prediction (``to_image`` of it), and the
    prediction pasted into the hidden pixels. Small images are enlarged (nearest) to at least 96 px.
    Returns float Tensor[3, H', W'] in [0, 1]."""
    batch = data.head(count)
    images = normalize(batch)
    mask = masker(images, torch.Generator(device=device).manual_seed(mask_seed))
    pred = to_image(_predict(parts, images, mask, device, check=False), images)
    original = batch.float() / 255.0
    prediction = normalize.to_pixels(pred).clamp(0.0, 1.0)
    if original.shape[1] == 1:
        original, prediction = original.expand(-1, 3, -1, -1), prediction.expand(-1, 3, -1, -1)
    scale = max(1, 96 // original.shape[-1])

    def enlarge(t: torch.Tensor) -> torch.Tensor:
        return t.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)

    original, prediction, hidden = enlarge(original), enlarge(prediction), enlarge(mask.unsqueeze(1))
    size = original.shape[-1]
    squares = torch.arange(size, device=original.device) // max(2, scale // 2)
    checker = 0.35 + 0.3 * ((squares.view(-1, 1) + squares.view(1, -1)) % 2).float()  # [S, S]
    seen = torch.where(hidden, checker, original)
    pasted = torch.where(hidden, prediction, original)
    rows = torch.cat([original, seen, prediction, pasted])
    return make_grid(rows.cpu(), nrow=batch.shape[0], padding=4, pad_value=1.0)
