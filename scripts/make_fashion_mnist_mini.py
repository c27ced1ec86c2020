"""Make the embedded Fashion-MNIST subset shipped as the ``fashion-mnist-mini`` dataset.

Takes the first 500 train and 100 test images of each class, in file order (the
selected images keep their original order), from the full Fashion-MNIST IDX files
and writes them as gzipped IDX files with a zero timestamp, so running this again
gives byte-identical files. Prints each file's size and sha256.

    python scripts/make_fashion_mnist_mini.py [--source DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch

from mimbench_plugins.datasets import FASHION_MNIST_FILES, _find_idx, read_idx, write_idx

PER_CLASS = {"train": 500, "test": 100}
REPO = Path(__file__).resolve().parent.parent


def first_per_class(labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """Indices (ascending) of the first ``per_class`` examples of each label in ``labels`` [N]."""
    order = torch.argsort(labels, stable=True)  # grouped by class, file order within each class
    counts = torch.bincount(labels)
    if (counts < per_class).any():
        raise SystemExit(f"need {per_class} images per class, the source has {counts.tolist()}")
    starts = torch.cumsum(counts, 0) - counts
    picked = order[(starts[:, None] + torch.arange(per_class)).flatten()]
    return picked.sort().values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"),
                        help="folder with the full Fashion-MNIST IDX files (default: the Debian package's)")
    parser.add_argument("--out", type=Path, default=REPO / "mimbench_plugins" / "data" / "fashion-mnist-mini",
                        help="where to write the subset (default: %(default)s)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for split, (image_name, label_name) in FASHION_MNIST_FILES.items():
        paths = [_find_idx(args.source, name) for name in (image_name, label_name)]
        if None in paths:
            raise SystemExit(f"{args.source}: missing {image_name}[.gz] or {label_name}[.gz]")
        images, labels = (read_idx(p) for p in paths)
        keep = first_per_class(labels.long(), PER_CLASS[split])
        for name, values in ((image_name, images[keep]), (label_name, labels[keep])):
            target = args.out / f"{name}.gz"
            write_idx(target, values)
            data = target.read_bytes()
            print(f"{target.name}  {tuple(values.shape)}  {len(data)} bytes  sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
