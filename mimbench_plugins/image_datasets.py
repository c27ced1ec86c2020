"""Real-image datasets: CIFAR-10, CIFAR-100, STL-10, and folders of image files, labelled or not.

Every factory returns a ``mimbench.data.TensorImageDataset``: uint8 images
[N, C, H, W] and int64 labels [N], held in memory. Unlabeled data (``unlabeled-folder``,
STL-10's unlabeled images) has every label 0 and ``num_classes`` 0: it is for
pre-training, and probes need a labelled ``eval.dataset``.

The CIFAR and STL-10 files are read here, in their published formats (the
pickled batches of the ``*-python`` archives, STL-10's raw ``.bin`` files),
rather than through torchvision's classes: those verify every file's MD5
against the official archives before loading, which costs a full read and
refuses any subset or re-packed copy. torchvision is used to download
(``download: true``), into the layout it and these readers share.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mimbench.plugin import TensorImageDataset, hookimpl, one_line
from mimbench_plugins.datasets import CACHE_DIR, SPLITS, check_split, data_dirs


def _data_dirs(root: str | None) -> list[Path]:
    return data_dirs(root, CACHE_DIR)


def _find_folder(dirs: list[Path], subfolder: str, names: list[str]) -> Path | None:
    """The first of ``<dir>/<subfolder>`` or ``<dir>`` itself, over ``dirs``, that holds every file in ``names``."""
    for base in dirs:
        for folder in (base / subfolder, base):
            if all((folder / name).is_file() for name in names):
                return folder
    return None


def _locate(dirs: list[Path], subfolder: str, names: list[str], root: str | None, download: bool,
            fetch: Any, what: str, url: str) -> Path:
    """Find the files of one split; download them with ``fetch(target)`` if allowed and missing; else a one-line error."""
    folder = _find_folder(dirs, subfolder, names)
    if folder is None and download:
        target = dirs[0] if root is not None else CACHE_DIR.expanduser()
        fetch(str(target))
        folder = _find_folder([target], subfolder, names)
    if folder is None:
        raise FileNotFoundError(
            f"{what} files ({', '.join(names)}) not found in {', '.join(str(d / subfolder) for d in dirs)}; "
            f"extract {url} into {dirs[0]}, point param 'root' or $MIMBENCH_DATA at the folder holding "
            f"{subfolder}/, or set 'download: true'")
    return folder


# ---------------------------------------------------------------------------------------------
# CIFAR: Python pickles of dicts {data: uint8 [n, 3072] (1024 red, 1024 green, 1024 blue values,
# each 32x32 row-major), labels | fine_labels + coarse_labels: list of n ints, ...}.
# The official files were pickled by Python 2 (str keys); copies re-pickled by Python 3 have
# bytes keys (b"data"). Both are read.
# ---------------------------------------------------------------------------------------------

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"
CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR100_FILES = {"train": ["train"], "test": ["test"]}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"


def read_cifar_batch(path: str | Path, label_key: str = "labels",
                     num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR pickle -> uint8 images [n, 3, 32, 32] and int64 labels [n] (from ``label_key``).

    Raises ``ValueError`` naming the file if it is not such a pickle.
    """
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")  # latin1: numpy arrays pickled by Python 2
    except (pickle.UnpicklingError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: not a CIFAR pickle ({one_line(exc)})") from exc
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: not a CIFAR batch (expected a pickled dict, got {type(entry).__name__})")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or label_key not in entry:
        raise ValueError(f"{path}: CIFAR batch needs keys 'data' and {label_key!r}, has {sorted(map(str, entry))}")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != data.shape[:1]:
        raise ValueError(f"{path}: expected uint8 data [n, 3072] and n {label_key}, "
                         f"got data {data.dtype} {data.shape} and {label_key} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{path}: {label_key} must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def _load_cifar(folder: Path, names: list[str], label_key: str, num_classes: int) -> TensorImageDataset:
    parts = [read_cifar_batch(folder / name, label_key, num_classes) for name in names]
    images, labels = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    return TensorImageDataset(images, labels, num_classes=num_classes)


def cifar10(split: str, root: str | None = None, download: bool = False) -> TensorImageDataset:
    """CIFAR-10: 32x32 colour photos, 10 classes, 50000 train / 10000 test images.

    Reads torchvision's layout ``<dir>/cifar-10-batches-py/{data_batch_1..5, test_batch}``
    (the extracted cifar-10-python.tar.gz; the files may also sit directly in ``<dir>``),
    where ``<dir>`` is ``root`` if given, else ``$MIMBENCH_DATA`` then ``~/.cache/mimbench``.
    ``download: true`` fetches missing files with torchvision (needs a network).
    Returns uint8 images [N, 3, 32, 32] and labels [N] in 0..9.
    """
    check_split(split)

    def fetch(target: str) -> None:
        from torchvision.datasets import CIFAR10  # only needed here

        CIFAR10(root=target, train=split == "train", download=True)

    folder = _locate(_data_dirs(root), CIFAR10_FOLDER, CIFAR10_FILES[split], root, download, fetch,
                     f"CIFAR-10 {split}", CIFAR10_URL)
    return _load_cifar(folder, CIFAR10_FILES[split], "labels", 10)


def cifar100(split: str, root: str | None = None, label: Literal["fine", "coarse"] = "fine",
             download: bool = False) -> TensorImageDataset:
    """CIFAR-100: 32x32 colour photos, 100 fine classes in 20 coarse superclasses, 50000 train / 10000 test.

    Reads torchvision's layout ``<dir>/cifar-100-python/{train, test}`` (the extracted
    cifar-100-python.tar.gz; the files may also sit directly in ``<dir>``), where ``<dir>``
    is ``root`` if given, else ``$MIMBENCH_DATA`` then ``~/.cache/mimbench``.
    ``label``: "fine" (100 classes) or "coarse" (20 superclasses).
    ``download: true`` fetches missing files with torchvision (needs a network).
    Returns uint8 images [N, 3, 32, 32] and labels [N].
    """
    check_split(split)
    if label not in ("fine", "coarse"):
        raise ValueError(f"label must be 'fine' or 'coarse', got {label!r}")

    def fetch(target: str) -> None:
        from torchvision.datasets import CIFAR100  # only needed here

        CIFAR100(root=target, train=split == "train", download=True)

    folder = _locate(_data_dirs(root), CIFAR100_FOLDER, CIFAR100_FILES[split], root, download, fetch,
                     f"CIFAR-100 {split}", CIFAR100_URL)
    return _load_cifar(folder, CIFAR100_FILES[split], f"{label}_labels", 100 if label == "fine" else 20)


# ---------------------------------------------------------------------------------------------
# STL-10 binary: <split>_X.bin holds uint8 images back to back, each 3 x 96 x 96 with every
# channel stored column-major (column by column); <split>_y.bin one uint8 label per image, 1..10.
# ---------------------------------------------------------------------------------------------

STL10_FOLDER = "stl10_binary"
STL10_SPLITS = ("train", "test", "unlabeled")
STL10_FILES = {"train": ["train_X.bin", "train_y.bin"], "test": ["test_X.bin", "test_y.bin"],
               "unlabeled": ["unlabeled_X.bin"]}
STL10_TRAIN_SPLITS = ("train", "unlabeled", "train+unlabeled")
STL10_URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
_STL10_IMAGE_BYTES = 3 * 96 * 96


def read_stl10(images_path: str | Path, labels_path: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """STL-10 ``*_X.bin`` (and ``*_y.bin``) -> uint8 images [n, 3, 96, 96] and int64 labels [n], 0-based.

    Without a labels file every label is -1. Raises ``ValueError`` naming the file if its length does not fit.
    """
    raw = np.fromfile(images_path, dtype=np.uint8)
    if raw.size % _STL10_IMAGE_BYTES:
        raise ValueError(f"{images_path}: {raw.size} bytes is not a whole number of 3x96x96 STL-10 images "
                         f"({_STL10_IMAGE_BYTES} bytes each)")
    n = raw.size // _STL10_IMAGE_BYTES
    images = torch.from_numpy(raw).view(n, 3, 96, 96).transpose(2, 3).contiguous()  # column-major -> [C, H, W]
    if labels_path is None:
        return images, torch.full((n,), -1, dtype=torch.int64)
    labels = np.fromfile(labels_path, dtype=np.uint8).astype(np.int64)
    if labels.shape != (n,):
        raise ValueError(f"{labels_path}: {labels.size} labels for the {n} images of {images_path}")
    if n and (labels.min() < 1 or labels.max() > 10):
        raise ValueError(f"{labels_path}: STL-10 labels must lie in 1..10, got {labels.min()}..{labels.max()}")
    return images, torch.from_numpy(labels - 1)


def _load_stl10_part(part: str, root: str | None, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [n, 3, 96, 96] and labels [n] (-1 for "unlabeled") of one STL-10 file set."""

    def fetch(target: str) -> None:
        from torchvision.datasets import STL10  # only needed here

        STL10(root=target, split=part, download=True)

    names = STL10_FILES[part]
    folder = _locate(_data_dirs(root), STL10_FOLDER, names, root, download, fetch, f"STL-10 {part}", STL10_URL)
    return read_stl10(folder / names[0], folder / names[1] if len(names) > 1 else None)


def stl10(split: str, root: str | None = None, download: bool = False,
          train_split: Literal["train", "unlabeled", "train+unlabeled"] = "train") -> TensorImageDataset:
    """STL-10: 96x96 colour photos, 10 classes, 5000 train / 8000 test labelled and 100000 unlabeled images.

    Reads torchvision's layout ``<dir>/stl10_binary/{train,test,unlabeled}_X.bin`` and
    ``{train,test}_y.bin`` (the extracted stl10_binary.tar.gz; the files may also sit
    directly in ``<dir>``), where ``<dir>`` is ``root`` if given, else ``$MIMBENCH_DATA``
    then ``~/.cache/mimbench``. ``download: true`` fetches missing files with torchvision
    (needs a network; the archive is 2.6 GB).
    ``train_split`` chooses what split "train" returns: "train" (the 5000 labelled images,
    labels 0..9, num_classes 10), "unlabeled" (the 100000 unlabeled ones) or
    "train+unlabeled" (both, train first); the last two are for pre-training only: every
    label is 0 and num_classes is 0, so probes need a labelled ``eval.dataset``.
    Split "test" is always the 8000 labelled test images; split "unlabeled" gives the
    unlabeled images whatever ``train_split`` says.
    Returns uint8 images [N, 3, 96, 96] and labels [N].
    """
    check_split(split, STL10_SPLITS)
    if train_split not in STL10_TRAIN_SPLITS:
        raise ValueError(f"train_split must be one of {', '.join(map(repr, STL10_TRAIN_SPLITS))}, got {train_split!r}")
    parts = train_split.split("+") if split == "train" else [split]
    loaded = [_load_stl10_part(part, root, download) for part in parts]
    if "unlabeled" not in parts:
        return TensorImageDataset(*loaded[0], num_classes=10)
    images = loaded[0][0] if len(loaded) == 1 else torch.cat([part[0] for part in loaded])
    return TensorImageDataset(images, torch.zeros(len(images), dtype=torch.int64), num_classes=0)


# ---------------------------------------------------------------------------------------------
# Folders of image files: <root>/<split>/<class>/<image> (imagefolder), or any tree of images
# without labels (unlabeled-folder). Both read and resize the files the same way.
# ---------------------------------------------------------------------------------------------

#: File name endings read as images, compared case-insensitively: torchvision's ImageFolder's plus .gif.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")


def _check_image_params(image_size: int, channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")


def image_files(folder: Path) -> list[Path]:
    """The image files anywhere under ``folder`` (symbolic links followed), sorted by path relative to it.

    Hidden files and folders (name starting with ".") are skipped; a missing folder has none.
    """
    found = []
    for parent, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(parent, n) for n in names if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found, key=lambda path: path.relative_to(folder).as_posix())


def read_images(paths: Sequence[Path], image_size: int, channels: int) -> torch.Tensor:
    """Image files -> uint8 Tensor[N, channels, image_size, image_size], in the order of ``paths``.

    Each image is converted to RGB (``channels`` 3) or greyscale (1, PIL's luma) and resized
    (bilinear, antialiased, aspect ratio not kept); images already that size are kept exactly.
    Raises ``ValueError`` naming the file if one cannot be read, or if it is larger than PIL's
    decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS`` pixels): such a file is refused
    before it is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    mode = "RGB" if channels == 3 else "L"
    images = torch.empty(len(paths), channels, image_size, image_size, dtype=torch.uint8)
    for i, path in enumerate(paths):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL would decode it anyway
                with Image.open(path) as image:
                    image = image.convert(mode)
                    if image.size != (image_size, image_size):
                        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
                    pixels = np.asarray(image, dtype=np.uint8)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            size = re.search(r"\((\d+) pixels\)", str(exc))
            raise ValueError(f"{path}: refused, a possible decompression bomb: {size[1] if size else 'too many'} "
                             f"pixels, over PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{path}: cannot read the image ({type(exc).__name__})") from exc
        images[i] = torch.from_numpy(pixels.reshape(image_size, image_size, channels).copy()).permute(2, 0, 1)
    return images


def _class_folders(folder: Path) -> set[str]:
    return {d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")} if folder.is_dir() else set()


def imagefolder(split: str, root: str, image_size: int = 32, channels: Literal[1, 3] = 3) -> TensorImageDataset:
    """Any folder of images laid out ``<root>/<split>/<class>/*.png|jpg|...``, resized to the suite's image_size.

    Reads the files with extensions .bmp .gif .jpeg .jpg .pgm .png .ppm .tif .tiff .webp (any
    case) anywhere under each class folder, skipping hidden files and folders. Classes are
    the sorted class-folder names over ``<root>/train``, ``<root>/test`` and
    ``<root>/<split>`` together, so a class missing from one split keeps the same label
    everywhere. Every image is converted to RGB (``channels: 3``) or greyscale
    (``channels: 1``) and resized to image_size x image_size (bilinear, antialiased, aspect
    ratio not kept); images already that size are kept exactly.
    Returns uint8 images [N, channels, image_size, image_size] and labels [N], held in memory.
    """
    if not split or Path(split).name != split or split in (".", ".."):
        raise ValueError(f"split must be a plain folder name, got {split!r}")
    _check_image_params(image_size, channels)
    base = Path(root).expanduser()
    folder = base / split
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} not found; expected {base}/{split}/<class>/<image files> "
                                f"(param 'root' names the folder holding the split folders)")
    classes = sorted(set().union(*(_class_folders(base / s) for s in {*SPLITS, split})))
    if not _class_folders(folder):
        raise FileNotFoundError(f"image folder {folder} has no class folders; expected {folder}/<class>/<image files>")
    samples = [(path, label) for label, name in enumerate(classes) for path in image_files(folder / name)]
    if not samples:
        raise FileNotFoundError(f"image folder {folder} has no image files in its class folders "
                                f"(looked for {' '.join(IMAGE_EXTENSIONS)})")
    images = read_images([path for path, _ in samples], image_size, channels)
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return TensorImageDataset(images, labels, num_classes=len(classes))


def _path_rank(relative: str) -> float:
    """A fixed number in [0, 1) from a file's relative path: its place in the train/test split."""
    return int.from_bytes(hashlib.sha256(relative.encode()).digest()[:8], "big") / 2**64


def split_by_path(relatives: Sequence[str], test_fraction: float) -> set[str]:
    """Which of ``relatives`` (at least 2) go to "test": those whose ``_path_rank`` is below ``test_fraction``.

    Never none and never all: if none is below, the lowest-ranked path is test; if all are,
    the highest-ranked one is train. A path's side depends on nothing but the path, so adding
    files moves no other file (except one that those two rules placed, in a tiny folder).
    """
    ranked = sorted(relatives, key=_path_rank)
    below = sum(_path_rank(r) < test_fraction for r in ranked)
    return set(ranked[:min(max(below, 1), len(ranked) - 1)])


def unlabeled_folder(split: str, root: str, image_size: int = 32, channels: Literal[1, 3] = 3,
                     test_fraction: float = 0.1) -> TensorImageDataset:
    """Any folder of unlabeled images (searched recursively), for pre-training; resized to the suite's image_size.

    Reads every file with extension .bmp .gif .jpeg .jpg .pgm .png .ppm .tif .tiff .webp
    (any case) anywhere under ``root``, skipping hidden files and folders, in sorted path
    order, and converts and resizes them as ``imagefolder`` does (RGB or greyscale;
    bilinear, antialiased, aspect ratio not kept; images already that size kept exactly).
    The split is fixed by a hash of each file's path relative to ``root``: about
    ``test_fraction`` of the files are "test", the rest "train", each split at least one
    file, and adding files does not move the others. There are no labels: every label is 0
    and num_classes is 0, so probes need a labelled ``eval.dataset``.
    Returns uint8 images [N, channels, image_size, image_size] and labels [N] (zeros).
    """
    check_split(split)
    _check_image_params(image_size, channels)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"image folder {base} not found; expected a folder (param 'root') holding "
                                f"image files, at any depth")
    paths = {path.relative_to(base).as_posix(): path for path in image_files(base)}
    if not paths:
        raise FileNotFoundError(f"image folder {base} has no image files (looked, at any depth, for "
                                f"{' '.join(IMAGE_EXTENSIONS)})")
    if len(paths) < 2:
        raise ValueError(f"image folder {base} has 1 image file; unlabeled-folder needs at least 2 "
                         f"(one for train, one for test)")
    test = split_by_path(list(paths), test_fraction)
    chosen = [path for relative, path in paths.items() if (relative in test) == (split == "test")]
    images = read_images(chosen, image_size, channels)
    return TensorImageDataset(images, torch.zeros(len(chosen), dtype=torch.int64), num_classes=0)


@hookimpl
def mimbench_register_datasets(register) -> None:
    register("cifar10", cifar10)
    register("cifar100", cifar100)
    register("stl10", stl10)
    register("imagefolder", imagefolder)
    register("unlabeled-folder", unlabeled_folder)
