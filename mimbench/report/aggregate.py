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

import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from mimbench import columns
from mimbench.columns import MetricColumn
from mimbench.folder import SuiteFolder
from mimbench.report.config_ids import readable_ids
from mimbench.specs import Status

#: Component columns of the summary, in display order.
COMPONENTS = ("encoder", "decoder", "masker", "loss", "target")
#: ``<prefix>.<param>`` columns that describe a configuration.
PARAM_PREFIXES = ("dataset", "encoder", "decoder", "masker", "loss", "target", "train", "eval")
#: Statuses of runs that did not produce metrics.
UNFINISHED = (Status.FAILED.value, Status.DIVERGED.value, Status.PENDING.value)
#: Added columns: an id per configuration and readable labels.
LABEL_COLUMNS = ("config_id", *(f"{axis}_label" for axis in COMPONENTS), "setup_label", "label")
#: The probes' label budget: labelled training images per class (a class-balanced subset of the
#: train split), empty for all labels. On every row, baselines too; scores are on the full test split.
LABELS_PER_CLASS = "eval.labels_per_class"
#: The labels per class the probes used: ``eval.labels_per_class``, or with all labels the train
#: split's labelled images over the number of classes (rounded). On the rows that ran probes.
PROBE_LABELS_PER_CLASS = "probe_labels_per_class"
#: How an empty ``eval.labels_per_class`` (all labels) is written in labels and tables.
ALL_LABELS = "all"


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


def param_columns(runs: pd.DataFrame) -> list[str]:
    """The ``<kind>.<param>`` and ``train.<param>`` columns, in summary order."""
    return [c for c in runs.columns if "." in c and c.split(".", 1)[0] in PARAM_PREFIXES]


def eval_columns(runs: pd.DataFrame) -> list[str]:
    """The ``eval.<param>`` columns: how runs and baselines alike were evaluated."""
    return [c for c in param_columns(runs) if c.startswith("eval.")]


def varying_eval_columns(runs: pd.DataFrame) -> list[str]:
    """The ``eval.<param>`` columns that take several values (empty counts as one: for
    ``eval.labels_per_class`` it means all labels), in summary order."""
    return [c for c in eval_columns(runs) if runs[c].map(cell_value).nunique(dropna=False) > 1]


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


def param_text(column: str, value: Any) -> str:
    """A param's value as labels and tables show it: ``all`` for an empty ``eval.labels_per_class``."""
    if column == LABELS_PER_CLASS and cell_value(value) is None:
        return ALL_LABELS
    return _text(value)


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


def label_runs(runs: pd.DataFrame, hide: tuple[str, ...] = ()) -> pd.DataFrame:
    """A copy of ``runs`` with ``config_id`` and readable labels.

    ``config_id`` is unique per configuration: its full label and a short hash
    (:mod:`mimbench.report.config_ids`). A component is named with the params that vary between
    the configurations using it,
    e.g. ``patch(ratio=0.4)``; ``train.`` and ``eval.`` params that vary are added as
    ``name=value`` (``labels_per_class=10``; baselines carry the ``eval.`` ones too:
    ``cnn (random-init, labels_per_class=10)``); ``hide`` lists param columns to leave out of the
    labels (swept params shown in a column of their own). ``encoder_label`` is the hue of the
    plots, ``setup_label`` everything else that varies (the x axis), ``label`` both.
    """
    runs = runs.copy()
    configs = config_columns(runs)
    keys = [json.dumps([cell_value(v) for v in row], default=str) for row in runs[configs].itertuples(index=False)]
    runs["config_id"] = keys  # made readable once the labels are known
    params = param_columns(runs)
    pretrained = runs[runs["pretrained"]]
    varying = {kind: [p for p in params if p.startswith(kind + ".") and p not in hide
                      and _varies_within_names(runs, kind, p)] for kind in PARAM_PREFIXES}
    shown_axes = [axis for axis in COMPONENTS[1:] if axis == "masker" or pretrained[axis].nunique() > 1
                  or any(varying[axis])]
    train_varying = [p for p in params if p.startswith("train.") and p not in hide
                     and pretrained[p].map(cell_value).nunique(dropna=False) > 1]
    eval_varying = [p for p in varying_eval_columns(runs) if p not in hide]
    labels: dict[str, list[str]] = {column: [] for column in LABEL_COLUMNS[1:]}
    for _, row in runs.iterrows():
        for key, value in _row_labels(row, varying, shown_axes, train_varying, eval_varying).items():
            labels[key].append(value)
    for key, values in labels.items():
        runs[key] = values
    runs["config_id"] = readable_ids(keys, runs["label"] if not hide else label_runs(runs)["label"])
    return runs


def _row_labels(row: pd.Series, varying: dict[str, list[str]], shown_axes: list[str],
                train_varying: list[str], eval_varying: list[str] = ()) -> dict[str, str]:
    """The label columns of one run (see :func:`label_runs`)."""
    labels = {f"{axis}_label": _component_label(row, axis, varying[axis]) for axis in COMPONENTS}
    evaluation = [f"{p.split('.', 1)[1]}={param_text(p, row[p])}" for p in eval_varying]
    if row["baseline"] == "pixels" or (row["baseline"] and row["encoder"] == "pixels"):
        labels.update(encoder_label="pixels", setup_label="raw pixels",
                      label=f"raw pixels ({', '.join(['baseline', *evaluation])})")
    elif not row["pretrained"]:
        kind = row["baseline"] or "baseline"
        labels.update(setup_label=kind, label=f"{labels['encoder_label']} ({', '.join([kind, *evaluation])})")
    else:
        parts = [labels[f"{axis}_label"] for axis in shown_axes]
        parts += [f"{p.split('.', 1)[1]}={_text(row[p])}" for p in train_varying]
        parts += evaluation
        labels.update(setup_label=" / ".join(parts), label=" / ".join([labels["encoder_label"], *parts]))
    return labels


def _varies_within_names(runs: pd.DataFrame, kind: str, column: str) -> bool:
    """True when ``column`` takes several values among the runs sharing a ``kind`` name."""
    if kind not in runs.columns:
        return runs[column].map(cell_value).nunique(dropna=True) > 1
    having = runs[runs[column].notna()]
    return bool((having.groupby(kind)[column].agg(lambda s: s.map(cell_value).nunique()) > 1).any())


def _component_label(row: pd.Series, kind: str, varying: list[str]) -> str:
    name = row[kind] if kind in row.index else ""
    shown = [f"{p.split('.', 1)[1]}={_text(row[p])}" for p in varying if cell_value(row[p]) is not None]
    return f"{name}({','.join(shown)})" if shown else str(name)


def cell_value(value: Any) -> Any:
    """A hashable, JSON-able form of a cell: None for missing, ints for whole floats."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _text(value: Any) -> str:
    """A param's value in a label: large numbers in their short form (``1.2132e+12``), floats
    without trailing zeros, the rest as they are."""
    value = cell_value(value)
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()  # as the suite's YAML writes it
    if isinstance(value, (int, float)) and abs(value) >= 1e6:
        return f"{value:g}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def aggregate(summary: pd.DataFrame, hide: tuple[str, ...] = (),
              declared: Sequence[MetricColumn] | None = None) -> pd.DataFrame:
    """One row per configuration: its config columns and labels; ``n_runs``, ``n_done``,
    ``n_failed``, ``n_diverged``, ``n_pending``, ``seeds_done``; for every metric
    ``<metric>_mean``, ``<metric>_std`` (ddof=1) and ``<metric>_n`` over finished seeds; and
    for the accuracies of ``declared`` (default: inferred from the summary's columns) and
    their per-block columns ``<metric>_gain_mean/_std/_n``, the per-seed difference to the
    ``random-init`` baseline of the same encoder and evaluation settings (see
    :func:`baseline_gains`). Sorted by encoder (in suite order), each
    encoder's pre-trained configurations first, then its baseline; raw pixels last."""
    declared = declared_or_inferred(summary, declared)
    runs = summary if "config_id" in summary.columns else label_runs(summary, hide)
    keys = [*config_columns(runs), *LABEL_COLUMNS[1:]]
    table = runs.groupby("config_id", sort=False)[keys].first()
    status = runs.groupby("config_id", sort=False)["status"]
    table["n_runs"] = status.size()
    for name in (Status.DONE.value, *UNFINISHED):
        table[f"n_{name}"] = status.agg(lambda s, name=name: int((s == name).sum()))
    done = runs[runs["status"] == Status.DONE]
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
    table = table.iloc[_sort_order(table)].reset_index()
    return table


def baseline_gains(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Per pre-trained configuration, ``<metric>_gain_mean/_std/_n``: the mean and std (ddof=1)
    of ``metric(run) - metric(random-init baseline)`` over the seeds both finished (paired as
    :func:`random_init_pairs` pairs them). Indexed by ``config_id``."""
    columns = [f"{m}_gain_{s}" for m in metrics for s in ("mean", "std", "n")]
    paired = random_init_pairs(runs, metrics)
    metrics = [m for m in metrics if f"{m}_baseline" in paired.columns]
    if paired.empty or not metrics:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="config_id"))
    for metric in metrics:
        paired[f"{metric}_gain"] = paired[metric] - paired[f"{metric}_baseline"]
    gains = paired.groupby("config_id")[[f"{m}_gain" for m in metrics]].agg(["mean", "std", "count"])
    gains.columns = [f"{metric}_{'n' if stat == 'count' else stat}" for metric, stat in gains.columns]
    for metric in metrics:
        gains[f"{metric}_gain_n"] = gains[f"{metric}_gain_n"].astype(int)
    return gains.reindex(columns=columns)


def random_init_pairs(runs: pd.DataFrame, metrics: list[str], kind: str = "random-init") -> pd.DataFrame:
    """Every finished pre-trained run of ``runs`` that has a finished baseline of ``kind`` of the same
    seed, dataset and ``eval.<param>`` values (baselines are evaluated like the runs: e.g. with the
    same ``eval.labels_per_class``, an empty one matching an empty one), and for ``random-init`` the
    same encoder name and encoder params: the run's row with the baseline's ``<metric>_baseline``
    columns, its ``baseline_label`` and ``baseline_config_id``. Empty when nothing pairs."""
    runs = runs if "config_id" in runs.columns else label_runs(runs)
    paired_on = ("dataset", "encoder") if kind == "random-init" else ("dataset",)
    key_columns = [*paired_on, *[c for c in param_columns(runs) if c.split(".", 1)[0] in paired_on],
                   *eval_columns(runs)]
    done = runs[runs["status"] == Status.DONE].copy()
    done["_encoder_key"] = [json.dumps([cell_value(v) for v in row], default=str)
                            for row in done[key_columns].itertuples(index=False)]
    metrics = [m for m in metrics if m in done.columns]
    baselines = done[done["baseline"] == kind]
    pretrained = done[done["pretrained"]]
    if baselines.empty or pretrained.empty or not metrics:
        return pretrained.iloc[0:0]
    baseline = baselines.groupby(["_encoder_key", "seed"]).agg(
        {**{m: "mean" for m in metrics}, "label": "first", "config_id": "first"})
    baseline.columns = [*(f"{m}_baseline" for m in metrics), "baseline_label", "baseline_config_id"]
    return pretrained.join(baseline, on=["_encoder_key", "seed"], how="inner")


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
    runs = runs if "label" in runs.columns else label_runs(runs)
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
