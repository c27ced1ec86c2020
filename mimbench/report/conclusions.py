"""The report's written conclusions, generated from ``comparisons.csv`` and the table by fixed
wording rules, so that no sentence says more than its rows.

The rules, per family of comparisons (against random-init, against raw pixels, against the
reference configuration), metric and label budget:

- a difference is **better** or **worse** than its reference only when it is *resolved*: its
  Holm-adjusted sign-flip test is significant where its table has the seeds for one, else its
  family-wise interval excludes 0 (:func:`mimbench.report.comparisons.is_resolved`); every
  other difference is **not separated**
  from its reference, whatever its mean;
- a better or worse difference read from one probe says so when the same comparison under another
  probe is not resolved the same way (:func:`mimbench.report.agreement.only_under`);
- a configuration or baseline is **the best** of a metric only when the table marks it so (bold):
  it beats every other row evaluated alike pairwise, Holm-adjusted
  (:func:`mimbench.report.best.best_row`); otherwise the sentence says that none is
  separated from all the others.

Every sentence quotes the mean difference and its 95% interval from the row it stands on.
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from mimbench import columns
from mimbench.columns import MetricColumn
from mimbench.report import comparisons
from mimbench.report.agreement import only_under
from mimbench.labels import LABELS_PER_CLASS, param_text
from mimbench.report.best import all_comparable
from mimbench.report.pairs import finished

#: How each family's sentences begin.
FAMILY_SUBJECTS = {comparisons.RANDOM_INIT: "against its random-init encoder",
                   comparisons.PIXELS: "against raw pixels",
                   comparisons.SUPERVISED: "against its encoder trained on the labels (supervised)",
                   comparisons.REFERENCE: "against the reference configuration",
                   comparisons.INPAINTING: "against biharmonic inpainting of the same hidden pixels"}


def conclusions(frame: pd.DataFrame, table: pd.DataFrame, runs: pd.DataFrame,
                declared: Sequence[MetricColumn]) -> list[str]:
    """The conclusions' sentences: one per family, metric and label budget of ``frame``
    (:func:`mimbench.report.comparisons.compare`), then one per headline metric and label budget
    of ``table`` (with ``<metric>_is_best``; its labelled ``runs``) on the best row."""
    names = {c.key: c for c in declared}
    sentences = []
    for (family, metric, labels), rows in _groups(frame):
        above = rows[(rows["resolved"] == True) & (rows["mean_diff"] * _sign(names, metric) > 0)]  # noqa: E712
        below = rows[(rows["resolved"] == True) & (rows["mean_diff"] * _sign(names, metric) < 0)]  # noqa: E712
        unresolved = rows[rows["resolved"] != True]  # noqa: E712
        parts = []
        if len(above):
            parts.append("better: " + "; ".join(_quoted(row, names) + only_under(row, frame, declared)
                                                for row in above.itertuples(index=False)))
        if len(below):
            parts.append("worse: " + "; ".join(_quoted(row, names) + only_under(row, frame, declared)
                                               for row in below.itertuples(index=False)))
        if len(unresolved):
            parts.append("not separated: " + "; ".join(_quoted(row, names) for row in unresolved.itertuples(index=False)))
        sentences.append(f"{metric_name(names, metric)}{labels_text(labels)}, {FAMILY_SUBJECTS[family]}: "
                         + ". ".join(parts) + ".")
    sentences += _best_sentences(table, runs, declared)
    return sentences


def _groups(frame: pd.DataFrame):
    if frame.empty:
        return []
    keys = [(row.family, row.metric, _labels_key(row.labels_per_class)) for row in frame.itertuples(index=False)]
    order = list(dict.fromkeys(keys))
    return [((family, metric, labels), frame[[k == (family, metric, labels) for k in keys]])
            for family, metric, labels in order]


def _labels_key(labels: Any) -> Any:
    return None if labels is None or (isinstance(labels, float) and pd.isna(labels)) else labels


def _best_sentences(table: pd.DataFrame, runs: pd.DataFrame, declared: Sequence[MetricColumn]) -> list[str]:
    if len(table) < 2:
        return []
    if LABELS_PER_CLASS in table.columns:
        budgets = table[LABELS_PER_CLASS].map(lambda v: param_text(LABELS_PER_CLASS, v))
    else:
        budgets = pd.Series("", index=table.index)
    sentences = []
    for metric in declared:
        flag, mean = f"{metric.key}_is_best", f"{metric.key}_mean"
        if not metric.headline or not metric.compared or flag not in table.columns:
            continue
        reconstruction = metric.kind in columns.RECONSTRUCTION_KINDS  # measured before any probe: one sentence
        for budget in list(dict.fromkeys(budgets))[:1] if reconstruction else dict.fromkeys(budgets):
            rows = table[budgets == budget].dropna(subset=[mean])
            if len(rows) < 2:
                continue
            where = metric.name + (f" ({budget} labels/class)" if budget and not reconstruction else "")
            best = rows[rows[flag] == True]  # noqa: E712
            if not all_comparable(rows, finished(runs), metric.key):
                sentences.append(f"{where}: no best is named, as the configurations do not compare on it (scored "
                                 f"under different maskers or targets, or with the hidden patch's own statistics).")
            elif len(best):
                sentences.append(f"{where}: {best.iloc[0]['label']} is the best, ahead of every other configuration "
                                 f"and baseline pairwise (sign-flip tests, Holm-adjusted).")
            else:
                sentences.append(f"{where}: no configuration or baseline is separated from all the others.")
    return sentences


def _sign(names: dict[str, MetricColumn], metric: str) -> int:
    column = names.get(metric)
    return -1 if column is not None and column.kind == "mse" else 1


def _quoted(row: Any, names: dict[str, MetricColumn]) -> str:
    subject = row.configuration if row.family != comparisons.REFERENCE else f"{row.configuration} vs {row.reference}"
    return f"{subject} {interval_text(row, names)}"


def metric_name(names: dict[str, MetricColumn], key: str) -> str:
    column = names.get(key)
    return column.name if column else key


def labels_text(labels: Any) -> str:
    """`` (10 labels/class)``, or empty without a label budget."""
    if _labels_key(labels) is None:
        return ""
    return f" ({int(labels) if isinstance(labels, float) else labels} labels/class)"


def labels_cell_text(labels: Any) -> str:
    """A label budget for a table cell: ``10``, ``all``, or ``–`` without one."""
    return labels_text(labels).removeprefix(" (").removesuffix(" labels/class)") or "–"


def interval_text(row: Any, names: dict[str, MetricColumn]) -> str:
    """``+0.053 [+0.049, +0.058]`` (``*``: significant after Holm) in the metric's digits."""
    column = names.get(row.metric)
    digits = column.digits if column else 3
    text = f"{row.mean_diff:+.{digits}f}"
    if row.ci_low is not None and pd.notna(row.ci_low):
        text += f" [{row.ci_low:+.{digits}f}, {row.ci_high:+.{digits}f}]"
    return text + ("*" if row.significant is True else "")
