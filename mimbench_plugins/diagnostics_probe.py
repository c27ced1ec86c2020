"""``diagnostics``: label-free numbers about a frozen encoder, the ones the papers explain MIM with.

No labels are read and nothing is fit. On the train split's images (unmasked, normalised):

- ``rankme``, ``alpha_req`` and ``alpha_req_r2`` of the pooled features at ``layer``
  (:func:`mimbench.diagnostics.rankme`, :func:`~mimbench.diagnostics.alpha_req`): every train image;
- per block i, ``cka@i``: linear CKA between block i's pooled features and the last block's, on
  every train image; ``cka``: their mean over the blocks before the last (an encoder of one block
  has none);
- per block i of an encoder with attention (its ``attention_maps``), on the first ``images`` train
  images: ``attn_distance@i`` (pixels, the mean over heads of each head's mean attention distance),
  ``attn_entropy@i`` (nats, mean over heads) and ``head_diversity@i`` (nats, mean KL over pairs of
  heads); ``attn_distance``, ``attn_entropy`` and ``head_diversity`` without a block are the last
  block's, the "late layers" of Xie et al. (CVPR 2023).

Every column is shown in the tables and never compared between configurations: none of them is a
score where more is better. ``eval.diagnostics: true`` adds this probe to every run and baseline.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated

import torch

from mimbench.plugin import Interval, Layer, MetricColumn, ProbeContext, check_layer, diagnostics, hookimpl

#: At most this many attention probabilities (B x heads² x T²) in one pairwise-KL tensor.
KL_ELEMENTS = 2 ** 24


class DiagnosticsProbe:
    """RankMe and α-ReQ at ``layer``, CKA of every block with the last, attention statistics per block."""

    def __init__(self, layer: Layer = "last", images: Annotated[int, Interval(ge=1, le=1_000_000)] = 512):
        check_layer(layer)
        if layer == "all":
            raise ValueError("layer must be 'last' or a block index (RankMe is measured at one layer), got 'all'")
        self.layer, self.images = layer, images

    def metric_columns(self) -> list[MetricColumn]:
        column = lambda key, name, axis, headline=True, digits=3: MetricColumn(  # noqa: E731
            key, name, axis, "other", headline=headline, digits=digits, compared=False)
        return [column("rankme", "RankMe", "RankMe (effective rank of the pooled features)", digits=1),
                column("alpha_req", "α-ReQ", "α-ReQ (eigenspectrum decay of the pooled features)", digits=2),
                column("alpha_req_r2", "α-ReQ R²", "R² of the α-ReQ power-law fit", headline=False),
                column("attn_distance", "attn. distance (px)", "mean attention distance, last block (px)", digits=1),
                column("attn_entropy", "attn. entropy", "attention entropy, last block (nats)", headline=False),
                column("head_diversity", "head diversity", "mean KL between heads, last block (nats)", headline=False),
                column("cka", "CKA with last", "mean linear CKA of each block with the last", headline=False)]

    @torch.no_grad()
    def __call__(self, context: ProbeContext) -> dict[str, float | None]:
        features = context.features(self.layer).train
        columns: dict[str, float | None] = {"rankme": diagnostics.rankme(features)}
        try:
            columns["alpha_req"], columns["alpha_req_r2"] = diagnostics.alpha_req(features)
        except ValueError:  # fewer than two directions of variance: no decay to fit
            columns["alpha_req"] = columns["alpha_req_r2"] = None
        columns.update(self._cka(context))
        columns.update(self._attention(context))
        return columns

    def _cka(self, context: ProbeContext) -> dict[str, float]:
        blocks = [f.train for f in context.block_features()] if context.has_blocks else []
        if len(blocks) < 2:
            return {}
        columns = {f"cka@{i}": diagnostics.linear_cka(block, blocks[-1]) for i, block in enumerate(blocks)}
        columns["cka"] = sum(columns[f"cka@{i}"] for i in range(len(blocks) - 1)) / (len(blocks) - 1)
        return columns

    def _attention(self, context: ProbeContext) -> dict[str, float]:
        """Per block, the attention statistics over the first ``images`` train images, in batches small
        enough for the pairwise KL; {} for an encoder without attention."""
        sums: dict[str, float] = defaultdict(float)
        seen = 0
        for batch, _ in context.train.batches(context.batch_size):
            images = context.normalize(batch[: self.images - seen])
            maps = context.attention_maps(images)  # in full precision: the maps are small, their sums exact
            if maps is None:
                return {}
            stride = context.encoder.stride
            grid = (images.shape[-2] // stride, images.shape[-1] // stride)
            for i, attention in enumerate(maps):
                _add_block(sums, i, attention, grid, stride)
            seen += len(images)
            if seen >= self.images:
                break
        columns = {key: total / seen for key, total in sums.items()}
        last = max(int(key.split("@")[1]) for key in columns)
        for name in ("attn_distance", "attn_entropy", "head_diversity"):
            columns[name] = columns.get(f"{name}@{last}")
        return {key: value for key, value in columns.items() if value is not None}


def _add_block(sums: dict[str, float], block: int, attention: torch.Tensor, grid: tuple[int, int],
               patch_size: int) -> None:
    """Add block ``block``'s statistics of a batch's attention [B, heads, T, T] (T tokens on ``grid``,
    centres ``patch_size`` px apart), summed over images."""
    b, heads, tokens, _ = attention.shape
    chunk = max(1, KL_ELEMENTS // (heads * heads * tokens * tokens))
    for start in range(0, b, chunk):
        part = attention[start:start + chunk]
        n = len(part)
        sums[f"attn_distance@{block}"] += diagnostics.attention_distance(part, grid, patch_size).mean().item() * n
        sums[f"attn_entropy@{block}"] += diagnostics.attention_entropy(part).mean().item() * n
        if heads >= 2:
            sums[f"head_diversity@{block}"] += diagnostics.head_diversity(part) * n


@hookimpl
def mimbench_register_probes(register) -> None:
    register("diagnostics", DiagnosticsProbe)
