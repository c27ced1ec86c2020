"""The numerics every training loop of mimbench shares (pre-training, and probes that train):
bf16 autocast (``train.precision``), AdamW's parameter groups, the warm-up + cosine learning rate."""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn


@contextmanager
def gpu_numerics(device: torch.device) -> Iterator[None]:
    """The numeric settings every run on a GPU trains and is evaluated with: TF32 matmuls and
    convolutions (torch's process-wide flags, restored on exit); nothing on the CPU."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def resolved_precision(precision: str, device: torch.device) -> str:
    """``train.precision`` on ``device``: ``"bf16"`` or ``"fp32"`` (``auto``: bf16 on CUDA only)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast_for(device: torch.device, precision: str = "auto"):
    """The autocast context of ``precision`` (``train.precision``) on ``device``: bf16 autocast for
    ``bf16``, none for ``fp32``; ``auto`` (what evaluation and probes use): bf16 on CUDA, full
    precision elsewhere."""
    if resolved_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def native_bf16_cpu() -> bool:
    """Whether this machine's CPU multiplies bf16 matrices natively (x86 AVX-512 BF16 or AMX, Arm
    BF16), as Linux's /proc/cpuinfo says; False where it says nothing (another OS)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices/kernels, none on biases, norms and tokens."""
    decay, no_decay = [], []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: linear warm-up from 0 to 1, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
