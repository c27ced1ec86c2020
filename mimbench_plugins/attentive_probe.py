"""The ``attentive`` probe: learnable queries pool the frozen encoder's tokens, then a linear classifier.

A linear probe on mean-pooled features under-rates masked image modeling: its features are spread
over the patch tokens. Efficient probing (EP; Psomas et al., "Attention, Please! Revisiting
Attentive Probing", 2025) pools them by cross-attention instead, with few parameters: M learnable
queries attend over the tokens, the tokens themselves as keys (no key projection), and each query
pools its own slice of one value projection. Here the tokens are the feature grid ``ProbeContext``
extracts once per run (float16, shared with the dense probes), standardised per channel with the
train split's statistics; the raw-pixels baseline's grid is its 4 px patches.

With uniform attention (all queries zero) the pooled vector is the value projection of the mean
token, so the probe is then exactly mean pooling + a linear layer: what it adds is where it looks.
"""

from __future__ import annotations

import functools
import math
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from mimbench.plugin import (Interval, Layer, MetricColumn, ProbeContext, accuracy_columns, channel_stats, check_layer,
                             hookimpl, layerwise, selection)


Queries = Annotated[int, Interval(ge=1, le=1024)]


class EfficientPooling(nn.Module):
    """EP pooling: tokens [B, T, D] -> pooled [B, M * c], M = ``queries``, c = max(1, D // M).

    Query m's attention over the tokens is softmax_t(q_m . x_t / sqrt(D)) [B, M, T]; it averages
    the m-th c-wide slice of the values V x_t (V: D -> M * c, no bias)."""

    def __init__(self, dim: int, queries: int, generator: torch.Generator | None = None):
        super().__init__()
        self.width = max(1, dim // queries)
        self.queries = nn.Parameter(torch.randn(queries, dim, generator=generator) * 0.02)
        self.values = nn.Linear(dim, queries * self.width, bias=False)
        bound = 1 / math.sqrt(dim)  # nn.Linear's default init, from the generator
        with torch.no_grad():
            self.values.weight.uniform_(-bound, bound, generator=generator)

    @property
    def out_dim(self) -> int:
        return self.queries.shape[0] * self.width

    def attention(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T, D] -> attention weights [B, M, T], each row summing to 1 over the tokens."""
        return torch.softmax(tokens @ self.queries.T / math.sqrt(tokens.shape[-1]), dim=1).transpose(1, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # sum_t a_mt (V x_t)[slice m] = V[slice m] (sum_t a_mt x_t): attend first, project M vectors, not T
        attended = self.attention(tokens) @ tokens  # [B, M, D]
        weight = self.values.weight.view(self.queries.shape[0], self.width, -1)  # [M, c, D]
        return torch.einsum("bmd,mcd->bmc", attended, weight).flatten(1)


class AttentiveProbe:
    """Efficient-probing head on the frozen encoder's token grid: ``queries`` learnable queries
    cross-attend over the standardised tokens, then a linear layer (AdamW, ``steps`` steps of
    ``batch_size``, cosine lr). ``lr``, ``weight_decay`` and ``queries`` are each one value or a grid,
    chosen together on held-out train data (``attentive_hp_*``). Reports ``attentive_acc`` and
    ``attentive_params``, the head's trainable parameters. ``layer`` as for ``linear``.
    """

    def __init__(self, layer: Layer = "last", lr: float | list[float] = (1e-2, 1e-1),
                 weight_decay: float | list[float] = (1e-4, 1e-2), queries: Queries | list[Queries] = (4, 16),
                 steps: Annotated[int, Interval(ge=1, le=10_000_000)] = 1000,
                 batch_size: Annotated[int, Interval(ge=1, le=65_536)] = 256):
        check_layer(layer)
        self.grids = {"lr": selection.as_grid("lr", lr), "weight_decay": selection.as_grid("weight_decay", weight_decay),
                      "queries": selection.as_grid("queries", queries)}
        if min(self.grids["lr"]) <= 0 or min(self.grids["weight_decay"]) < 0 or \
                not all(isinstance(q, int) and 1 <= q <= 1024 for q in self.grids["queries"]):
            raise ValueError(f"attentive needs lr > 0, weight_decay >= 0 and queries in 1..1024; got lr={lr}, "
                             f"weight_decay={weight_decay}, queries={queries}")
        self.layer, self.steps, self.batch_size = layer, steps, batch_size

    def __call__(self, context: ProbeContext) -> dict[str, float]:
        return layerwise(context, self.layer, "attentive", functools.partial(self.score, seed=context.seed),
                         tokens=True)

    def score(self, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
              num_classes: int, seed: int = 0) -> tuple[float, dict[str, float], torch.Tensor]:
        """Tokens train_x [N, T, D], test_x [M, T, D] (float16) -> test accuracy, the chosen values, predictions [M]."""
        chosen = selection.chosen_on_held_out(
            self.grids, train_y, seed,
            lambda hp, fit, held: self.fit_predict(hp, train_x[fit], train_y[fit], train_x[held], num_classes, seed))
        predicted = self.fit_predict(chosen, train_x, train_y, test_x, num_classes, seed)
        accuracy = (predicted == test_y).sum().item() / len(test_y)
        size = head_parameters(train_x.shape[-1], chosen["queries"], num_classes)
        return accuracy, {"attentive_params": size, **selection.hp_values("attentive", chosen)}, predicted

    def fit_predict(self, hp: dict, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                    num_classes: int, seed: int) -> torch.Tensor:
        """Train a head with ``hp`` (lr, weight_decay, queries) on train_x [N, T, D] and predict test_x [M, T, D] -> [M]."""
        mean, std = channel_stats(train_x, -1)
        generator = torch.Generator().manual_seed(seed)
        pooling = EfficientPooling(train_x.shape[-1], hp["queries"], generator)
        classifier = nn.Linear(pooling.out_dim, num_classes)
        nn.init.zeros_(classifier.weight), nn.init.zeros_(classifier.bias)
        head = nn.Sequential(pooling, classifier).to(train_x.device)
        optimizer = torch.optim.AdamW(head.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / self.steps)))
        batch = min(self.batch_size, len(train_x))
        with torch.enable_grad():
            for _ in range(self.steps):
                index = torch.randint(0, len(train_x), (batch,), generator=generator).to(train_x.device)
                loss = F.cross_entropy(head((train_x[index].float() - mean) / std), train_y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"attentive probe diverged (final loss {loss.item()}, {hp})")
        with torch.no_grad():
            return torch.cat([head((x.float() - mean) / std).argmax(1) for x in test_x.split(1024)])

    def metric_columns(self) -> list[MetricColumn]:
        return (accuracy_columns("attentive_acc", "attentive", self.layer)
                + [MetricColumn("attentive_params", "attentive params", "attentive head's trainable parameters",
                                "count", headline=False, digits=0)]
                + selection.hp_columns("attentive", list(self.grids), "attentive"))


def head_parameters(dim: int, queries: int, classes: int) -> int:
    """The trainable parameters of an attentive head on dim-wide tokens: the queries, the value
    projection and the classifier (what ``attentive_params`` reports)."""
    pooled = queries * max(1, dim // queries)
    return queries * dim + dim * pooled + (pooled + 1) * classes


@hookimpl
def mimbench_register_probes(register) -> None:
    register("attentive", AttentiveProbe)
