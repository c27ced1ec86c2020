"""Evaluation of a trained run on the test split: how well it predicts what was hidden.

Pixel metrics are in [0, 1] pixel space: the normalisation is undone and the prediction
clamped to [0, 1] before comparing; only hidden pixels count. They exist where a prediction
stands for an image (the ``pixels`` target, or a target's ``to_image``); a target that is not
the image also gets ``target_loss``, the run's loss on the hidden cells of its grid.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import torch
from torchvision.utils import make_grid

from mimbench import metrics
from mimbench.classical import CLASSICAL, classical_fills
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
                           to_image: ToImage | None = None, classical: bool = False) -> dict[str, float]:
    """Hidden-pixel errors, the target's loss and statistics of the masks the masker really made.

    Returns, with ``to_image`` (the image a prediction stands for, given the normalised images;
    the identity for ``pixels``): ``mse`` (squared error summed over every hidden value of the
    split, divided by their number), ``psnr`` (mean over images of 10*log10(1/mse_image)) and
    ``ssim`` (mean over images of :func:`~mimbench.metrics.ssim` between the image and the
    prediction pasted into its hidden pixels; absent for images of 10 px or less); images with
    nothing hidden are left out of both means. With ``classical`` too, the same three for each
    reconstruction of :mod:`mimbench.classical` on the same masks: ``inpaint_mse``, ``inpaint_psnr``,
    ``inpaint_ssim``, ``meanfill_*``. For a target that is not the image itself: ``target_loss``,
    ``parts.loss`` on the hidden cells of each batch, averaged over the split weighted by hidden
    cells (absent when no cell was hidden). Always: ``mask_ratio`` (hidden pixels / all pixels) and
    ``mask_avgdist`` (SimMIM's AvgDist: mean over images of the mean distance in pixels from a
    hidden pixel to the nearest visible one). The masks come from a generator seeded with
    ``mask_seed``: the same for every run.
    """
    parts.encoder.eval(), parts.decoder.eval()
    generator = torch.Generator(device=device).manual_seed(mask_seed)
    sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), dtype=torch.float64, device=device))
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
            original = batch.float() / 255.0
            pred_pixels = normalize.to_pixels(to_image(pred, images)).clamp(0.0, 1.0)
            _add_pixel_errors(sums, "", pred_pixels, original, mask)
            if classical:
                for name, filled in classical_fills(original, mask).items():
                    _add_pixel_errors(sums, f"{name}_", filled, original, mask)
        sums["hidden"] += mask.sum()
        avgdist = metrics.mask_avgdist(mask)
        sums["avgdist"] += avgdist.nan_to_num(0.0).sum()
        sums["avgdist_count"] += avgdist.isfinite().sum()
    result = {"mask_ratio": sums["hidden"].item() / total_pixels,
              "mask_avgdist": (sums["avgdist"] / sums["avgdist_count"]).item()}
    for prefix in ("", *(f"{name}_" for name in CLASSICAL)):
        if f"{prefix}values" in sums:
            result[f"{prefix}mse"] = (sums[f"{prefix}sse"] / sums[f"{prefix}values"]).item()
            result[f"{prefix}psnr"] = (sums[f"{prefix}psnr"] / sums["images_with_hidden"]).item()
            if f"{prefix}ssim" in sums:
                result[f"{prefix}ssim"] = (sums[f"{prefix}ssim"] / sums["images_with_hidden"]).item()
    if not target_is_image and sums["cells"] > 0:
        result["target_loss"] = (sums["loss"] / sums["cells"]).item()
    return result


def _add_pixel_errors(sums: dict[str, torch.Tensor], prefix: str, pred: torch.Tensor, original: torch.Tensor,
                      mask: torch.Tensor) -> None:
    """Add one batch's hidden-pixel errors of ``pred`` [B, C, H, W] (its values at hidden pixels are
    what counts) to ``sums`` under ``<prefix>sse``, ``values``, ``psnr`` and ``ssim`` (of ``pred``
    pasted into the hidden pixels of ``original``); the images with something hidden once, with no
    prefix."""
    sse, values = metrics.hidden_squared_error(pred, original, mask)
    has_hidden = values > 0
    sums[f"{prefix}sse"] += sse.sum()
    sums[f"{prefix}values"] += values.sum()
    sums[f"{prefix}psnr"] += metrics.psnr(sse[has_hidden] / values[has_hidden]).sum()
    if min(original.shape[-2:]) > 2 * metrics.SSIM_RADIUS:
        pasted = torch.where(mask.unsqueeze(1), pred, original)
        sums[f"{prefix}ssim"] += metrics.ssim(pasted[has_hidden], original[has_hidden]).sum()
    if not prefix:
        sums["images_with_hidden"] += has_hidden.sum()


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
