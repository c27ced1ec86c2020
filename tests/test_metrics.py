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

    from skimage.metrics import structural_similarity
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


def test_mean_fill_fills_hidden_values_with_the_visible_mean_of_their_channel():
    from mimbench.classical import NOTHING_VISIBLE, mean_fill

    images = torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(3, 6, 6, dtype=torch.bool)
    mask[0, :3] = True
    mask[2] = True  # nothing visible: mid-grey
    filled = mean_fill(images, mask)
    assert torch.equal(filled[1], images[1]) and torch.equal(filled[0, :, 3:], images[0, :, 3:])
    visible_mean = images[0, :, 3:].mean(dim=(1, 2))  # [C]
    assert torch.allclose(filled[0, :, :3], visible_mean[:, None, None].expand(3, 3, 6))
    assert torch.all(filled[2] == NOTHING_VISIBLE)


def test_biharmonic_fill_is_scikit_image_per_channel_and_restores_a_linear_ramp_exactly():
    from skimage.restoration import inpaint_biharmonic

    from mimbench.classical import biharmonic_fill

    g = torch.Generator().manual_seed(2)
    colour = torch.rand(2, 3, 16, 16, generator=g)  # generated colour images: no colour dataset offline
    mask = torch.rand(2, 16, 16, generator=g) < 0.4
    filled = biharmonic_fill(colour, mask)
    for i in range(2):
        theirs = inpaint_biharmonic(colour[i].double().permute(1, 2, 0).numpy(), mask[i].numpy(), channel_axis=-1)
        expected = torch.from_numpy(theirs).permute(2, 0, 1).float().clamp(0, 1)
        assert torch.allclose(filled[i], torch.where(mask[i], expected, colour[i]), atol=1e-6)
    assert torch.equal(filled[~mask.unsqueeze(1).expand_as(colour)], colour[~mask.unsqueeze(1).expand_as(colour)])
    # a linear function is biharmonic: a hidden square in a ramp is filled back to the ramp
    ramp = (torch.arange(16.0)[None, :] * 0.03 + torch.arange(16.0)[:, None] * 0.02).expand(1, 1, 16, 16)
    square = torch.zeros(1, 16, 16, dtype=torch.bool)
    square[0, 5:11, 4:12] = True
    assert torch.allclose(biharmonic_fill(ramp, square), ramp, atol=1e-5)


def test_reconstruction_metrics_score_the_classical_fills_on_the_same_masks():
    """``classical``: biharmonic inpainting and mean-fill scored exactly as the prediction is (hidden
    pixels; SSIM of the fill pasted into the image); the prediction's SSIM too."""
    from mimbench.classical import classical_fills

    g = torch.Generator().manual_seed(3)
    slopes = torch.rand(6, 2, generator=g) * 8  # smooth images: ramps of random slopes, plus a little noise
    ramps = slopes[:, :1, None] * torch.arange(16.0)[:, None] + slopes[:, 1:, None] * torch.arange(16.0)
    raw = (ramps[:, None] + torch.randint(0, 20, (6, 1, 16, 16), generator=g)).to(torch.uint8)
    data = DeviceImages(raw, torch.zeros(6, dtype=torch.long), 2)
    normalize = Normalizer(torch.tensor([0.3]), torch.tensor([0.2]))
    model = Zero()
    model.channels = 1
    parts = Components(model, model, HalfMasker(), None, PixelsTarget(1, 16))
    result = reconstruction_metrics(parts, HalfMasker(), data, normalize, mask_seed=0, batch_size=4,
                                    device=torch.device("cpu"), to_image=parts.target.to_image, classical=True)
    pixels = raw.float() / 255.0
    mask = HalfMasker()(pixels)
    predicted = torch.where(mask.unsqueeze(1), torch.full_like(pixels, 0.3), pixels)
    assert result["ssim"] == pytest.approx(metrics.ssim(predicted, pixels).mean().item(), abs=1e-9)
    for name, filled in classical_fills(pixels, mask).items():
        per_image = ((filled.double() - pixels.double())[:, :, :8] ** 2).flatten(1).mean(1)
        assert result[f"{name}_psnr"] == pytest.approx((10 * torch.log10(1 / per_image)).mean().item(), rel=1e-6)
        assert result[f"{name}_ssim"] == pytest.approx(metrics.ssim(filled, pixels).mean().item(), abs=1e-9)
    assert result["inpaint_psnr"] > result["meanfill_psnr"] + 5  # a smooth image is inpainted far better
