"""How a configuration is named: the one label grammar of mimbench.

Every name a reader sees (the console, ``config.json``, trackers, ``summary``-based tables, figures,
``comparisons.csv``) comes from :func:`labels`, applied by :mod:`mimbench.design` when a suite is
planned. It works on *configuration rows*, a job flattened into the summary's column names
(:func:`job_columns`: ``dataset``, the component names, ``pretrained``, ``baseline``, and every param
as ``<kind>.<param>``, ``train.<key>``, ``eval.labels_per_class``), so a suite folder written before
``design.json`` existed is named by the same grammar from its ``summary.csv``.

The grammar: a component is named with the params that vary between the configurations using it,
``patch(ratio=0.4)``; ``train.`` params that vary among pre-trained configurations and ``eval.`` params
that vary at all are added as ``name=value`` (``labels_per_class=10``). The masker is always named, the
other axes only when they vary. A pre-trained configuration reads ``vit / patch(ratio=0.4)``, a
baseline ``vit (random-init)``, raw pixels ``raw pixels (baseline)``. ``hide`` leaves params out of
the labels that are shown in a column of their own (a swept param, the label budget).
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

import pandas as pd

from mimbench.specs import BaselineSpec, Job

#: Component columns of a configuration row, in display order.
COMPONENTS = ("encoder", "decoder", "masker", "loss", "target")
#: ``<prefix>.<param>`` columns that describe a configuration.
PARAM_PREFIXES = ("dataset", "encoder", "decoder", "masker", "loss", "target", "train", "eval")
#: The probes' label budget: labelled training images per class, empty for all labels.
LABELS_PER_CLASS = "eval.labels_per_class"
#: How an empty ``eval.labels_per_class`` (all labels) is written in labels and tables.
ALL_LABELS = "all"
#: What :func:`labels` gives for each configuration: a label per component axis, the setup (all but
#: the encoder: the x axis of the bar plots) and the whole label (the encoder and the setup).
LABEL_FIELDS = (*(f"{axis}_label" for axis in COMPONENTS), "setup_label", "label")


def job_names(job: Job) -> dict[str, Any]:
    """What a job is, as the summary names it: ``dataset``, ``pretrained``, ``baseline`` (None for a
    pre-trained run) and each component's name (``encoder`` is ``pixels`` for the raw-pixels baseline)."""
    baseline = job.kind if isinstance(job, BaselineSpec) else None
    row: dict[str, Any] = {"dataset": job.dataset.name, "pretrained": baseline is None, "baseline": baseline}
    for axis, spec in _components(job).items():
        row[axis] = spec.name
    if baseline == "pixels":
        row["encoder"] = "pixels"
    return row


def job_params(job: Job) -> dict[str, Any]:
    """Every param of a job as ``<kind>.<param>`` (lists and dicts as JSON text), its ``train.<key>``
    settings (pre-trained runs) and ``eval.labels_per_class`` (null: every label)."""

    def cell(value: Any) -> Any:
        return json.dumps(value) if isinstance(value, (list, dict)) else value

    row: dict[str, Any] = {}
    for kind, spec in {"dataset": job.dataset, **_components(job)}.items():
        for key, value in spec.params.items():
            row[f"{kind}.{key}"] = cell(value)
    if not isinstance(job, BaselineSpec):
        for key, value in job.train.model_dump().items():
            row[f"train.{key}"] = cell(value)
    row[LABELS_PER_CLASS] = job.eval.labels_per_class
    return row


def job_columns(job: Job) -> dict[str, Any]:
    """A job's configuration row: :func:`job_names` then :func:`job_params`."""
    return {**job_names(job), **job_params(job)}


def _components(job: Job) -> dict[str, Any]:
    components = {"encoder": job.encoder} if isinstance(job, BaselineSpec) else job.components()
    return {axis: spec for axis, spec in components.items() if spec is not None}


def labels(rows: pd.DataFrame, hide: Iterable[str] = ()) -> pd.DataFrame:
    """The :data:`LABEL_FIELDS` of each configuration row of ``rows`` (same index), by the grammar of
    this module's docstring; the params of ``hide`` left out."""
    hide = tuple(hide)
    params = param_columns(rows)
    pretrained = rows[rows["pretrained"].astype(bool)]
    varying = {kind: [p for p in params if p.startswith(kind + ".") and p not in hide
                      and _varies_within_names(rows, kind, p)] for kind in PARAM_PREFIXES}
    shown_axes = [axis for axis in COMPONENTS[1:] if axis in rows.columns and (
        axis == "masker" or pretrained[axis].nunique() > 1 or any(varying[axis]))]
    train_varying = [p for p in params if p.startswith("train.") and p not in hide
                     and pretrained[p].map(cell_value).nunique(dropna=False) > 1]
    eval_varying = [p for p in varying_eval_columns(rows) if p not in hide]
    named = [_row_labels(row, varying, shown_axes, train_varying, eval_varying) for _, row in rows.iterrows()]
    return pd.DataFrame(named, index=rows.index, columns=list(LABEL_FIELDS))


def _row_labels(row: pd.Series, varying: dict[str, list[str]], shown_axes: list[str],
                train_varying: list[str], eval_varying: list[str]) -> dict[str, str]:
    named = {f"{axis}_label": _component_label(row, axis, varying[axis]) for axis in COMPONENTS}
    evaluation = [f"{p.split('.', 1)[1]}={param_text(p, row[p])}" for p in eval_varying]
    baseline = row["baseline"] if isinstance(row["baseline"], str) else ""
    if baseline == "pixels" or (baseline and row.get("encoder") == "pixels"):
        named.update(encoder_label="pixels", setup_label="raw pixels",
                     label=f"raw pixels ({', '.join(['baseline', *evaluation])})")
    elif not row["pretrained"]:
        kind = baseline or "baseline"
        named.update(setup_label=kind, label=f"{named['encoder_label']} ({', '.join([kind, *evaluation])})")
    else:
        parts = [named[f"{axis}_label"] for axis in shown_axes]
        parts += [f"{p.split('.', 1)[1]}={value_text(row[p])}" for p in train_varying]
        parts += evaluation
        named.update(setup_label=" / ".join(parts), label=" / ".join([named["encoder_label"], *parts]))
    return named


def _varies_within_names(rows: pd.DataFrame, kind: str, column: str) -> bool:
    """True when ``column`` takes several values among the rows sharing a ``kind`` name."""
    if kind not in rows.columns:
        return rows[column].map(cell_value).nunique(dropna=True) > 1
    having = rows[rows[column].notna()]
    return bool((having.groupby(kind)[column].agg(lambda s: s.map(cell_value).nunique()) > 1).any())


def _component_label(row: pd.Series, kind: str, varying: list[str]) -> str:
    name = row[kind] if kind in row.index and isinstance(row[kind], str) else ""
    shown = [f"{p.split('.', 1)[1]}={value_text(row[p])}" for p in varying if cell_value(row[p]) is not None]
    return f"{name}({','.join(shown)})" if shown else str(name)


def param_columns(rows: pd.DataFrame) -> list[str]:
    """The ``<kind>.<param>`` and ``train.<param>`` columns, in column order."""
    return [c for c in rows.columns if "." in c and c.split(".", 1)[0] in PARAM_PREFIXES]


def eval_columns(rows: pd.DataFrame) -> list[str]:
    """The ``eval.<param>`` columns: how runs and baselines alike were evaluated."""
    return [c for c in param_columns(rows) if c.startswith("eval.")]


def varying_eval_columns(rows: pd.DataFrame) -> list[str]:
    """The ``eval.<param>`` columns that take several values (empty counts as one: for
    ``eval.labels_per_class`` it means all labels), in column order."""
    return [c for c in eval_columns(rows) if rows[c].map(cell_value).nunique(dropna=False) > 1]


def shown_params(rows: pd.DataFrame, sweep: Iterable[str]) -> list[str]:
    """The params a table shows in columns of their own: the swept ones (those ``rows`` have), then
    the ``eval.`` params that differ between rows without being swept (they are in no component's label)."""
    swept = [key for key in sweep if key in rows.columns]
    return swept + [key for key in varying_eval_columns(rows) if key not in swept]


def cell_value(value: Any) -> Any:
    """A hashable, JSON-able form of a cell: None for missing, ints for whole floats."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def param_text(column: str, value: Any) -> str:
    """A param's value as labels and tables show it: ``all`` for an empty ``eval.labels_per_class``."""
    if column == LABELS_PER_CLASS and cell_value(value) is None:
        return ALL_LABELS
    return value_text(value)


def value_text(value: Any) -> str:
    """A param's value in a label, as the suite's YAML writes it (``null``, ``true``): large numbers in
    their short form (``1.2132e+12``), floats without trailing zeros, the rest as they are."""
    value = cell_value(value)
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    if isinstance(value, (int, float)) and abs(value) >= 1e6:
        return f"{value:g}"
    return f"{value:g}" if isinstance(value, float) else str(value)
