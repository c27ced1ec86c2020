"""Choosing a probe's hyper-parameters on held-out *train* data (VTAB's rule), never on test.

A probe param may be one value or a grid (a list). :func:`choose` scores every combination of the
grids by fitting on part of the labelled train split and scoring the rest (the held-out share,
:data:`HELD_OUT_FRACTION`, drawn with the run's seed); the probe then refits with the chosen
combination on the whole labelled train split and scores the test split once. The chosen values
are reported as ``<probe>_hp_<name>`` columns (:func:`hp_columns`), one per param, a fixed value too.
"""

from __future__ import annotations

import itertools
from typing import Callable, Mapping, Sequence

import torch

from mimbench.columns import MetricColumn

#: The share of the labelled train split held out to choose hyper-parameters (at least one image).
HELD_OUT_FRACTION = 0.2

def as_grid(name: str, value: float | int | Sequence[float] | Sequence[int]) -> list:
    """A param as a non-empty list of candidates (one value -> [value]); ValueError for an empty grid."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ValueError(f"{name}: an empty grid; give one value or a list of values to choose from")
    return values


def held_out_split(n: int, seed: int, device: torch.device | str = "cpu",
                   fraction: float = HELD_OUT_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (fit, held_out) of a random split of n train items drawn with ``seed``; held_out
    has ``round(n * fraction)`` items, at least one, and fit keeps at least one."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(device)
    size = min(n - 1, max(1, round(n * fraction)))
    return order[size:], order[:size]


def choose(grids: Mapping[str, list], held_out_score: Callable[[dict], float]) -> dict:
    """The combination of ``grids`` (name -> candidates) whose ``held_out_score(combination)`` is
    highest; ties go to the first in grid order. A single combination is returned unscored."""
    names = list(grids)
    combinations = [dict(zip(names, values)) for values in itertools.product(*(grids[n] for n in names))]
    if len(combinations) == 1:
        return combinations[0]
    scores = [held_out_score(combination) for combination in combinations]
    return combinations[max(range(len(combinations)), key=lambda i: (scores[i], -i))]


def hp_values(prefix: str, chosen: Mapping[str, float | int]) -> dict[str, float | int]:
    """The chosen values as summary columns ``<prefix>_hp_<name>``."""
    return {f"{prefix}_hp_{name}": value for name, value in chosen.items()}


def hp_columns(prefix: str, names: Sequence[str], probe: str) -> list[MetricColumn]:
    """The declarations of the ``<prefix>_hp_<name>`` columns (not in the headline table)."""
    return [MetricColumn(f"{prefix}_hp_{name}", f"{probe} {name}", f"{probe} {name}, chosen on held-out train data",
                         "other", headline=False, digits=6) for name in names]


def chosen_on_held_out(grids: Mapping[str, list], labels: torch.Tensor, seed: int,
                       predict: Callable[[dict, torch.Tensor, torch.Tensor], torch.Tensor]) -> dict:
    """The combination of ``grids`` a probe fits best on held-out train data: for each, ``predict(
    combination, fit, held_out)`` fits on the train items ``fit`` (indices) and returns the predicted
    class of each ``held_out`` item, scored against ``labels`` [N] (the train split's)."""
    fit, held_out = held_out_split(len(labels), seed, labels.device)
    return choose(grids, lambda combination: (predict(combination, fit, held_out).to(labels.device) == labels[held_out])
                  .float().mean().item())
