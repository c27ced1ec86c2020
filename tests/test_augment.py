"""On-device random-resized-crop + flip: geometry pinned on ramps, reproducibility, suite validation."""

from __future__ import annotations

import pytest
import torch

from mimbench.augment import random_resized_crop
from mimbench.errors import ConfigError
from mimbench.suite import load_suite


def ramp(b: int = 64, size: int = 16) -> torch.Tensor:
    """Images [b, 1, size, size] whose value is the pixel centre's x coordinate in [-1, 1]."""
    x = (torch.arange(size) + 0.5) / size * 2 - 1
    return x.view(1, 1, 1, size).expand(b, 1, size, size).clone()


def test_full_box_without_flip_is_the_identity():
    images = torch.randn(8, 3, 12, 12)
    out = random_resized_crop(images, torch.Generator().manual_seed(0), scale=(1, 1), ratio=(1, 1), flip=False)
    assert torch.allclose(out, images, atol=1e-5)


def test_flip_mirrors_about_half_of_the_images():
    images = torch.randn(400, 1, 8, 8)
    out = random_resized_crop(images, torch.Generator().manual_seed(1), scale=(1, 1), ratio=(1, 1), flip=True)
    same = torch.isclose(out, images, atol=1e-5).flatten(1).all(1)
    mirrored = torch.isclose(out, images.flip(-1), atol=1e-5).flatten(1).all(1)
    assert bool((same ^ mirrored).all())
    assert 150 < int(mirrored.sum()) < 250


def test_a_quarter_area_square_box_spans_half_the_width_inside_the_image():
    images = ramp()
    out = random_resized_crop(images, torch.Generator().manual_seed(2), scale=(0.25, 0.25), ratio=(1, 1), flip=False)
    # every row of a crop is the ramp restricted to a box half as wide: span ~ half of the full span
    full_span = images[0, 0, 0, -1] - images[0, 0, 0, 0]
    spans = out[:, 0, :, -1] - out[:, 0, :, 0]
    # (a box touching the image edge loses up to a quarter pixel to border clamping)
    assert torch.allclose(spans, full_span / 2, atol=0.035)
    assert out.min() >= -1 and out.max() <= 1  # the box never leaves the image
    starts = out[:, 0, 0, 0]
    assert starts.std() > 0.1  # boxes are placed at random


def test_the_generator_makes_it_reproducible():
    images = torch.randn(16, 3, 16, 16)
    a = random_resized_crop(images, torch.Generator().manual_seed(5))
    b = random_resized_crop(images, torch.Generator().manual_seed(5))
    c = random_resized_crop(images, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_suite_validates_augment(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ndataset: shapes\ngrid: {encoder: cnn, decoder: linear, masker: pixel, loss: l1}\n")
    assert load_suite(str(path)).train.augment is None
    suite = load_suite(str(path), ["train.augment={}"])
    assert suite.train.augment.crop_scale == (0.67, 1.0) and suite.train.augment.flip
    with pytest.raises(ConfigError, match="crop_scale must satisfy"):
        load_suite(str(path), ["train.augment={crop_scale: [0.8, 0.2]}"])
    with pytest.raises(ConfigError, match="train.augment.flop: unknown key"):
        load_suite(str(path), ["train.augment={flop: true}"])
