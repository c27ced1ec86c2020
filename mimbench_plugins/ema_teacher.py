"""data2vec's target: features of a teacher that is an exponential moving average of the encoder.

data2vec (Baevski et al., 2022) regresses, at masked positions, the average of the teacher's top-K
blocks' outputs, each normalised per token without learned parameters (K = 6 of ViT-B's 12
blocks). The teacher starts as a copy of the student, sees the whole unmasked image, gets no
gradient, and after every optimizer step becomes ``m * teacher + (1 - m) * student``, the
momentum m rising linearly from 0.999 to 0.9999 (data2vec's vision values) and constant after.
"""

from __future__ import annotations

import copy
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from mimbench.plugin import Interval, autocast_for


class EMATeacher(nn.Module):
    """data2vec: the average of an EMA teacher's top-K block outputs, each layer-normalised per token.

    Built from the run's encoder as it is before training (``encoder``, supplied by the core).
    ``momentum`` goes linearly to ``momentum_end`` over the first ``anneal_share`` of the run's
    steps; buffers (batch-norm statistics) are copied from the student. Blocks come from the
    encoder's ``blocks(images)``; ``top_k: 1`` also works with an encoder without it (its output).
    The teacher's weights are saved with the run (``target.pt``).
    """

    def __init__(self, in_channels: int, image_size: int, encoder: nn.Module,
                 top_k: Annotated[int, Interval(ge=1, le=256)] = 2,
                 momentum: float = 0.999, momentum_end: float = 0.9999, anneal_share: float = 1.0):
        super().__init__()
        for name, value in (("momentum", momentum), ("momentum_end", momentum_end)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 0.0 < anneal_share <= 1.0:
            raise ValueError(f"anneal_share must be in (0, 1], got {anneal_share}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.teacher = copy.deepcopy(encoder).requires_grad_(False).eval()
        self.top_k, self.momentum, self.momentum_end, self.anneal_share = top_k, momentum, momentum_end, anneal_share
        self.channels, self.stride = int(encoder.out_dim), int(encoder.stride)
        self._check_blocks(in_channels, image_size)

    def _check_blocks(self, in_channels: int, image_size: int) -> None:
        """ValueError unless the teacher has ``top_k`` blocks on the output's grid (one CPU forward of a blank image)."""
        has_blocks = callable(getattr(self.teacher, "blocks", None))
        if self.top_k > 1 and not has_blocks:
            raise ValueError(f"top_k {self.top_k} needs an encoder with blocks(); this one has none: use top_k: 1")
        if not has_blocks:
            return
        device = next(self.teacher.parameters()).device
        with torch.no_grad():
            grids = self.teacher.blocks(torch.zeros(1, in_channels, image_size, image_size, device=device))
        grid = image_size // self.stride
        shapes = [tuple(g.shape[1:]) for g in grids[-self.top_k:]]
        if len(grids) < self.top_k or any(s != (self.channels, grid, grid) for s in shapes):
            raise ValueError(f"top_k {self.top_k} needs the encoder's last {self.top_k} blocks on its output grid "
                             f"[{self.channels}, {grid}, {grid}]; they are {[list(s) for s in shapes]} "
                             f"({len(grids)} blocks): lower top_k")

    def train(self, mode: bool = True) -> "EMATeacher":
        super().train(mode)
        self.teacher.eval()  # the teacher never trains: no dropout, fixed batch-norm statistics
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Unmasked images [B, C, H, W] -> [B, out_dim, H / stride, W / stride]: the mean of the top
        ``top_k`` blocks' grids, each normalised over its channels at every position."""
        with autocast_for(images.device):
            if callable(getattr(self.teacher, "blocks", None)):
                grids = self.teacher.blocks(images)[-self.top_k:]
            else:
                grids = [self.teacher(images)]
        normed = [F.layer_norm(g.float().movedim(1, -1), (self.channels,)).movedim(-1, 1) for g in grids]
        return torch.stack(normed).mean(dim=0)

    def momentum_at(self, step: int, total_steps: int) -> float:
        """The momentum after optimizer step ``step`` (1 = the first) of ``total_steps``."""
        progress = min(1.0, step / max(1.0, self.anneal_share * total_steps))
        return self.momentum + (self.momentum_end - self.momentum) * progress

    @torch.no_grad()
    def update(self, encoder: nn.Module, step: int, total_steps: int) -> None:
        """After optimizer step ``step``: teacher <- m * teacher + (1 - m) * encoder, buffers copied."""
        m = self.momentum_at(step, total_steps)
        teacher, student = list(self.teacher.parameters()), [p.detach() for p in encoder.parameters()]
        torch._foreach_mul_(teacher, m)
        torch._foreach_add_(teacher, student, alpha=1.0 - m)
        for mine, theirs in zip(self.teacher.buffers(), encoder.buffers()):
            mine.copy_(theirs)
