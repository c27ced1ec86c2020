"""Splits too large for the device stream through a DataLoader and give the same numbers."""

from __future__ import annotations

import pandas as pd
import torch

from mimbench.data import DeviceImages, Normalizer, StreamedImages, TensorImageDataset, load_images
from mimbench.contract import Components
from mimbench.evaluate import reconstruction_metrics
from mimbench.plugins import load_plugins
from mimbench.probing import ProbeContext
from mimbench.registry import Registry

CPU = torch.device("cpu")


class FloatImages(torch.utils.data.Dataset):
    """A plain (not in-memory) dataset of float images in [0, 1], 12 px, as a loader would give."""

    num_classes = 3

    def __init__(self, n: int = 70):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, 1, 12, 12), generator=g, dtype=torch.uint8)
        self.labels = torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i].float() / 255.0, int(self.labels[i])


def both(n: int = 70, size: int = 12):
    dataset = FloatImages(n)
    streamed = load_images(dataset, size, CPU, limit_bytes=0, workers=2)
    held = load_images(dataset, size, CPU, limit_bytes=None, workers=2)
    assert isinstance(streamed, StreamedImages) and isinstance(held, DeviceImages)
    return streamed, held


def test_streamed_batches_match_the_held_split():
    streamed, held = both()
    assert len(streamed) == len(held) == 70 and streamed.channels == held.channels == 1
    ordered = list(streamed.batches(32))
    assert [len(labels) for _, labels in ordered] == [32, 32, 6]
    assert torch.equal(torch.cat([images for images, _ in ordered]), held.images)
    assert torch.equal(torch.cat([labels for _, labels in ordered]), held.labels)
    shuffled = list(streamed.batches(32, torch.Generator().manual_seed(0)))
    assert [len(labels) for _, labels in shuffled] == [32, 32]  # full batches only
    seen = torch.cat([images for images, _ in shuffled]).flatten(1)
    assert len({tuple(row.tolist()) for row in seen}) == 64  # distinct images, no repeats
    assert torch.equal(streamed.head(5), held.images[:5])


def test_streamed_splits_are_resized_on_the_device():
    streamed, held = both(size=8)
    assert streamed.head(3).shape == (3, 1, 8, 8) and torch.equal(streamed.head(3), held.images[:3])


def test_normalisation_metrics_and_features_agree():
    streamed, held = both()
    a, b = Normalizer.measure(streamed), Normalizer.measure(held)
    assert torch.allclose(a.mean, b.mean) and torch.allclose(a.std, b.std)
    registry = Registry(load_plugins())
    torch.manual_seed(0)
    encoder = registry.build("encoder", "cnn", {"hidden_dim": 8}, in_channels=1, image_size=12)
    decoder = registry.build("decoder", "linear", {}, in_dim=8, stride=4, out_channels=1, image_size=12)
    masker = registry.build("masker", "patch", {"ratio": 0.5, "mask_patch_size": 4})
    target = registry.build("target", "pixels", {}, in_channels=1, image_size=12)
    parts = Components(encoder, decoder, masker, registry.build("loss", "l1", {}), target)
    metrics = [reconstruction_metrics(parts, masker, data, b, 0, 32, CPU, target.to_image) for data in (streamed, held)]
    assert metrics[0] == metrics[1]
    features = [ProbeContext(encoder, data, data, b, CPU, 0, 32).features("last") for data in (streamed, held)]
    assert torch.allclose(features[0].train, features[1].train) and torch.equal(features[0].train_labels, held.labels)


def test_a_suite_streams_when_told_the_device_holds_nothing(tmp_path):
    from click.testing import CliRunner

    from mimbench.cli import cli

    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: s\ndataset: {name: shapes, params: {num_images: 96}}\nimage_size: 16\n"
        "train: {epochs: 1, batch_size: 32}\neval: {probes: [knn], baselines: [pixels]}\n"
        "data: {in_memory_gb: 0, workers: 1}\n"
        "grid: {encoder: {name: cnn, params: {hidden_dim: 8}}, decoder: linear, masker: pixel, loss: l1}\n")
    result = CliRunner().invoke(cli, ["run", str(suite), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "r" / "s" / "summary.csv")
    assert list(table.status) == ["done", "done"] and table.knn_acc.notna().all() and table.recon_psnr[0] > 0
