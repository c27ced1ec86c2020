"""Peak memory of a run or a baseline: what its ``peak_memory_mb`` reports.

On CUDA, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``: the most memory
this process's tensors held on the device at once (what the caching allocator reserves beyond
that is not counted; data held on the device is).

On the CPU, the growth of the process's resident memory: the peak resident set during the run
minus the resident set at its start. The kernel keeps the peak (``VmHWM`` in /proc/self/status);
writing ``5`` to /proc/self/clear_refs resets it to the current resident set, so each run of a
process that runs several one after another (the local executor, a Ray or submitit worker) gets
its own peak, not an earlier run's. Where that reset is refused, a thread reads /proc/self/statm
every few milliseconds instead, and may miss a peak shorter than that. At the start the C
allocator's free memory is handed back to the system (glibc's ``malloc_trim``): memory an earlier
run freed, but the process kept, would otherwise be reused without growing the resident set and
hide this run's needs. What the process still holds when the run starts (the loaded data, the
interpreter, torch) is not counted. mimbench never runs two jobs at once in one process, which
would share one resident set. Without /proc (not Linux) there is no number.

Under ``train.devices`` > 1 each training process measures its own training, and the run reports
the largest of its processes' peaks (the process that evaluates included).
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from typing import Any

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_SAMPLE_SECONDS = 0.005


def resident_bytes() -> int | None:
    """This process's resident set size now, or None without /proc."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _peak_resident_bytes() -> int | None:
    """The kernel's peak resident set size of this process (VmHWM), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _release_free_memory() -> None:
    """Hand the C allocator's free memory back to the system (glibc's ``malloc_trim``), so that what an
    earlier run freed does not count as resident at this run's start; nothing where there is none."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    """Reset the kernel's peak resident set size to the current one; False where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.mb``: the block's peak memory in MiB,
    rounded to 0.1 (see the module docstring); None where it cannot be measured."""

    def __init__(self, device: torch.device):
        self.device, self.mb = device, None
        self._start: int | None = None
        self._sampled = 0
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        _release_free_memory()
        self._start = resident_bytes()
        if self._start is not None and not _reset_peak():
            self._sampled = self._start
            self._sampler = threading.Thread(target=self._sample, name="mimbench-peak-memory", daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(_SAMPLE_SECONDS):
            self._sampled = max(self._sampled, resident_bytes() or 0)

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.mb = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
            return
        if self._start is None:
            return
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            peak = max(self._sampled, resident_bytes() or 0)
        else:
            peak = _peak_resident_bytes() or 0
        self.mb = round(max(0, peak - self._start) / 2**20, 1)
