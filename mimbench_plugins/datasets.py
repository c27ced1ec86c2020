"""Built-in datasets: generated colour shapes, Fashion-MNIST, and an embedded Fashion-MNIST subset.

Every factory returns a ``mimbench.data.TensorImageDataset``: uint8 images
[N, C, H, W] and int64 labels [N], held in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import zlib
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import torch

from mimbench.plugin import Interval, TensorImageDataset, hookimpl

#: A generated split's image count (bounds the memory it takes and the time to draw it).
ImageCount = Annotated[int, Interval(ge=1, le=1_000_000)]
#: A generator's seed.
Seed = Annotated[int, Interval(ge=0, le=2**63 - 1)]

if TYPE_CHECKING:  # annotation only; its module moved in Python 3.11
    from importlib.resources.abc import Traversable

SPLITS = ("train", "test")

# ---------------------------------------------------------------------------------------------
# IDX files (the MNIST format): magic = two zero bytes, a type code, the number of dimensions;
# then one big-endian uint32 per dimension; then the values, big-endian, row-major.
# ---------------------------------------------------------------------------------------------

_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | Path | Traversable) -> torch.Tensor:
    """Read an IDX file, gzip-compressed or not, into a tensor of its shape and type.

    Fashion-MNIST images come back as uint8 Tensor[N, 28, 28] and labels as uint8 Tensor[N].
    Raises ``ValueError`` naming the file if it is damaged (gzip) or not valid IDX (header, length).
    """
    raw = (Path(path) if isinstance(path, str) else path).read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:  # a CRC error, a truncated or garbled stream
            raise ValueError(f"{path}: damaged gzip file ({exc or type(exc).__name__}); replace it with a good copy") \
                from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4].hex() or 'missing'}, "
                         f"expected 0000 + type code in {{{', '.join(f'{t:02x}' for t in _IDX_TYPES)}}} + ndim)")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header declares {ndim} dimensions but the file is only {len(raw)} bytes")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: IDX shape {shape} needs {expected} bytes, the file has {len(raw)}")
    values = np.frombuffer(raw, dtype=dtype, offset=header).astype(dtype.newbyteorder("="))
    return torch.from_numpy(values.reshape(shape))


def write_idx(path: str | Path, values: torch.Tensor | np.ndarray) -> None:
    """Write ``values`` (any shape, an IDX dtype) as an IDX file; gzip it, reproducibly, if ``path`` ends in .gz."""
    array = np.asarray(values)
    codes = {dtype.newbyteorder("="): code for code, dtype in _IDX_TYPES.items()}
    if array.dtype not in codes:
        raise ValueError(f"cannot write dtype {array.dtype} as IDX (allowed: uint8, int8, int16, int32, float32, float64)")
    code = codes[array.dtype]
    data = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
    data += np.ascontiguousarray(array, dtype=_IDX_TYPES[code]).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        with open(path, "wb") as out, gzip.GzipFile(path.stem, "wb", fileobj=out, mtime=0) as gz:
            gz.write(data)  # mtime=0 and a fixed name: the same values give the same bytes
    else:
        path.write_bytes(data)


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST
# ---------------------------------------------------------------------------------------------

FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: Searched when no ``root`` is given, after ``$MIMBENCH_DATA``; the first is the Debian package's.
DEFAULT_DATA_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)
#: Where ``download: true`` puts the files when no ``root`` is given (also searched).
CACHE_DIR = Path("~/.cache/mimbench")
# Within each searched folder: flat, a named subfolder, and torchvision's layout.
_LAYOUTS = (".", "fashion-mnist", "FashionMNIST/raw")


def check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {', '.join(map(repr, allowed))}, got {split!r}")


def data_dirs(root: str | None, cache_dir: Path, fallbacks: tuple[Path, ...] = ()) -> list[Path]:
    """The folders searched for a dataset: ``root`` alone if given, else ``$MIMBENCH_DATA``
    (if set), the download cache, then ``fallbacks``."""
    if root is not None:
        return [Path(root).expanduser()]
    env = os.environ.get("MIMBENCH_DATA")
    return ([Path(env).expanduser()] if env else []) + [cache_dir.expanduser(), *fallbacks]


def _find_idx(folder: Path | Traversable, name: str) -> Path | Traversable | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_pair(folder: Path | Traversable, split: str) -> TensorImageDataset:
    """Images uint8 [N, 1, 28, 28] and labels [N] of one split from the IDX files in ``folder``."""
    image_name, label_name = FASHION_MNIST_FILES[split]
    images, labels = read_idx(_find_idx(folder, image_name)), read_idx(_find_idx(folder, label_name))
    if images.ndim != 3 or images.dtype != torch.uint8 or labels.shape != images.shape[:1]:
        raise ValueError(f"{folder}: expected uint8 images [N, H, W] and N labels, "
                         f"got images {tuple(images.shape)} and labels {tuple(labels.shape)}")
    return TensorImageDataset(images.unsqueeze(1), labels.long(), num_classes=10)


def _search(dirs: list[Path], split: str) -> Path | None:
    """The first folder, over ``dirs`` and their layouts, that holds both IDX files of ``split``."""
    for base in dirs:
        for layout in _LAYOUTS:
            folder = base / layout
            if all(_find_idx(folder, name) for name in FASHION_MNIST_FILES[split]):
                return folder
    return None


def fashion_mnist(split: str, root: str | None = None, download: bool = False,
                  train_images: Annotated[int, Interval(ge=1, le=60_000)] | None = None,
                  test_images: Annotated[int, Interval(ge=1, le=10_000)] | None = None) -> TensorImageDataset:
    """Zalando's Fashion-MNIST: 28x28 greyscale clothes, 10 classes, 60000 train / 10000 test images.

    Looks in ``root`` if given, else in ``$MIMBENCH_DATA``, ``~/.cache/mimbench`` and
    /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist); in each, the
    files may sit flat, in ``fashion-mnist/`` or in torchvision's ``FashionMNIST/raw/``.
    ``download: true`` fetches missing files with torchvision (needs a network).
    ``train_images``, ``test_images``: keep only this many images of that split, a fixed
    random subset (the same in every run and session).
    Returns uint8 images [N, 1, 28, 28] and labels [N].
    """
    check_split(split)
    for name, count, total in (("train_images", train_images, 60000), ("test_images", test_images, 10000)):
        if count is not None and not 1 <= count <= total:
            raise ValueError(f"{name} must be in 1..{total} (or null for all), got {count}")
    dirs = data_dirs(root, CACHE_DIR, DEFAULT_DATA_DIRS)
    folder = _search(dirs, split)
    if folder is None and download:
        from torchvision.datasets import FashionMNIST  # only needed here

        target = dirs[0] if root is not None else CACHE_DIR.expanduser()
        FashionMNIST(root=str(target), train=split == "train", download=True)
        folder = _search([target], split)
    if folder is None:
        raise FileNotFoundError(
            f"Fashion-MNIST {split} files ({', '.join(f + '[.gz]' for f in FASHION_MNIST_FILES[split])}) "
            f"not found in {', '.join(map(str, dirs))} (flat, fashion-mnist/ or FashionMNIST/raw/); get them with "
            f"'apt install dataset-fashion-mnist', point param 'root' or $MIMBENCH_DATA at a copy, "
            f"or set 'download: true'")
    data = _load_idx_pair(folder, split)
    count = train_images if split == "train" else test_images
    if count is not None:
        keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:count].sort().values
        data = TensorImageDataset(data.images[keep], data.labels[keep], data.num_classes)
    return data


def fashion_mnist_mini(split: str) -> TensorImageDataset:
    """Embedded Fashion-MNIST subset: 500 train / 100 test images per class, no download needed.

    The first images of each class, in file order, of the real dataset (see
    mimbench_plugins/data/fashion-mnist-mini/README.md). Returns uint8 images [N, 1, 28, 28] and labels [N]:
    N = 5000 (train) or 1000 (test).
    """
    check_split(split)
    return _load_idx_pair(files("mimbench_plugins") / "data" / "fashion-mnist-mini", split)


# ---------------------------------------------------------------------------------------------
# Generated shapes
# ---------------------------------------------------------------------------------------------

SHAPE_CLASSES = ("circle", "square", "triangle", "diamond", "ring", "cross")
_CHUNK = 1024  # images rendered at once: bounds memory at large image sizes


def _shape_mask(label: int, dx: torch.Tensor, dy: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Bool mask [B, S, S] of class ``label``; dx, dy [B, S, S] are pixel offsets from the centre
    divided by the radius [B, 1, 1] in pixels (so the shape has radius 1; y points down)."""
    name = SHAPE_CLASSES[label]
    if name == "circle":
        return dx**2 + dy**2 <= 1.0
    if name == "square":  # side 1.6: about the circle's area
        return torch.maximum(dx.abs(), dy.abs()) <= 0.8
    if name == "triangle":  # apex up, base at the bottom
        return (dy >= -0.9) & (dy <= 0.8) & (dx.abs() <= (dy + 0.9) * 0.6)
    if name == "diamond":
        return dx.abs() + dy.abs() <= 1.0
    if name == "ring":
        return (dx**2 + dy**2 <= 1.0) & (dx**2 + dy**2 >= 0.55**2)
    arm = torch.clamp(0.5 / radius, min=0.3)  # at least one pixel wide, so tiny crosses never vanish
    return ((dx.abs() <= arm) & (dy.abs() <= 1.0)) | ((dy.abs() <= arm) & (dx.abs() <= 1.0))  # cross


def stream_seed(*parts: object) -> int:
    """A seed for one named stream of generated data (a dataset and its split), the same on every machine."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def shapes(split: str, image_size: int = 32, num_images: ImageCount | None = None, seed: Seed = 0) -> TensorImageDataset:
    """Generated colour shapes (circle, square, triangle, diamond, ring, cross) on striped backgrounds.

    Each image holds one shape of random position, size and colour on oriented sinusoidal
    stripes mixing two random colours, plus mild noise. Every colour channel of the shape
    differs from the background by at least 0.3 (of the 0..1 range), so the shape stays
    visible. Deterministic for (split, seed); train and test come from different streams.
    Classes are balanced (counts differ by at most one). Defaults: 4000 train / 1000 test.
    Returns uint8 images [N, 3, image_size, image_size] and labels [N] in 0..5.
    """
    check_split(split)
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    if num_images is not None and num_images < 1:
        raise ValueError(f"num_images must be >= 1 (or null for the default), got {num_images}")
    n = num_images if num_images is not None else (4000 if split == "train" else 1000)
    images, labels, _ = draw_shapes(split, image_size, n, seed)
    return TensorImageDataset(images, labels, num_classes=len(SHAPE_CLASSES))


def draw_shapes(split: str, image_size: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The work behind ``shapes``: uint8 images [n, 3, S, S], labels [n] and the shapes' bool masks [n, S, S]."""
    g = torch.Generator().manual_seed(stream_seed("mimbench-shapes", split, seed))
    s = image_size

    labels = torch.arange(n) % len(SHAPE_CLASSES)
    labels = labels[torch.randperm(n, generator=g)]
    radius = s * (0.2 + 0.2 * torch.rand(n, generator=g))  # pixels
    cx, cy = (radius + (s - 2 * radius) * torch.rand(2, n, generator=g))  # shape fully inside
    # Contrast: per channel the background lies entirely on the far side of the shape's colour
    # (below it when the shape is bright, above when dark), at least 0.3 away.
    fg = torch.rand(n, 3, generator=g)
    bright = fg > 0.5
    low, high = torch.where(bright, 0.0, fg + 0.3), torch.where(bright, fg - 0.3, 1.0)
    bg_a, bg_b = (low + (high - low) * torch.rand(2, n, 3, generator=g))
    angle = math.pi * torch.rand(n, generator=g)
    cycles = 1.5 + 2.5 * torch.rand(n, generator=g)  # stripe periods across the image
    phase = 2 * math.pi * torch.rand(n, generator=g)

    coords = torch.arange(s, dtype=torch.float32) + 0.5  # pixel centres
    ys, xs = coords.view(1, s, 1), coords.view(1, 1, s)
    out = torch.empty(n, 3, s, s, dtype=torch.uint8)
    masks = torch.empty(n, s, s, dtype=torch.bool)
    for start in range(0, n, _CHUNK):
        i = slice(start, min(start + _CHUNK, n))
        col = lambda t: t[i].view(-1, 1, 1)  # noqa: E731  per-image value -> [B, 1, 1]
        wave = 2 * math.pi / s * col(cycles)
        along = (xs * (wave * col(angle.cos())) + ys * (wave * col(angle.sin()))).add_(col(phase))
        mix = along.sin_().mul_(0.5).add_(0.5)  # [B, S, S], 1 = first colour
        image = torch.lerp(bg_b[i, :, None, None], bg_a[i, :, None, None], mix[:, None])  # [B, 3, S, S]
        dx, dy = (xs - col(cx)) / col(radius), (ys - col(cy)) / col(radius)
        inside = masks[i]
        for label in range(len(SHAPE_CLASSES)):
            of_class = (labels[i] == label).nonzero().squeeze(1)
            inside[of_class] = _shape_mask(label, dx[of_class], dy[of_class], col(radius)[of_class])
        image = torch.where(inside[:, None], fg[i, :, None, None], image)
        image.add_(torch.randn(image.shape, generator=g), alpha=0.03)
        out[i] = image.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return out, labels, masks


@hookimpl
def mimbench_register_datasets(register) -> None:
    register("shapes", shapes)
    register("fashion-mnist", fashion_mnist)
    register("fashion-mnist-mini", fashion_mnist_mini)
