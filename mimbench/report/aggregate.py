"""A finished suite's runs, aggregated over seeds: the numbers behind the report's tables and plots.

Runs are grouped by configuration (every column of the summary that describes what was
run, i.e. everything but the seed and the run id). For each configuration and each metric
the table holds the mean, the standard deviation (pandas ``std``, ddof=1) and the count over
the *finished* seeds (status ``done``); failed, diverged and pending runs are counted, and
listed by :func:`failures`, never silently dropped. Accuracies (the columns declared with
kind ``accuracy``, see :mod:`mimbench.columns`, and their per-block ``<key>@<block>`` columns)
also get the gain over the ``random-init`` baseline of the same encoder, paired by seed and by
the evaluation settings (``eval.<param>`` columns, e.g. ``eval.labels_per_class``: a run probed
with 10 labels per class is compared with the baseline probed with the same 10 labels per class).

Markdown and LaTeX renderings of the table live in :mod:`mimbench.report.tables`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from mimbench import columns
from mimbench.columns import MetricColumn
from mimbench.folder import SuiteFolder
from mimbench.labels import COMPONENTS, LABEL_FIELDS, LABELS_PER_CLASS, cell_value, param_columns
from mimbench.report.labelled import LABEL_COLUMNS, ensure_labelled
from mimbench.report.pairs import finished, partner_pairs
from mimbench.specs import Status

#: Statuses of runs that did not produce metrics.
UNFINISHED = (Status.FAILED.value, Status.DIVERGED.value, Status.PENDING.value)
#: The labels per class the probes used: ``eval.labels_per_class``, or with all labels the train
#: split's labelled images over the number of classes (rounded). On the rows that ran probes.
PROBE_LABELS_PER_CLASS = "probe_labels_per_class"

def load_summary(suite_dir: Path) -> pd.DataFrame:
    """The suite's ``summary.csv`` (read by :class:`~mimbench.folder.SuiteFolder`), normalised; a
    missing folder or file is a :class:`ConfigError`."""
    return normalize_summary(SuiteFolder(suite_dir).read_summary())


def normalize_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """Fill the columns older or partial summaries lack, with plain types: ``pretrained`` bool,
    ``baseline`` "" for pre-trained runs, component names "" where absent, metrics float."""
    runs = summary.copy()
    if "baseline" not in runs.columns:
        runs["baseline"] = ""
    runs["baseline"] = runs["baseline"].astype(object).where(runs["baseline"].notna(), "").astype(str)
    if "pretrained" in runs.columns:
        runs["pretrained"] = runs["pretrained"].map(to_bool).astype(bool)
    else:
        runs["pretrained"] = runs["baseline"] == ""
    if "target" not in runs.columns:  # a summary from before targets: every run predicted pixels
        runs["target"] = runs["pretrained"].map({True: "pixels", False: ""})
    for column in ("dataset", *COMPONENTS):
        if column not in runs.columns:
            runs[column] = ""
        runs[column] = runs[column].astype(object).where(runs[column].notna(), "").astype(str)
    runs["status"] = runs["status"].astype(str)
    if "seed" in runs.columns:
        runs["seed"] = pd.to_numeric(runs["seed"], errors="coerce").astype("Int64")
    for column in metric_columns(runs):
        runs[column] = pd.to_numeric(runs[column], errors="coerce").astype(float)
    return runs


def to_bool(value: Any) -> bool:
    """A true/false cell of a summary or table as a bool: ``"True"``, ``"true"``, ``"1"``, ``"yes"``,
    True or a non-zero number are true; empty (None, NaN, NA) is false."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(value)


def label_counts(runs: pd.DataFrame) -> list[int | None]:
    """The distinct ``eval.labels_per_class`` values of ``runs``, ascending, None (all labels)
    last; ``[]`` without the column."""
    if LABELS_PER_CLASS not in runs.columns:
        return []
    values = {cell_value(v) for v in runs[LABELS_PER_CLASS]}
    return sorted(v for v in values if v is not None) + ([None] if None in values else [])


def at_label_count(runs: pd.DataFrame, count: int | None) -> pd.DataFrame:
    """The rows of ``runs`` (per run or aggregated) probed with ``count`` labels per class
    (None: all labels); all rows without the column."""
    if LABELS_PER_CLASS not in runs.columns:
        return runs
    return runs[[cell_value(v) == count for v in runs[LABELS_PER_CLASS]]]


def config_columns(runs: pd.DataFrame) -> list[str]:
    """Every column that describes what was run: all but seed, run id, outcome and metrics."""
    fixed = [c for c in ("dataset", *COMPONENTS, "pretrained", "baseline") if c in runs.columns]
    return fixed + param_columns(runs)


def metric_columns(runs: pd.DataFrame) -> list[str]:
    """The numeric columns that measure a run (metrics, timings), in summary order."""
    skip = set(columns.IDENTITY_COLUMNS) | set(param_columns(runs)) | set(LABEL_COLUMNS)
    metrics = []
    for column in runs.columns:
        if column in skip or runs[column].dtype == bool:
            continue
        values = runs[column]
        if pd.api.types.is_numeric_dtype(values) or pd.to_numeric(values, errors="coerce").notna().sum() == values.notna().sum():
            metrics.append(column)
    return metrics


def declared_or_inferred(frame: pd.DataFrame, declared: Sequence[MetricColumn] | None) -> list[MetricColumn]:
    """``declared`` as a list; when None, the declarations inferred from ``frame``'s columns
    (:func:`mimbench.columns.inferred`): a per-run frame's, or an aggregated table's
    ``<key>_mean`` columns. For notebooks; the report reads ``columns.json`` through the suite folder."""
    if declared is not None:
        return list(declared)
    names = list(frame.columns)
    if "n_runs" in frame.columns:  # aggregated: the metrics are the <key>_mean columns
        names = [c.removesuffix("_mean") for c in names if c.endswith("_mean")]
    return columns.inferred(names)


def accuracy_metrics(runs: pd.DataFrame, declared: Sequence[MetricColumn]) -> list[str]:
    """The columns that get a gain over the random-init baseline, in summary order: the declared
    accuracies and their per-block columns (``<key>@<block>``), those holding at least one value."""
    keys = {c.key for c in declared if c.kind == "accuracy"}
    return [c for c in metric_columns(runs) if (c in keys or _per_block_of(c) in keys) and runs[c].notna().any()]


def _per_block_of(column: str) -> str | None:
    """``<key>`` for a per-block column ``<key>@<block>`` (see :func:`mimbench.probing.layerwise`), else None."""
    match = re.fullmatch(r"(.+)@\d+", column)
    return match.group(1) if match else None


def aggregate(runs: pd.DataFrame, declared: Sequence[MetricColumn] | None = None) -> pd.DataFrame:
    """One row per configuration of ``runs`` (labelled, see :mod:`mimbench.report.labelled`, in the
    view whose labels the rows should carry; a bare summary is labelled from itself): its config
    columns and labels; ``n_runs``, ``n_done``, ``n_failed``, ``n_diverged``, ``n_pending``,
    ``seeds_done``; for every metric ``<metric>_mean``, ``<metric>_std`` (ddof=1) and ``<metric>_n``
    over finished seeds; and for the accuracies of ``declared`` (default: inferred from the columns)
    and their per-block columns ``<metric>_gain_mean/_std/_n``, the per-seed difference to the
    configuration's ``random-init`` partner (see :func:`baseline_gains`). Sorted by encoder (in
    suite order), each encoder's pre-trained configurations first, then its baseline; raw pixels last."""
    runs = ensure_labelled(runs)
    declared = declared_or_inferred(runs, declared)
    keys = [*config_columns(runs), "configuration", *LABEL_FIELDS]
    table = runs.groupby("config_id", sort=False)[keys].first()
    status = runs.groupby("config_id", sort=False)["status"]
    table["n_runs"] = status.size()
    for name in (Status.DONE.value, *UNFINISHED):
        table[f"n_{name}"] = status.agg(lambda s, name=name: int((s == name).sum()))
    done = finished(runs)
    seeds = {key: ",".join(str(v) for v in sorted(group.dropna())) for key, group in done.groupby("config_id")["seed"]}
    table["seeds_done"] = [seeds.get(key, "") for key in table.index]
    metrics = [m for m in metric_columns(runs) if runs[m].notna().any()]
    if metrics:
        stats = done.groupby("config_id")[metrics].agg(["mean", "std", "count"])
        stats.columns = [f"{metric}_{'n' if stat == 'count' else stat}" for metric, stat in stats.columns]
        table = table.join(stats)
        for metric in metrics:
            table[f"{metric}_n"] = table[f"{metric}_n"].fillna(0).astype(int)
    gains = baseline_gains(runs, accuracy_metrics(runs, declared))
    table = table.join(gains)
    for column in gains.columns:
        if column.endswith("_n"):
            table[column] = table[column].astype("Int64")  # empty for configurations without a baseline
    table = table.copy()  # one block per dtype (the columns were added one by one): pandas warns otherwise
    return table.iloc[_sort_order(table)].reset_index()


def baseline_gains(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Per pre-trained configuration of the labelled ``runs``, ``<metric>_gain_mean/_std/_n``: the
    mean and std (ddof=1) of ``metric(run) - metric(random-init partner)`` over the seeds both
    finished (:func:`mimbench.report.pairs.seed_pairs`). Indexed by ``config_id``."""
    columns_ = [f"{m}_gain_{s}" for m in metrics for s in ("mean", "std", "n")]
    rows: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        for row, _, pairs in partner_pairs(runs, metric, "random-init"):
            diffs = pairs["diff"]
            rows.setdefault(row["config_id"], {}).update({
                f"{metric}_gain_mean": float(diffs.mean()), f"{metric}_gain_std": float(diffs.std(ddof=1)),
                f"{metric}_gain_n": int(len(diffs))})
    gains = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns_)
    gains.index.name = "config_id"
    return gains


def _sort_order(table: pd.DataFrame) -> list[int]:
    """Positions of ``table``'s rows: by encoder in order of first appearance, pre-trained
    configurations (in suite order) before that encoder's baselines; raw pixels last."""
    encoders: dict[str, int] = {}
    for label, pretrained in zip(table["encoder_label"], table["pretrained"]):
        if pretrained:
            encoders.setdefault(label, len(encoders))
    for label in table["encoder_label"]:
        if label != "pixels":
            encoders.setdefault(label, len(encoders))
    order = sorted(range(len(table)), key=lambda i: (
        encoders.get(table["encoder_label"].iloc[i], len(encoders)),
        0 if table["pretrained"].iloc[i] else 1,
        i,
    ))
    return order


def failures(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run that did not finish: ``run_id``, ``label``, ``seed``, ``status``, ``reason``
    (the error's last line for a failed run; the epoch and loss for a diverged one)."""
    runs = ensure_labelled(runs)
    bad = runs[runs["status"] != Status.DONE]
    reasons = [_reason(row) for _, row in bad.iterrows()]
    return pd.DataFrame({"run_id": bad["run_id"].astype(str).to_list(), "label": bad["label"].to_list(),
                         "seed": bad["seed"].to_list() if "seed" in bad.columns else [None] * len(bad),
                         "status": bad["status"].to_list(), "reason": reasons})


def _reason(row: pd.Series) -> str:
    if row["status"] == Status.FAILED:
        error = row.get("error")
        return str(error) if cell_value(error) is not None else "failed (no error recorded)"
    if row["status"] == Status.DIVERGED:
        epochs, loss = cell_value(row.get("epochs_completed")), cell_value(row.get("final_loss"))
        if isinstance(epochs, int) and epochs > 0 and loss is None:
            epochs -= 1  # older records counted the epoch that diverged (its loss NaN)
        parts = ["training loss became non-finite"]
        if epochs is not None:
            parts.append(f"after {epochs} finished epoch{'s' if epochs != 1 else ''}")
        if loss is not None:
            parts.append(f"(last finite loss {loss:.4g})" if isinstance(loss, (int, float)) and math.isfinite(loss)
                         else f"(loss {loss})")
        return " ".join(parts)
    if row["status"] == Status.PENDING:
        return "not run yet (interrupted suite? run the same command again to finish it)"
    return str(row["status"])
