"""Will a model fit? Its training state estimated before it is built, so that a size no machine
holds (a ViT of width 8192 and depth 256: 206 billion parameters) is one line at ``--dry-run``,
not a process the kernel kills (which may be someone else's on a shared node).

The component is first built on PyTorch's ``meta`` device, which records shapes and allocates
nothing; its parameters are counted and priced at :data:`BYTES_PER_TRAINED_PARAM` (float32
weights, their gradients and AdamW's two moments), and compared with the memory of the device
the check runs on (a GPU's total memory, or this machine's physical memory). Activations are
not counted: the estimate is a floor, so a refusal is certain and a pass is not a promise.
A component that cannot be built on ``meta`` (one that reads a file or a tensor's value while it
is built) is not estimated and is built as it is.

Each param that sizes memory or time also has a declared range (see :mod:`mimbench.registry`):
the range bounds one param, this estimate the product of them.
"""

from __future__ import annotations

import os
from typing import Callable

import torch

from mimbench.errors import ConfigError

#: float32 weights + gradients + AdamW's exp_avg and exp_avg_sq.
BYTES_PER_TRAINED_PARAM = 16


def memory_bytes(device: torch.device) -> int | None:
    """The memory of ``device``: a GPU's total memory, else this machine's physical memory (None
    where it cannot be read)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def meta_parameter_count(build: Callable[[], torch.nn.Module]) -> int | None:
    """The parameter count of the module ``build()`` makes, built on the meta device (nothing
    allocated); None where it cannot be built there."""
    try:
        with torch.device("meta"):
            module = build()
        return sum(p.numel() for p in module.parameters())
    except Exception:  # noqa: BLE001 - not estimable on meta: the real build reports its own errors
        return None


def check_fits(what: str, build: Callable[[], torch.nn.Module], device: torch.device) -> None:
    """Raise ConfigError when training the module ``build()`` makes cannot fit in ``device``'s memory."""
    available = memory_bytes(device)
    count = meta_parameter_count(build) if available else None
    if count is None or available is None or count * BYTES_PER_TRAINED_PARAM <= available:
        return
    needed = count * BYTES_PER_TRAINED_PARAM
    where = f"GPU {device}" if device.type == "cuda" else "this machine"
    raise ConfigError(f"{what}: {_count(count)} parameters need at least {_size(needed)} to train (weights, "
                      f"gradients and AdamW's two moments, {BYTES_PER_TRAINED_PARAM} bytes each), more than the "
                      f"{_size(available)} of {where}; choose smaller sizes")


def _count(n: int) -> str:
    for unit, scale in (("billion", 1e9), ("million", 1e6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return str(n)


def _size(n: float) -> str:
    for unit in ("TiB", "GiB", "MiB"):
        scale = {"TiB": 2**40, "GiB": 2**30, "MiB": 2**20}[unit]
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"
