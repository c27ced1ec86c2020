"""CIFAR-10/100, STL-10, imagefolder and unlabeled-folder, read from small files written here in the real on-disk formats."""

from __future__ import annotations

import hashlib
import pickle
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mimbench.data import TensorImageDataset
from mimbench_plugins import image_datasets as im

# --- registration ---------------------------------------------------------------------------


def test_registers_five_documented_factories():
    registered = {}
    im.mimbench_register_datasets(lambda name, factory, description=None: registered.setdefault(name, factory))
    assert set(registered) == {"cifar10", "cifar100", "stl10", "imagefolder", "unlabeled-folder"}
    for factory in registered.values():
        assert factory.__doc__.strip().splitlines()[0].endswith(".")


@pytest.fixture
def no_system_data(tmp_path, monkeypatch):
    """Hide the download cache and $MIMBENCH_DATA from the search."""
    monkeypatch.setattr(im, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.delenv("MIMBENCH_DATA", raising=False)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# --- CIFAR ----------------------------------------------------------------------------------

def _cifar_images(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _pickle(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(entry, f)


def _write_cifar10(folder: Path, per_batch: int = 4) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The files of cifar-10-python.tar.gz, as Python 3 re-pickles them (bytes keys), with few images."""
    out = {}
    for split, names in im.CIFAR10_FILES.items():
        images, labels = [], []
        for k, name in enumerate(names):
            x = _cifar_images(per_batch + k, seed=len(out) * 10 + k)  # batches of different lengths
            y = [(3 * i + k) % 10 for i in range(len(x))]
            _pickle(folder / name, {b"batch_label": name.encode(), b"labels": y,
                                    b"data": x.reshape(len(x), 3072).numpy(), b"filenames": [b"x.png"] * len(x)})
            images.append(x)
            labels += y
        out[split] = torch.cat(images), torch.tensor(labels)
    _pickle(folder / "batches.meta", {b"label_names": [b"airplane"] * 10, b"num_cases_per_batch": per_batch,
                                      b"num_vis": 3072})
    return out


def _write_cifar100(folder: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    out = {}
    for split, n in (("train", 9), ("test", 5)):
        x = _cifar_images(n, seed=100 + n)
        fine, coarse = [(7 * i + n) % 100 for i in range(n)], [(3 * i) % 20 for i in range(n)]
        _pickle(folder / split, {"filenames": ["x.png"] * n, "batch_label": split, "fine_labels": fine,
                                 "coarse_labels": coarse, "data": x.reshape(n, 3072).numpy()})  # str keys, as Python 2's
        out[split] = x, torch.tensor(fine), torch.tensor(coarse)
    _pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                              "coarse_label_names": [f"c{i}" for i in range(20)]})
    return out


def test_cifar10_round_trips_pixels_and_labels(tmp_path, no_system_data):
    expected = _write_cifar10(tmp_path / "data" / "cifar-10-batches-py")
    for split in ("train", "test"):
        data = im.cifar10(split, root=str(tmp_path / "data"))
        images, labels = expected[split]
        assert isinstance(data, TensorImageDataset) and data.num_classes == 10
        assert data.images.dtype == torch.uint8 and data.images.shape == (len(images), 3, 32, 32)
        assert data.labels.dtype == torch.int64
        assert torch.equal(data.images, images) and torch.equal(data.labels, labels)
    train = im.cifar10("train", root=str(tmp_path / "data"))
    assert len(train) == 4 + 5 + 6 + 7 + 8
    # A known pixel, from the raw row: red plane first, then green, then blue; each row-major.
    raw = pickle.loads((tmp_path / "data" / "cifar-10-batches-py" / "data_batch_2").read_bytes())[b"data"]
    assert train.images[4, 1, 3, 17] == raw[0, 1024 + 3 * 32 + 17]
    assert train.images[4, 2, 31, 0] == raw[0, 2048 + 31 * 32]


def test_torchvision_refuses_these_files_so_we_read_the_pickles(tmp_path):
    """torchvision's CIFAR10 checks every file's MD5 against the official archive: any other copy is refused."""
    from torchvision.datasets import CIFAR10
    _write_cifar10(tmp_path / "cifar-10-batches-py")
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        CIFAR10(str(tmp_path), train=False, download=False)
    assert len(im.cifar10("test", root=str(tmp_path))) == 4


def test_cifar10_files_flat_in_root_and_from_env(tmp_path, no_system_data, monkeypatch):
    expected = _write_cifar10(tmp_path / "flat")
    assert torch.equal(im.cifar10("test", root=str(tmp_path / "flat")).images, expected["test"][0])
    monkeypatch.setenv("MIMBENCH_DATA", str(tmp_path / "flat"))
    assert torch.equal(im.cifar10("train").labels, expected["train"][1])


def test_cifar100_fine_and_coarse(tmp_path, no_system_data, monkeypatch):
    expected = _write_cifar100(tmp_path / "data" / "cifar-100-python")
    monkeypatch.setenv("MIMBENCH_DATA", str(tmp_path / "data"))
    for split in ("train", "test"):
        images, fine, coarse = expected[split]
        data = im.cifar100(split)
        assert data.num_classes == 100 and torch.equal(data.images, images) and torch.equal(data.labels, fine)
        data = im.cifar100(split, label="coarse")
        assert data.num_classes == 20 and torch.equal(data.images, images) and torch.equal(data.labels, coarse)
    with pytest.raises(ValueError, match="label must be 'fine' or 'coarse', got 'medium'"):
        im.cifar100("train", label="medium")


def test_cifar_missing_data_is_one_line_naming_the_places(tmp_path, no_system_data, monkeypatch):
    monkeypatch.setenv("MIMBENCH_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as info:
        im.cifar10("train")
    message = _one_line(info)
    for place in (tmp_path / "env" / "cifar-10-batches-py", tmp_path / "cache" / "cifar-10-batches-py"):
        assert str(place) in message
    assert "data_batch_1" in message and "cifar-10-python.tar.gz" in message
    assert "download: true" in message and "MIMBENCH_DATA" in message and "'root'" in message
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "mine" / "cifar-100-python"))) as info:
        im.cifar100("test", root=str(tmp_path / "mine"))
    _one_line(info)


def test_cifar10_one_batch_missing_is_not_enough(tmp_path, no_system_data):
    _write_cifar10(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    assert len(im.cifar10("test", root=str(tmp_path))) == 4
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        im.cifar10("train", root=str(tmp_path))


@pytest.mark.parametrize(("entry", "message"), [
    ({b"data": np.zeros((2, 3072), np.uint8)}, r"needs keys 'data' and 'labels'"),
    ({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}, r"expected uint8 data \[n, 3072\]"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, r"expected uint8 data"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"labels must lie in 0\.\.9, got 0\.\.10"),
    ([1, 2], r"expected a pickled dict"),
])
def test_cifar_rejects_bad_batches(tmp_path, entry, message):
    _pickle(tmp_path / "test_batch", entry)
    with pytest.raises(ValueError, match=message) as info:
        im.cifar10("test", root=str(tmp_path))
    assert str(tmp_path / "test_batch") in _one_line(info)


def test_cifar_rejects_a_file_that_is_not_a_pickle(tmp_path):
    (tmp_path / "test_batch").write_bytes(b"\x00\x01 not a pickle")
    with pytest.raises(ValueError, match="not a CIFAR pickle") as info:
        im.cifar10("test", root=str(tmp_path))
    _one_line(info)


@pytest.mark.parametrize("factory", [im.cifar10, im.cifar100, im.stl10])
def test_bad_split(factory):
    with pytest.raises(ValueError, match="split must be one of 'train', 'test'.*got 'val'"):
        factory("val", root="/nonexistent")


def _fake_torchvision(monkeypatch, name: str, write) -> list:
    calls = []

    class Fake:  # stands in for torchvision's class, which needs a network
        def __init__(self, root, download, **kwargs):
            calls.append((root, kwargs, download))
            write(Path(root))

    fake = types.ModuleType("torchvision.datasets")
    setattr(fake, name, Fake)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake)
    return calls


def test_download_uses_torchvision_into_the_cache_or_root(tmp_path, no_system_data, monkeypatch):
    calls = _fake_torchvision(monkeypatch, "CIFAR10", lambda root: _write_cifar10(root / "cifar-10-batches-py"))
    data = im.cifar10("test", download=True)
    assert calls == [(str(tmp_path / "cache"), {"train": False}, True)] and len(data) == 4
    im.cifar10("test", download=True)  # found in the cache now: no second download
    assert len(calls) == 1
    im.cifar10("train", root=str(tmp_path / "mine"), download=True)
    assert calls[-1] == (str(tmp_path / "mine"), {"train": True}, True)

    calls = _fake_torchvision(monkeypatch, "STL10", lambda root: _write_stl10(root / "stl10_binary"))
    assert len(im.stl10("unlabeled", root=str(tmp_path / "s"), download=True)) == 4
    assert calls == [(str(tmp_path / "s"), {"split": "unlabeled"}, True)]
    # The archive holds every split: train+unlabeled downloads once, for the first part missing.
    assert len(im.stl10("train", root=str(tmp_path / "t"), download=True, train_split="train+unlabeled")) == 6 + 4
    assert calls[1:] == [(str(tmp_path / "t"), {"split": "train"}, True)]


# --- STL-10 ---------------------------------------------------------------------------------

def _write_stl10(folder: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Column-major 3x96x96 uint8 images back to back; labels 1..10, one byte each."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, (split, n) in enumerate((("train", 6), ("test", 3), ("unlabeled", 4))):
        x = torch.randint(0, 256, (n, 3, 96, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(k))
        (folder / f"{split}_X.bin").write_bytes(x.transpose(2, 3).contiguous().numpy().tobytes())
        y = torch.tensor([(2 * i + k) % 10 for i in range(n)]) if split != "unlabeled" else torch.full((n,), -1)
        if split != "unlabeled":
            (folder / f"{split}_y.bin").write_bytes((y + 1).to(torch.uint8).numpy().tobytes())
        out[split] = x, y
    (folder / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    return out


def test_stl10_round_trips_every_split(tmp_path, no_system_data):
    expected = _write_stl10(tmp_path / "stl10_binary")
    for split in ("train", "test"):
        data = im.stl10(split, root=str(tmp_path))
        images, labels = expected[split]
        assert data.num_classes == 10 and data.images.shape == (len(images), 3, 96, 96)
        assert data.images.dtype == torch.uint8 and data.labels.dtype == torch.int64
        assert torch.equal(data.images, images) and torch.equal(data.labels, labels)
    unlabeled = im.stl10("unlabeled", root=str(tmp_path))
    assert torch.equal(unlabeled.images, expected["unlabeled"][0])
    assert unlabeled.num_classes == 0 and unlabeled.labels.tolist() == [0] * 4  # valid indices, no classes
    assert torch.equal(im.read_stl10(tmp_path / "stl10_binary" / "unlabeled_X.bin")[1], torch.full((4,), -1))
    # A known pixel: byte offset channel * 96*96 + column * 96 + row in the image's block.
    raw = (tmp_path / "stl10_binary" / "test_X.bin").read_bytes()
    data = im.stl10("test", root=str(tmp_path))
    c, row, col = 2, 5, 90
    assert data.images[1, c, row, col] == raw[96 * 96 * 3 + c * 96 * 96 + col * 96 + row]
    assert "pre-training only" in im.stl10.__doc__


def test_stl10_train_split_chooses_what_train_returns(tmp_path, no_system_data):
    expected = _write_stl10(tmp_path / "stl10_binary")
    (train_x, train_y), (test_x, test_y), (unlabeled_x, _) = expected["train"], expected["test"], expected["unlabeled"]
    data = im.stl10("train", root=str(tmp_path), train_split="train")
    assert data.num_classes == 10 and torch.equal(data.images, train_x) and torch.equal(data.labels, train_y)
    data = im.stl10("train", root=str(tmp_path), train_split="unlabeled")
    assert data.num_classes == 0 and torch.equal(data.images, unlabeled_x) and data.labels.tolist() == [0] * 4
    data = im.stl10("train", root=str(tmp_path), train_split="train+unlabeled")
    assert data.num_classes == 0 and len(data) == 6 + 4 and data.labels.dtype == torch.int64
    assert torch.equal(data.images, torch.cat([train_x, unlabeled_x])) and data.labels.tolist() == [0] * 10
    for train_split in im.STL10_TRAIN_SPLITS:  # test stays the labelled test set; "unlabeled" stays unlabeled
        test = im.stl10("test", root=str(tmp_path), train_split=train_split)
        assert test.num_classes == 10 and torch.equal(test.images, test_x) and torch.equal(test.labels, test_y)
        assert torch.equal(im.stl10("unlabeled", root=str(tmp_path), train_split=train_split).images, unlabeled_x)
    with pytest.raises(ValueError, match="train_split must be one of 'train', 'unlabeled', 'train\\+unlabeled', "
                                         "got 'all'"):
        im.stl10("train", root=str(tmp_path), train_split="all")


def test_stl10_train_split_needs_only_the_files_it_reads(tmp_path, no_system_data):
    folder = tmp_path / "stl10_binary"
    _write_stl10(folder)
    (folder / "train_y.bin").unlink()
    assert len(im.stl10("train", root=str(tmp_path), train_split="unlabeled")) == 4
    with pytest.raises(FileNotFoundError, match="train_y.bin"):
        im.stl10("train", root=str(tmp_path))
    _write_stl10(folder)
    (folder / "unlabeled_X.bin").unlink()
    assert len(im.stl10("train", root=str(tmp_path))) == 6
    with pytest.raises(FileNotFoundError, match=r"STL-10 unlabeled files \(unlabeled_X.bin\)") as info:
        im.stl10("train", root=str(tmp_path), train_split="train+unlabeled")
    assert str(folder) in _one_line(info)


def test_stl10_agrees_with_torchvision_s_reader(tmp_path):
    """torchvision's STL10 would refuse these files (MD5), but its private reader shows the same orientation."""
    from torchvision.datasets import STL10
    _write_stl10(tmp_path / "stl10_binary")
    reader = STL10.__new__(STL10)
    reader.root, reader.base_folder = str(tmp_path), "stl10_binary"
    images, labels = reader._STL10__loadfile("train_X.bin", "train_y.bin")
    data = im.stl10("train", root=str(tmp_path))
    assert np.array_equal(data.images.numpy(), images) and np.array_equal(data.labels.numpy(), labels)


def test_stl10_missing_and_bad_files(tmp_path, no_system_data):
    with pytest.raises(FileNotFoundError) as info:
        im.stl10("unlabeled", root=str(tmp_path))
    message = _one_line(info)
    assert str(tmp_path / "stl10_binary") in message and "unlabeled_X.bin" in message
    assert "stl10_binary.tar.gz" in message
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    (folder / "test_X.bin").write_bytes(bytes(3 * 96 * 96 + 1))
    (folder / "test_y.bin").write_bytes(bytes([1]))
    with pytest.raises(ValueError, match="not a whole number of 3x96x96") as info:
        im.stl10("test", root=str(tmp_path))
    _one_line(info)
    (folder / "test_X.bin").write_bytes(bytes(2 * 3 * 96 * 96))
    with pytest.raises(ValueError, match="1 labels for the 2 images"):
        im.stl10("test", root=str(tmp_path))
    (folder / "test_y.bin").write_bytes(bytes([1, 0]))
    with pytest.raises(ValueError, match=r"labels must lie in 1\.\.10, got 0\.\.1"):
        im.stl10("test", root=str(tmp_path))


# --- imagefolder ----------------------------------------------------------------------------

def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _write_folder(root: Path) -> dict[str, np.ndarray]:
    """Two classes; PNGs of several sizes and modes (RGB, greyscale, palette, RGBA)."""
    g = np.random.default_rng(0)
    exact = g.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    _png(root / "train" / "cat" / "a.png", exact)  # already the target size: kept exactly
    _png(root / "train" / "cat" / "b.png", g.integers(0, 256, (40, 24, 3), dtype=np.uint8))
    _png(root / "train" / "dog" / "c.png", np.full((8, 8), 200, np.uint8))  # greyscale, upscaled
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (10, 20, 30), 255
    _png(root / "train" / "dog" / "d.png", rgba)
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    _png(root / "test" / "dog" / "e.png", np.full((16, 16, 3), (1, 2, 3), np.uint8))  # no cat in test
    return {"exact": exact}


def test_imagefolder_loads_resizes_and_labels(tmp_path):
    arrays = _write_folder(tmp_path)
    data = im.imagefolder("train", root=str(tmp_path), image_size=16)
    assert isinstance(data, TensorImageDataset) and data.num_classes == 2
    assert data.images.shape == (4, 3, 16, 16) and data.images.dtype == torch.uint8
    assert data.labels.tolist() == [0, 0, 1, 1] and data.labels.dtype == torch.int64
    assert torch.equal(data.images[0], torch.from_numpy(arrays["exact"]).permute(2, 0, 1))  # exact round trip
    assert (data.images[2] == 200).all()  # greyscale -> RGB, flat stays flat when resized
    assert data.images[3, :, 7, 11].tolist() == [10, 20, 30]  # RGBA -> RGB
    test = im.imagefolder("test", root=str(tmp_path), image_size=16)
    # 'dog' keeps label 1 although 'test' has no 'cat' folder
    assert test.num_classes == 2 and test.labels.tolist() == [1]
    assert test.images[0, :, 0, 0].tolist() == [1, 2, 3]


def test_imagefolder_default_size_and_greyscale(tmp_path):
    _write_folder(tmp_path)
    data = im.imagefolder("train", root=str(tmp_path))
    assert data.images.shape == (4, 3, 32, 32)
    grey = im.imagefolder("train", root=str(tmp_path), image_size=8, channels=1)
    assert grey.images.shape == (4, 1, 8, 8)
    assert (grey.images[2] == 200).all()
    assert grey.images[3, 0, 4, 4] == round(0.299 * 10 + 0.587 * 20 + 0.114 * 30)  # PIL's luma


def test_imagefolder_missing_or_empty(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        im.imagefolder("train", root=str(tmp_path))
    assert str(tmp_path / "train") in _one_line(info)
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="has no class folders") as info:
        im.imagefolder("train", root=str(tmp_path))
    assert str(tmp_path / "train") in _one_line(info)
    (tmp_path / "train" / "cat").mkdir()
    (tmp_path / "train" / "cat" / "x.txt").write_text("no images")
    with pytest.raises(FileNotFoundError, match="has no image files") as info:
        im.imagefolder("train", root=str(tmp_path))
    assert str(tmp_path / "train") in _one_line(info)


def test_imagefolder_bad_params_and_bad_image(tmp_path):
    _write_folder(tmp_path)
    with pytest.raises(ValueError, match="channels must be 1 .* or 3 .*got 2"):
        im.imagefolder("train", root=str(tmp_path), channels=2)
    with pytest.raises(ValueError, match="image_size must be a positive int, got 0"):
        im.imagefolder("train", root=str(tmp_path), image_size=0)
    with pytest.raises(ValueError, match="split must be a plain folder name"):
        im.imagefolder("../train", root=str(tmp_path))
    (tmp_path / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png: cannot read the image") as info:
        im.imagefolder("train", root=str(tmp_path))
    _one_line(info)


# --- unlabeled-folder -----------------------------------------------------------------------

def _rank(relative: str) -> float:
    """The documented split rule, recomputed here: sha256 of the relative path, first 8 bytes over 2**64."""
    return int.from_bytes(hashlib.sha256(relative.encode()).digest()[:8], "big") / 2**64


def _write_numbered(root: Path, ids: range) -> dict[int, str]:
    """One flat 4x4 PNG per id, colour (id % 256, id // 256, 77), in nested folders; id -> relative path."""
    paths = {}
    for i in ids:
        paths[i] = f"d{i % 3}/s{i % 2}/img{i:03d}.png"
        _png(root / paths[i], np.full((4, 4, 3), (i % 256, i // 256, 77), np.uint8))
    return paths


def _ids(data: TensorImageDataset) -> list[int]:
    return (data.images[:, 0, 0, 0].long() + 256 * data.images[:, 1, 0, 0].long()).tolist()


def test_unlabeled_folder_splits_by_a_hash_of_the_path(tmp_path):
    paths = _write_numbered(tmp_path, range(300))
    train, test = (im.unlabeled_folder(split, root=str(tmp_path), image_size=4) for split in ("train", "test"))
    expected_test = sorted((i for i in paths if _rank(paths[i]) < 0.1), key=paths.get)
    assert 15 <= len(expected_test) <= 45  # about 10% of 300
    assert _ids(test) == expected_test  # in sorted path order
    assert _ids(train) == sorted(set(paths) - set(expected_test), key=paths.get)
    for data in (train, test):
        assert isinstance(data, TensorImageDataset) and data.num_classes == 0
        assert data.images.dtype == torch.uint8 and data.images.shape[1:] == (3, 4, 4)
        assert data.labels.dtype == torch.int64 and data.labels.tolist() == [0] * len(data)
    assert torch.equal(im.unlabeled_folder("test", root=str(tmp_path), image_size=4).images, test.images)
    half = im.unlabeled_folder("test", root=str(tmp_path), image_size=4, test_fraction=0.5)
    assert 120 <= len(half) <= 180 and set(expected_test) < set(_ids(half))  # a larger fraction only adds files


def test_unlabeled_folder_adding_files_moves_no_other_file(tmp_path):
    _write_numbered(tmp_path, range(100))
    before = set(_ids(im.unlabeled_folder("test", root=str(tmp_path), image_size=4)))
    _write_numbered(tmp_path, range(100, 250))
    after = set(_ids(im.unlabeled_folder("test", root=str(tmp_path), image_size=4)))
    assert after & set(range(100)) == before and after - before


def test_unlabeled_folder_reads_and_resizes_like_imagefolder(tmp_path):
    _write_folder(tmp_path)  # <split>/<class>/*.png of several sizes and modes, plus a text file
    relatives = ["test/dog/e.png", "train/cat/a.png", "train/cat/b.png", "train/dog/c.png", "train/dog/d.png"]
    test = im.split_by_path(relatives, 0.5)
    assert test == {r for r in relatives if _rank(r) < 0.5} and 0 < len(test) < len(relatives)
    for size, channels in ((16, 3), (9, 1)):
        labelled = {split: im.imagefolder(split, root=str(tmp_path), image_size=size, channels=channels)
                    for split in ("train", "test")}
        by_path = dict(zip(relatives, [*labelled["test"].images, *labelled["train"].images]))
        for split in ("train", "test"):
            data = im.unlabeled_folder(split, root=str(tmp_path), image_size=size, channels=channels, test_fraction=0.5)
            chosen = [r for r in relatives if (r in test) == (split == "test")]
            assert data.images.shape == (len(chosen), channels, size, size)
            assert torch.equal(data.images, torch.stack([by_path[r] for r in chosen]))


def test_unlabeled_folder_resizes_bilinear_antialiased_as_the_core_does(tmp_path):
    from mimbench.data import resize_uint8
    halves = np.zeros((4, 4, 3), np.uint8)
    halves[:, 2:] = 200  # left half black, right half 200
    for name in ("a.png", "b.png"):
        _png(tmp_path / name, halves)
    data = im.unlabeled_folder("train", root=str(tmp_path), image_size=2)
    assert data.images[0, 0].tolist() == [[29, 171], [29, 171]]  # 200 * 0.25 / 1.75 of the far half leaks in
    assert torch.equal(data.images[:1], resize_uint8(torch.from_numpy(halves).permute(2, 0, 1)[None], 2))


def test_unlabeled_folder_extensions_hidden_files_and_greyscale(tmp_path):
    grey = np.full((6, 10), 120, np.uint8)
    for name in ("A.PNG", "b.JpG", "c.gif", "d.bmp", "e.webp", "f.tiff", "g.TIF", "deep/er/h.jpeg"):
        _png(tmp_path / name, grey)
    for name in (".hidden.png", ".cache/i.png", "j.png.bak"):
        _png(tmp_path / name, grey) if name.endswith(".png") else (tmp_path / name).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an image")
    parts = [im.unlabeled_folder(split, root=str(tmp_path), image_size=5, channels=1, test_fraction=0.3)
             for split in ("train", "test")]
    assert sum(len(p) for p in parts) == 8 and min(len(p) for p in parts) >= 1
    for data in parts:
        assert data.images.shape[1:] == (1, 5, 5) and (data.images == 120).all()  # flat stays flat


def test_unlabeled_folder_keeps_one_image_in_each_split(tmp_path):
    paths = _write_numbered(tmp_path, range(2))
    low, high = sorted(paths, key=lambda i: _rank(paths[i]))
    for fraction in (0.001, 0.999):  # would put both in train, or both in test
        assert _ids(im.unlabeled_folder("test", root=str(tmp_path), image_size=4, test_fraction=fraction)) == [low]
        assert _ids(im.unlabeled_folder("train", root=str(tmp_path), image_size=4, test_fraction=fraction)) == [high]
    (tmp_path / paths[high]).unlink()
    with pytest.raises(ValueError, match="has 1 image file; unlabeled-folder needs at least 2") as info:
        im.unlabeled_folder("train", root=str(tmp_path))
    assert str(tmp_path) in _one_line(info)


def test_unlabeled_folder_missing_or_without_images(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found; expected a folder .*holding image files") as info:
        im.unlabeled_folder("train", root=str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in _one_line(info)
    (tmp_path / "notes.txt").write_text("not an image")
    _png(tmp_path / ".hidden" / "x.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"has no image files \(looked, at any depth, for .*\.png") as info:
        im.unlabeled_folder("test", root=str(tmp_path))
    assert str(tmp_path) in _one_line(info)


def test_unlabeled_folder_bad_params_and_bad_image(tmp_path):
    _write_numbered(tmp_path, range(3))
    for fraction in (0.0, 1.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=f"test_fraction must lie strictly between 0 and 1, got {fraction}"):
            im.unlabeled_folder("train", root=str(tmp_path), test_fraction=fraction)
    with pytest.raises(ValueError, match="channels must be 1 .* or 3 .*got 2"):
        im.unlabeled_folder("train", root=str(tmp_path), channels=2)
    with pytest.raises(ValueError, match="image_size must be a positive int, got 0"):
        im.unlabeled_folder("train", root=str(tmp_path), image_size=0)
    with pytest.raises(ValueError, match="split must be one of 'train', 'test', got 'val'"):
        im.unlabeled_folder("val", root=str(tmp_path))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    errors = []
    for split in ("train", "test"):  # only the split holding the file reads it
        try:
            im.unlabeled_folder(split, root=str(tmp_path), test_fraction=0.5)
        except ValueError as exc:
            errors.append(str(exc))
    assert len(errors) == 1 and errors[0] == f"{tmp_path / 'broken.png'}: cannot read the image (UnidentifiedImageError)"


def _registry():
    from mimbench.plugins import load_plugins
    from mimbench.registry import Registry
    registry = Registry(load_plugins(use_env=False))
    if "unlabeled-folder" not in registry.names("dataset"):  # no entry point yet: load the module by name
        registry = Registry(load_plugins(["mimbench_plugins.image_datasets"], use_env=False))
    return registry


def test_through_the_registry(tmp_path, no_system_data):
    """The core passes the suite's image_size to imagefolder; params are checked against the signatures."""
    from mimbench.registry import ConfigError
    registry = _registry()
    assert {"cifar10", "cifar100", "stl10", "imagefolder", "unlabeled-folder"} <= set(registry.names("dataset"))
    _write_folder(tmp_path / "imgs")
    data = registry.build("dataset", "imagefolder", {"root": str(tmp_path / "imgs"), "channels": 1},
                          split="train", image_size=12)
    assert data.images.shape == (4, 1, 12, 12)
    with pytest.raises(ConfigError, match="param 'channels' must be"):
        registry.build("dataset", "imagefolder", {"root": str(tmp_path), "channels": 2}, split="train", image_size=8)
    with pytest.raises(ConfigError, match="param 'label' must be"):
        registry.build("dataset", "cifar100", {"label": "medium"}, split="train", image_size=32)
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "none" / "cifar-10-batches-py"))):
        registry.build("dataset", "cifar10", {"root": str(tmp_path / "none")}, split="test", image_size=32)
    _write_cifar10(tmp_path / "c" / "cifar-10-batches-py")
    data = registry.build("dataset", "cifar10", {"root": str(tmp_path / "c")}, split="test", image_size=16)
    assert data.images.shape == (4, 3, 32, 32)  # cifar10 takes no image_size: the core resizes


def test_unlabeled_data_through_the_registry(tmp_path, no_system_data):
    from mimbench.registry import ConfigError
    registry = _registry()
    assert registry.get("dataset", "unlabeled-folder").defaults() == {"channels": 3, "test_fraction": 0.1}
    _write_numbered(tmp_path / "u", range(20))
    sizes = [len(registry.build("dataset", "unlabeled-folder", {"root": str(tmp_path / "u"), "test_fraction": 0.5},
                                split=split, image_size=6)) for split in ("train", "test")]
    assert sum(sizes) == 20 and min(sizes) >= 1
    data = registry.build("dataset", "unlabeled-folder", {"root": str(tmp_path / "u"), "channels": 1},
                          split="train", image_size=6)
    assert data.images.shape[1:] == (1, 6, 6) and data.num_classes == 0
    with pytest.raises(ConfigError, match="test_fraction must lie strictly between 0 and 1, got 1.0"):
        registry.build("dataset", "unlabeled-folder", {"root": str(tmp_path / "u"), "test_fraction": 1},
                       split="train", image_size=6)
    with pytest.raises(ConfigError, match=f"dataset 'unlabeled-folder': image folder {re.escape(str(tmp_path / 'x'))} "
                                          "not found"):
        registry.build("dataset", "unlabeled-folder", {"root": str(tmp_path / "x")}, split="train", image_size=6)
    with pytest.raises(ConfigError, match="missing required param 'root'"):
        registry.build("dataset", "unlabeled-folder", {}, split="train", image_size=6)
    _write_stl10(tmp_path / "stl10_binary")
    data = registry.build("dataset", "stl10", {"root": str(tmp_path), "train_split": "train+unlabeled"},
                          split="train", image_size=32)
    assert len(data) == 10 and data.num_classes == 0
    with pytest.raises(ConfigError, match="param 'train_split' must be"):
        registry.build("dataset", "stl10", {"train_split": "everything"}, split="train", image_size=32)
