"""``restoration``: super-resolution from the frozen encoder's feature grid, against bicubic upsampling.

Each image x (pixels in [0, 1]) is shrunk ``factor`` times (the mean of each ``factor`` x ``factor``
square) and brought back to full size by bicubic interpolation (clamped to [0, 1]): ``bicubic``, the
classical answer. The encoder sees the normalised ``bicubic`` image; a linear map of each grid cell's
feature (standardised per channel with the train split's statistics) predicts the cell's pixels of the
residual x - bicubic; the restored image is bicubic + residual, clamped. The map is ridge regression
in closed form, its strength chosen among ``ridge`` on held-out train images (mean PSNR; the
core's :mod:`~mimbench.selection` split), refit on every train image.

Scores on the test split, each the mean over images of the whole image's measure: ``sr_psnr`` and
``sr_ssim`` of the restored image, ``sr_bicubic_psnr`` and ``sr_bicubic_ssim`` of bicubic upsampling
on the same images (a reference, not compared), ``sr_gain_psnr`` = sr_psnr - sr_bicubic_psnr.
"""

from __future__ import annotations

from typing import Annotated, Callable

import torch
import torch.nn.functional as F

from mimbench.plugin import (Interval, Layer, MetricColumn, ProbeContext, autocast_for, check_layer, dense_grid,
                             hookimpl, metrics, selection)

from mimbench_plugins.seg_probes import probe_layers, scored_layers

#: The ridge strengths tried (times the number of train cells, on standardised features).
RIDGE = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


class RestorationProbe:
    """Super-resolution x``factor`` by a linear map of the frozen feature grid, beside bicubic."""

    def __init__(self, layer: Layer = "last", factor: Annotated[int, Interval(ge=2, le=8)] = 2,
                 ridge: float | list[float] = RIDGE):
        check_layer(layer)
        strengths = list(ridge) if isinstance(ridge, (list, tuple)) else [ridge]
        if not strengths or any(not r > 0 for r in strengths):
            raise ValueError(f"ridge must be a positive number or a list of them, got {ridge!r}")
        self.layer, self.factor, self.ridge = layer, factor, strengths

    def metric_columns(self) -> list[MetricColumn]:
        return [MetricColumn("sr_psnr", "SR PSNR (dB)", f"super-resolution x{self.factor} PSNR (dB)", "other", digits=2),
                MetricColumn("sr_ssim", "SR SSIM", f"super-resolution x{self.factor} SSIM", "other"),
                MetricColumn("sr_gain_psnr", "SR − bicubic (dB)", "super-resolution PSNR gain over bicubic (dB)", "other",
                             digits=2, compared=False),
                MetricColumn("sr_bicubic_psnr", "bicubic PSNR (dB)", f"bicubic x{self.factor} PSNR (dB)", "other",
                             digits=2, compared=False),
                MetricColumn("sr_bicubic_ssim", "bicubic SSIM", f"bicubic x{self.factor} SSIM", "other",
                             compared=False),
                MetricColumn("sr_hp_ridge", "SR ridge", "ridge strength chosen on held-out train images", "other",
                             headline=False, digits=5)]

    def __call__(self, context: ProbeContext) -> dict[str, float]:
        return scored_layers("sr", probe_layers(context, self.layer), lambda layer: self.score(context, layer))

    @torch.no_grad()
    def score(self, context: ProbeContext, layer: int | str) -> dict[str, float]:
        train_x, train_y, cells = self._cells(context, layer)
        mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
        train_x = (train_x - mean) / std
        fit, held = selection.held_out_split(len(train_x) // cells, context.seed, train_x.device)

        def rows(images: torch.Tensor) -> torch.Tensor:
            return (images[:, None] * cells + torch.arange(cells, device=images.device)).flatten()

        def held_out_psnr(ridge: float) -> float:
            predicted = _apply(_ridge(train_x[rows(fit)], train_y[rows(fit)], ridge), train_x[rows(held)])
            squared = (predicted - train_y[rows(held)]).square().view(len(held), -1).mean(1)
            return metrics.psnr(squared).mean().item()

        chosen = self.ridge[0] if len(self.ridge) == 1 else max(self.ridge, key=held_out_psnr)
        weights = _ridge(train_x, train_y, chosen)
        scores = self._test_scores(context, layer, lambda x: _apply(weights, (x - mean) / std))
        return {**scores, "hp_ridge": chosen}

    def _grid(self, context: ProbeContext, bicubic: torch.Tensor, layer: int | str) -> torch.Tensor:
        """The encoder's grid of the bicubic images (as uint8 images, like every image it sees,
        normalised), float [B, D, h, w]."""
        context.encoder.eval()
        with autocast_for(context.device):
            return dense_grid(context.encoder, context.normalize((bicubic * 255).round().to(torch.uint8)), layer).float()

    def _cells(self, context: ProbeContext, layer: int | str) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Every cell of the train split: features [N*h*w, D], its residual pixels [N*h*w, C*p*p],
        and h*w."""
        features, residuals = [], []
        for batch, _ in context.train.batches(context.batch_size):
            x = batch.float() / 255
            bicubic = upsampled(x, self.factor)
            grid = self._grid(context, bicubic, layer)
            features.append(grid.flatten(2).transpose(1, 2).reshape(-1, grid.shape[1]))
            residuals.append(_cell_pixels(x - bicubic, grid.shape[-2:]))
        return torch.cat(features), torch.cat(residuals), grid.shape[-2] * grid.shape[-1]

    def _test_scores(self, context: ProbeContext, layer: int | str,
                     predict: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        sums = {key: 0.0 for key in ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim")}
        count = 0
        for batch, _ in context.test.batches(context.batch_size):
            x = batch.float() / 255
            bicubic = upsampled(x, self.factor)
            grid = self._grid(context, bicubic, layer)
            cells = predict(grid.flatten(2).transpose(1, 2).reshape(-1, grid.shape[1]))
            restored = (bicubic + _cell_image(cells, x.shape, grid.shape[-2:])).clamp(0, 1)
            for name, image in (("", restored), ("bicubic_", bicubic)):
                sums[f"{name}psnr"] += metrics.psnr((image.double() - x.double()).square().flatten(1).mean(1)).sum().item()
                if min(x.shape[-2:]) > 2 * metrics.SSIM_RADIUS:
                    sums[f"{name}ssim"] += metrics.ssim(image, x).sum().item()
            count += len(x)
        scores = {key: value / count for key, value in sums.items()}
        if context.test.image_size <= 2 * metrics.SSIM_RADIUS:  # too small for SSIM's window
            scores = {key: value for key, value in scores.items() if "ssim" not in key}
        return {**scores, "gain_psnr": scores["psnr"] - scores["bicubic_psnr"]}


def upsampled(images: torch.Tensor, factor: int) -> torch.Tensor:
    """images float [B, C, S, S] in [0, 1] -> shrunk ``factor`` times (the mean of each square) and
    bicubic-upsampled back to S (clamped to [0, 1]), [B, C, S, S]. S must be a multiple of factor."""
    size = images.shape[-1]
    if size % factor or images.shape[-2] % factor:
        raise ValueError(f"restoration: images of {images.shape[-2]}x{size} px cannot be shrunk {factor} times "
                         f"(the image size must be a multiple of factor)")
    small = F.avg_pool2d(images, factor)
    return F.interpolate(small, size=images.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)


def _cell_pixels(images: torch.Tensor, grid: tuple[int, int] | torch.Size) -> torch.Tensor:
    """images [B, C, S, S] -> each grid cell's pixels, [B*h*w, C*p*p] (p = S / h)."""
    p = _cell_side(images.shape[-1], grid)
    cells = F.pixel_unshuffle(images, p)  # [B, C*p*p, h, w]
    return cells.flatten(2).transpose(1, 2).reshape(-1, cells.shape[1])


def _cell_image(cells: torch.Tensor, shape: torch.Size, grid: tuple[int, int] | torch.Size) -> torch.Tensor:
    """The inverse of :func:`_cell_pixels`: [B*h*w, C*p*p] -> [B, C, S, S]."""
    b, _, _, size = shape
    h, w = grid
    p = _cell_side(size, grid)
    return F.pixel_shuffle(cells.view(b, h * w, -1).transpose(1, 2).reshape(b, -1, h, w), p)


def _cell_side(size: int, grid: tuple[int, int] | torch.Size) -> int:
    h, w = grid
    if size % w or size % h or size // w != size // h:
        raise ValueError(f"restoration: a {h}x{w} feature grid does not tile a {size} px image into squares")
    return size // w


def _ridge(x: torch.Tensor, y: torch.Tensor, strength: float) -> torch.Tensor:
    """Ridge regression of y [n, k] on x [n, d] with an unpenalised bias: weights [d + 1, k] (the last
    row the bias), minimising |[x 1] W - y|^2 + strength * n * |W[:d]|^2, solved in float64."""
    x64, y64 = x.double(), y.double()
    x_mean, y_mean = x64.mean(0), y64.mean(0)
    xc, yc = x64 - x_mean, y64 - y64.mean(0)
    gram = xc.T @ xc + strength * len(x) * torch.eye(x.shape[1], dtype=torch.float64, device=x.device)
    weights = torch.linalg.solve(gram, xc.T @ yc)
    bias = y_mean - x_mean @ weights
    return torch.cat([weights, bias[None]]).float()


def _apply(weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x @ weights[:-1] + weights[-1]


@hookimpl
def mimbench_register_probes(register) -> None:
    register("restoration", RestorationProbe)
