"""The numerics every training loop of mimbench shares (pre-training, and probes that train):
bf16 autocast on CUDA, AdamW's parameter groups, the warm-up + cosine learning rate."""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
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


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


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
