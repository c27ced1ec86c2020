"""Evaluation of a trained run on the test split: reconstruction of hidden pixels.

All metrics are in [0, 1] pixel space: the normalisation is undone and the
prediction clamped to [0, 1] before comparing; only hidden pixels count.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.utils import make_grid

from mimbench import metrics
from mimbench.contract import check_mask, reconstruct
from mimbench.data import Images, Normalizer
from mimbench.optim import autocast_for


@torch.no_grad()
def reconstruction_metrics(
    encoder: nn.Module,
    decoder: nn.Module,
    masker: Callable[..., torch.Tensor],
    data: Images,
    normalize: Normalizer,
    mask_seed: int,
    batch_size: int,
    device: torch.device,
    to_image: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """MSE and PSNR on hidden pixels, and statistics of the masks the masker really made.

    Returns ``mse`` (squared error summed over every hidden value of the split, divided
    by their number), ``psnr`` (mean over images of 10*log10(1/mse_image); images with
    nothing hidden are left out), ``mask_ratio`` (hidden pixels / all pixels) and
    ``mask_avgdist`` (SimMIM's AvgDist: mean over images of the mean distance in pixels
    from a hidden pixel to the nearest visible one). The masks come from a generator
    seeded with ``mask_seed``: the same for every run. ``to_image(pred, target)`` maps
    the decoder's output to the normalised image when the loss trained it on another
    target (norm_pix); see ``mimbench_register_losses``.
    """
    encoder.eval(), decoder.eval()
    generator = torch.Generator(device=device).manual_seed(mask_seed)
    sse_total = torch.zeros((), dtype=torch.float64, device=device)
    values_total = torch.zeros_like(sse_total)
    psnr_sum = torch.zeros_like(sse_total)
    images_with_hidden = torch.zeros_like(sse_total)
    hidden_pixels = torch.zeros_like(sse_total)
    avgdist_sum = torch.zeros_like(sse_total)
    avgdist_count = torch.zeros_like(sse_total)
    total_pixels = 0
    for batch, _ in data.batches(batch_size):
        total_pixels += batch.shape[0] * batch.shape[2] * batch.shape[3]
        images = normalize(batch)
        mask = check_mask(masker(images, generator), images)
        with autocast_for(device):
            pred = reconstruct(encoder, decoder, images, mask, check=True)
        pred = pred.float() if to_image is None else to_image(pred.float(), images)
        pred_pixels = normalize.to_pixels(pred).clamp(0.0, 1.0)
        target_pixels = batch.float() / 255.0
        sse, values = metrics.hidden_squared_error(pred_pixels, target_pixels, mask)
        has_hidden = values > 0
        sse_total += sse.sum()
        values_total += values.sum()
        psnr_sum += metrics.psnr(sse[has_hidden] / values[has_hidden]).sum()
        images_with_hidden += has_hidden.sum()
        hidden_pixels += mask.sum()
        avgdist = metrics.mask_avgdist(mask)
        avgdist_sum += avgdist.nan_to_num(0.0).sum()
        avgdist_count += avgdist.isfinite().sum()
    return {
        "mse": (sse_total / values_total).item(),
        "psnr": (psnr_sum / images_with_hidden).item(),
        "mask_ratio": hidden_pixels.item() / total_pixels,
        "mask_avgdist": (avgdist_sum / avgdist_count).item(),
    }


@torch.no_grad()
def reconstruction_grid(
    encoder: nn.Module,
    decoder: nn.Module,
    masker: Callable[..., torch.Tensor],
    data: Images,
    normalize: Normalizer,
    mask_seed: int,
    device: torch.device,
    count: int = 8,
    to_image: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """A picture of ``count`` fixed test images, one column each; rows: original, what the
    encoder saw (hidden pixels as a grey checkerboard), the prediction, and the prediction
    pasted into the hidden pixels. Small images are enlarged (nearest) to at least 96 px.
    Returns float Tensor[3, H', W'] in [0, 1]."""
    batch = data.head(count)
    images = normalize(batch)
    mask = masker(images, torch.Generator(device=device).manual_seed(mask_seed))
    with autocast_for(device):
        pred = reconstruct(encoder, decoder, images, mask)
    pred = pred.float() if to_image is None else to_image(pred.float(), images)
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
