"""The built-in datasets: generated shapes, the IDX reader, Fashion-MNIST and its embedded subset."""

from __future__ import annotations

import gzip
import hashlib
import math
import re
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from mimbench.data import TensorImageDataset
from mimbench_plugins import datasets as ds

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
MINI_DIR = Path(ds.__file__).parent / "data" / "fashion-mnist-mini"


# --- registration ---------------------------------------------------------------------------

def test_registers_three_documented_factories():
    registered = {}
    ds.mimbench_register_datasets(lambda name, factory, description=None: registered.setdefault(name, factory))
    assert set(registered) == {"shapes", "fashion-mnist", "fashion-mnist-mini"}
    for factory in registered.values():
        assert factory.__doc__.strip().splitlines()[0].strip()
        assert list(factory.__annotations__)[0] == "split"


@pytest.mark.parametrize("factory", [ds.shapes, ds.fashion_mnist, ds.fashion_mnist_mini])
def test_bad_split_is_a_one_line_value_error(factory):
    with pytest.raises(ValueError, match=r"split must be one of 'train', 'test', got 'val'") as info:
        factory("val")
    assert "\n" not in str(info.value)


# --- shapes ---------------------------------------------------------------------------------

def test_shapes_is_deterministic_and_splits_differ():
    a = ds.shapes("train", image_size=16, num_images=60, seed=3)
    b = ds.shapes("train", image_size=16, num_images=60, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    test = ds.shapes("test", image_size=16, num_images=60, seed=3)
    other_seed = ds.shapes("train", image_size=16, num_images=60, seed=4)
    assert not torch.equal(a.images, test.images)
    assert not torch.equal(a.images, other_seed.images)


@pytest.mark.parametrize("image_size", [16, 48])
def test_shapes_dtype_shape_and_balance(image_size):
    data = ds.shapes("test", image_size=image_size, num_images=61)
    assert isinstance(data, TensorImageDataset) and data.num_classes == 6
    assert data.images.shape == (61, 3, image_size, image_size) and data.images.dtype == torch.uint8
    assert data.labels.shape == (61,) and data.labels.dtype == torch.int64
    assert torch.bincount(data.labels, minlength=6).tolist() == [11, 10, 10, 10, 10, 10]
    image, label = data[0]
    assert image.dtype == torch.float32 and 0.0 <= image.min() <= image.max() <= 1.0 and 0 <= label < 6


def test_shapes_default_sizes_and_labels_are_shuffled():
    train, test = ds.shapes("train", image_size=8), ds.shapes("test", image_size=8)
    assert (len(train), len(test)) == (4000, 1000)
    assert torch.bincount(train.labels).tolist() == [667] * 4 + [666] * 2
    assert torch.bincount(test.labels).tolist() == [167] * 4 + [166] * 2
    assert not torch.equal(train.labels[:12], torch.arange(12) % 6)  # not in class order


def test_shapes_foreground_contrasts_with_background():
    images, labels, masks = ds.draw_shapes("train", 32, 300, 0)
    pixels = images.float()  # [N, 3, S, S]
    m = masks[:, None].float()
    fg_mean = (pixels * m).sum((2, 3)) / m.sum((2, 3))
    bg_mean = (pixels * (1 - m)).sum((2, 3)) / (1 - m).sum((2, 3))
    # Every channel differs by >= 0.3 * 255 before noise (and clamping only widens the gap).
    assert (fg_mean - bg_mean).abs().min() > 70
    # The shape is one flat colour (plus noise); the striped background varies more.
    fg_std = ((pixels - fg_mean[..., None, None]) ** 2 * m).sum((2, 3)).div(m.sum((2, 3))).sqrt()
    assert fg_std.max() < 0.03 * 255 * 1.5
    fraction = masks.float().mean((1, 2))
    assert fraction.min() > 0.02 and fraction.max() < 0.6


def test_shape_classes_have_their_own_geometry():
    _, labels, masks = ds.draw_shapes("train", 48, 600, 1)
    n = len(masks)
    rows_any, cols_any = masks.any(2), masks.any(1)  # [N, S]
    top, left = rows_any.float().argmax(1), cols_any.float().argmax(1)
    height, width = rows_any.sum(1), cols_any.sum(1)
    fill = masks.flatten(1).sum(1) / (height * width)  # share of the bounding box covered
    mean_fill = {name: fill[labels == c].mean().item() for c, name in enumerate(ds.SHAPE_CLASSES)}
    assert mean_fill["square"] > 0.99
    assert abs(mean_fill["circle"] - math.pi / 4) < 0.03
    for name in ("triangle", "diamond", "ring", "cross"):
        assert 0.45 < mean_fill[name] < 0.6, name
    # Each mask cropped to its bounding box and sampled on a 12x12 grid (nearest pixel).
    grid = (torch.arange(12) + 0.5) / 12
    r = (top[:, None] + grid * height[:, None]).long()
    c = (left[:, None] + grid * width[:, None]).long()
    crops = masks[torch.arange(n)[:, None, None], r[:, :, None], c[:, None, :]].float()  # [N, 12, 12]
    means = torch.stack([crops[labels == k].mean(0) for k in range(6)])  # [6, 12, 12]
    assert means[4, 5:7, 5:7].max() == 0 and means[0, 5:7, 5:7].min() == 1  # the ring is hollow
    assert means[2, 0].mean() < 0.2 and means[2, -1].mean() > 0.9  # the triangle's base is at the bottom
    distance = (means[:, None] - means[None]).abs().mean((2, 3))
    assert distance[~torch.eye(6, dtype=torch.bool)].min() > 0.1
    # The per-class mean masks tell the classes apart: nearest mean classifies every shape right.
    nearest = (crops[:, None] - means[None]).abs().mean((2, 3)).argmin(1)
    assert torch.equal(nearest, labels)


@pytest.mark.parametrize(("params", "message"), [
    ({"image_size": 7}, r"image_size must be >= 8, got 7"),
    ({"num_images": 0}, r"num_images must be >= 1"),
])
def test_shapes_rejects_bad_params(params, message):
    with pytest.raises(ValueError, match=message):
        ds.shapes("train", **params)


def test_shapes_smallest_size_draws_every_shape():
    _, _, masks = ds.draw_shapes("train", 8, 3000, 5)
    assert masks.flatten(1).sum(1).min() >= 3


# --- IDX reader -----------------------------------------------------------------------------

def test_read_idx_follows_the_format(tmp_path):
    values = [[1, -2, 300], [70000, 0, -1]]
    raw = struct.pack(">BBBBII", 0, 0, 0x0C, 2, 2, 3) + struct.pack(">6i", *sum(values, []))
    (tmp_path / "ints").write_bytes(raw)
    (tmp_path / "ints.gz").write_bytes(gzip.compress(raw))
    for name in ("ints", "ints.gz"):
        out = ds.read_idx(tmp_path / name)
        assert out.dtype == torch.int32 and out.tolist() == values


@pytest.mark.parametrize("name", ["x.gz", "x"])
@pytest.mark.parametrize("values", [
    torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8),
    torch.randn(4, 2).numpy(),
    np.arange(7, dtype=np.int16),
])
def test_idx_round_trip(tmp_path, name, values):
    ds.write_idx(tmp_path / name, values)
    back = ds.read_idx(str(tmp_path / name))
    assert np.array_equal(back.numpy(), np.asarray(values)) and back.numpy().dtype == np.asarray(values).dtype


def test_write_idx_gz_is_reproducible(tmp_path):
    values = torch.arange(100, dtype=torch.uint8)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        ds.write_idx(tmp_path / folder / "x.gz", values)
    a, b = (tmp_path / "a" / "x.gz").read_bytes(), (tmp_path / "b" / "x.gz").read_bytes()
    assert a[4:8] == b"\0\0\0\0" and a == b  # gzip mtime field is zero
    with pytest.raises(ValueError, match="cannot write dtype int64"):
        ds.write_idx(tmp_path / "c", np.arange(3))


@pytest.mark.parametrize(("raw", "message"), [
    (b"\x00\x01\x08\x01\x00\x00\x00\x01\x07", r"not an IDX file \(magic bytes 00010801"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x07", r"not an IDX file"),
    (b"PK\x03\x04", r"not an IDX file"),
    (b"", r"magic bytes missing"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", r"declares 3 dimensions but the file is only 8 bytes"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", r"IDX shape \(5,\) needs 13 bytes, the file has 10"),
])
def test_read_idx_rejects_bad_files(tmp_path, raw, message):
    path = tmp_path / "bad"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=message) as info:
        ds.read_idx(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# --- fashion-mnist --------------------------------------------------------------------------

def _write_fake_fashion_mnist(folder: Path, split: str, n: int, seed: int, gz: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), dtype=torch.uint8, generator=g)
    folder.mkdir(parents=True, exist_ok=True)
    image_name, label_name = ds.FASHION_MNIST_FILES[split]
    suffix = ".gz" if gz else ""
    ds.write_idx(folder / f"{image_name}{suffix}", images)
    ds.write_idx(folder / f"{label_name}{suffix}", labels)
    return images, labels


@pytest.fixture
def no_system_data(tmp_path, monkeypatch):
    """Hide the Debian copy, the download cache and $MIMBENCH_DATA from the search."""
    monkeypatch.setattr(ds, "DEFAULT_DATA_DIRS", (tmp_path / "debian",))
    monkeypatch.setattr(ds, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.delenv("MIMBENCH_DATA", raising=False)


def _check(data: TensorImageDataset, images: torch.Tensor, labels: torch.Tensor) -> None:
    assert data.num_classes == 10 and data.images.shape == (len(images), 1, 28, 28)
    assert data.images.dtype == torch.uint8 and data.labels.dtype == torch.int64
    assert torch.equal(data.images[:, 0], images) and torch.equal(data.labels, labels.long())


@pytest.mark.parametrize(("layout", "gz"), [(".", True), ("FashionMNIST/raw", False), ("FashionMNIST/raw", True)])
def test_fashion_mnist_from_root(tmp_path, no_system_data, layout, gz):
    train = _write_fake_fashion_mnist(tmp_path / "data" / layout, "train", 12, 0, gz)
    test = _write_fake_fashion_mnist(tmp_path / "data" / layout, "test", 5, 1, gz)
    _check(ds.fashion_mnist("train", root=str(tmp_path / "data")), *train)
    _check(ds.fashion_mnist("test", root=str(tmp_path / "data")), *test)


def test_fashion_mnist_from_env(tmp_path, no_system_data, monkeypatch):
    expected = _write_fake_fashion_mnist(tmp_path / "env" / "FashionMNIST" / "raw", "test", 7, 2)
    monkeypatch.setenv("MIMBENCH_DATA", str(tmp_path / "env"))
    _check(ds.fashion_mnist("test"), *expected)


def test_env_comes_before_the_system_copy(tmp_path, no_system_data, monkeypatch):
    system = _write_fake_fashion_mnist(tmp_path / "debian", "test", 3, 3)
    _check(ds.fashion_mnist("test"), *system)
    from_env = _write_fake_fashion_mnist(tmp_path / "env", "test", 4, 4)
    monkeypatch.setenv("MIMBENCH_DATA", str(tmp_path / "env"))
    _check(ds.fashion_mnist("test"), *from_env)


def test_missing_data_is_a_one_line_error_naming_the_places(tmp_path, no_system_data, monkeypatch):
    monkeypatch.setenv("MIMBENCH_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as info:
        ds.fashion_mnist("train")
    message = str(info.value)
    assert "\n" not in message
    for place in (tmp_path / "env", tmp_path / "cache", tmp_path / "debian"):
        assert str(place) in message
    assert "apt install dataset-fashion-mnist" in message and "download: true" in message
    assert "MIMBENCH_DATA" in message and "root" in message


def test_explicit_root_is_the_only_place_searched(tmp_path, no_system_data):
    _write_fake_fashion_mnist(tmp_path / "debian", "train", 3, 0)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "empty"))) as info:
        ds.fashion_mnist("train", root=str(tmp_path / "empty"))
    assert str(tmp_path / "debian") not in str(info.value)


def test_half_a_split_is_not_enough(tmp_path, no_system_data):
    _write_fake_fashion_mnist(tmp_path / "data", "train", 3, 0)
    (tmp_path / "data" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError):
        ds.fashion_mnist("train", root=str(tmp_path / "data"))


def test_download_uses_torchvision_layout(tmp_path, no_system_data, monkeypatch):
    calls = []

    class FakeFashionMNIST:  # stands in for torchvision's, which needs a network
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            split = "train" if train else "test"
            self.expected = _write_fake_fashion_mnist(Path(root) / "FashionMNIST" / "raw", split, 6, 9, gz=False)

    fake = types.ModuleType("torchvision.datasets")
    fake.FashionMNIST = FakeFashionMNIST
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake)
    data = ds.fashion_mnist("test", download=True)
    assert calls == [(str(tmp_path / "cache"), False, True)]
    expected = _write_fake_fashion_mnist(tmp_path / "check", "test", 6, 9)
    _check(data, *expected)
    ds.fashion_mnist("test", download=True)  # found in the cache now: no second download
    assert len(calls) == 1
    ds.fashion_mnist("train", root=str(tmp_path / "mine"), download=True)
    assert calls[-1] == (str(tmp_path / "mine"), True, True)


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_the_debian_package(monkeypatch):
    monkeypatch.delenv("MIMBENCH_DATA", raising=False)
    monkeypatch.setattr(ds, "CACHE_DIR", Path("/nonexistent-mimbench-cache"))
    test = ds.fashion_mnist("test")
    assert test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [1000] * 10


# --- fashion-mnist-mini ---------------------------------------------------------------------

@pytest.mark.parametrize(("split", "per_class"), [("train", 500), ("test", 100)])
def test_fashion_mnist_mini_contents(split, per_class):
    data = ds.fashion_mnist_mini(split)
    assert data.images.shape == (10 * per_class, 1, 28, 28) and data.images.dtype == torch.uint8
    assert data.num_classes == 10 and data.labels.dtype == torch.int64
    assert torch.bincount(data.labels).tolist() == [per_class] * 10
    assert 40 < data.images.float().mean() < 100  # real clothes on black, not blank or noise


def test_fashion_mnist_mini_is_small_and_matches_its_readme():
    files = sorted(MINI_DIR.glob("*.gz"))
    assert len(files) == 4
    assert sum(f.stat().st_size for f in files) <= 8 * 2**20
    readme = (MINI_DIR / "README.md").read_text()
    for f in files:
        assert hashlib.sha256(f.read_bytes()).hexdigest() in readme, f.name


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
@pytest.mark.parametrize(("split", "per_class"), [("train", 500), ("test", 100)])
def test_fashion_mnist_mini_is_the_first_images_of_each_class(split, per_class):
    image_name, label_name = ds.FASHION_MNIST_FILES[split]
    images = ds.read_idx(DEBIAN_DIR / f"{image_name}.gz")
    labels = ds.read_idx(DEBIAN_DIR / f"{label_name}.gz").long()
    keep = torch.cat([(labels == c).nonzero().squeeze(1)[:per_class] for c in range(10)]).sort().values
    mini = ds.fashion_mnist_mini(split)
    assert torch.equal(mini.images[:, 0], images[keep]) and torch.equal(mini.labels, labels[keep])
