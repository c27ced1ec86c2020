"""The one timing helper the benchmark scripts share."""

from __future__ import annotations

import time
from typing import Callable

import torch


def now(device: torch.device) -> float:
    """``time.perf_counter()`` after the device's queued work is done (CUDA synchronised)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls (CUDA synchronised)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = now(device)
        fn()
        times.append(now(device) - start)
    return sorted(times)[len(times) // 2]
