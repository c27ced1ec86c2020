"""Reconstruction metrics match their textbook definitions, on hidden pixels only."""

import math

import pytest

import torch
from torch import nn

from mimbench import metrics
from mimbench.contract import Components
from mimbench.data import DeviceImages, Normalizer
from mimbench.evaluate import reconstruction_metrics
from mimbench_plugins.pixel_targets import PixelsTarget


def test_masked_mse_counts_hidden_values_only():
    target = torch.zeros(2, 3, 2, 2)
    pred = torch.zeros(2, 3, 2, 2)
    mask = torch.zeros(2, 2, 2, dtype=torch.bool)
    mask[0, 0, 0] = True  # image 0: one hidden pixel (3 values)
    mask[1] = True  # image 1: all 4 pixels hidden (12 values)
    pred[0, :, 0, 0] = 0.5  # error on the hidden pixel
    pred[0, :, 1, 1] = 1.0  # error on a visible pixel: must not count
    pred[1, 0] = 0.2  # channel 0 of image 1
    sse, values = metrics.hidden_squared_error(pred, target, mask)
    assert values.tolist() == [3, 12]
    assert torch.allclose(sse / values, torch.tensor([0.25, 0.04 / 3], dtype=torch.float64))


def test_psnr_is_textbook():
    assert metrics.psnr(torch.tensor(0.01)).item() == 20.0
    assert math.isclose(metrics.psnr(torch.tensor(0.001)).item(), 30.0, rel_tol=1e-6)
    assert metrics.psnr(torch.tensor(0.0)).item() == 100.0  # floored, not infinite


class Zero(nn.Module):
    """An 'encoder' and 'decoder' that predict 0 everywhere, i.e. the mean pixel."""

    out_dim, stride = 1, 1

    def forward(self, x, mask=None):
        return torch.zeros_like(x[:, :1]).expand(-1, self.channels, -1, -1)


class HalfMasker:
    def __call__(self, images, generator=None):
        b, _, h, w = images.shape
        mask = torch.zeros(b, h, w, dtype=torch.bool)
        mask[:, : h // 2] = True  # the top half
        return mask


def test_reconstruction_metrics_undo_normalisation_and_use_hidden_pixels():
    torch.manual_seed(0)
    raw = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8)
    data = DeviceImages(raw, torch.zeros(10, dtype=torch.long), 2)
    normalize = Normalizer(torch.tensor([0.3]), torch.tensor([0.2]))
    model = Zero()
    model.channels = 1
    parts = Components(model, model, HalfMasker(), None, PixelsTarget(1, 8))
    result = reconstruction_metrics(parts, HalfMasker(), data, normalize, mask_seed=0, batch_size=4,
                                    device=torch.device("cpu"), to_image=parts.target.to_image)
    # predicting normalised 0 is predicting the pixel value 0.3 (the mean), everywhere
    pixels = raw.double() / 255.0
    errors = (pixels[:, :, :4] - 0.3) ** 2  # the hidden top half only
    per_image = errors.flatten(1).mean(1)
    assert math.isclose(result["mse"], errors.mean().item(), rel_tol=1e-6)
    assert math.isclose(result["psnr"], (10 * torch.log10(1 / per_image)).mean().item(), rel_tol=1e-6)
    assert result["mask_ratio"] == 0.5 and "target_loss" not in result  # the target is the image


def test_ssim_is_one_for_identical_images_and_matches_scikit_image():
    from mimbench.metrics import ssim

    structural_similarity = pytest.importorskip("skimage.metrics", reason="scikit-image is in the test extra") \
        .structural_similarity
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 2, 28, 28, generator=g)
    pred = (target + 0.2 * torch.randn(3, 2, 28, 28, generator=g)).clamp(0, 1)
    assert torch.allclose(ssim(target, target), torch.ones(3, dtype=torch.float64))
    ours = ssim(pred, target)
    for i in range(3):
        theirs = structural_similarity(pred[i].double().numpy(), target[i].double().numpy(), channel_axis=0,
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
        assert ours[i].item() == pytest.approx(theirs, abs=1e-9)
    assert (ours < 1).all() and ssim(1 - target, target).mean() < ours.mean()  # an inverted image is far off
