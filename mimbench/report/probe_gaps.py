"""How much the probe changes a score: ``probe_gaps.csv``.

For every configuration and baseline, label budget and pair of probes (headline accuracy columns:
fractions, not the restoration probe's dB,
in the order the suite declares them, e.g. linear then attentive), the paired difference of the
later probe's accuracy minus the earlier one's, run by run: the same encoder, the same seed, the
same test images. Where both columns kept per-image predictions, each row is tested over the seeds
and the test images together (:func:`mimbench.stats.compare_outcomes`), else over the seeds
(:func:`mimbench.stats.compare_paired`). The rows form one family: Holm-adjusted p-values,
family-wise intervals and ``resolved`` as in ``comparisons.csv``
(:func:`mimbench.report.comparisons.adjusted`). It answers "does an attentive probe see more in
these features than a linear one?" with an interval, configuration by configuration.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import pandas as pd

from mimbench.columns import MetricColumn
from mimbench.report import comparisons
from mimbench.report.agreement import budget_key, probe_metrics
from mimbench.report.conclusions import interval_text, labels_text, metric_name
from mimbench.report.labelled import view
from mimbench.report.pairs import finished

PROBE_GAPS_FILE = "probe_gaps.csv"
FAMILY = "probes"
#: The columns of ``probe_gaps.csv``, in this order: ``metric`` minus ``reference_metric``.
COLUMNS = ["configuration", "labels_per_class", "metric", "reference_metric", "n", "n_images", "mean_diff", "ci_low",
           "ci_high", "ci_low_family", "ci_high_family", "p_value", "p_holm", "significant", "resolved"]


def probe_gaps(runs: pd.DataFrame, declared: Sequence[MetricColumn],
               outcomes: comparisons.Outcomes | None = None) -> pd.DataFrame:
    """The rows of ``probe_gaps.csv`` (:data:`COLUMNS`, then comparisons' internal columns) from the
    labelled ``runs``; ``outcomes`` as for :func:`mimbench.report.comparisons.compare`."""
    done = finished(view(runs, "budget"))
    metrics = [c for c in probe_metrics(declared, list(done.columns)) if c.kind == "accuracy"]  # fractions only
    rows = []
    for config_id in dict.fromkeys(done["config_id"]):
        mine = done[done["config_id"] == config_id]
        first = mine.iloc[0]
        for earlier, later in itertools.combinations(metrics, 2):
            values = mine[["seed", "run_id", earlier.key, later.key]].dropna().drop_duplicates("seed").sort_values("seed")
            if values.empty:
                continue
            pairs = pd.DataFrame({"diff": (values[later.key] - values[earlier.key]).to_numpy(float)},
                                 index=pd.Index(values["seed"], name="seed"))
            rows.append(comparisons.comparison_row(
                later, str(first["label"]), earlier.key, comparisons.labels_cell(first), pairs, FAMILY, config_id,
                config_id, _per_image(outcomes, values["run_id"], later.key, earlier.key)))
    frame = comparisons.adjusted(comparisons.frame_of(rows), [FAMILY])
    return frame.set_axis(["reference_metric" if c == "reference" else c for c in frame.columns], axis=1)


def _per_image(outcomes: comparisons.Outcomes | None, run_ids: pd.Series, mine: str,
               theirs: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Both columns' per-image outcomes in the same runs, bool [n, N] each, or None unless every run kept both."""
    if outcomes is None:
        return None
    kept = [[outcomes(str(run_id), metric) for run_id in run_ids] for metric in (mine, theirs)]
    if any(k is None for per_metric in kept for k in per_metric) or \
            len({k.shape for per_metric in kept for k in per_metric}) != 1:
        return None
    return np.stack(kept[0]), np.stack(kept[1])


def to_csv(frame: pd.DataFrame) -> str:
    """``probe_gaps.csv``: numbers to 12 significant digits, empty where not applicable."""
    return frame[COLUMNS].to_csv(index=False, float_format="%.12g")


def gap_lines(frame: pd.DataFrame, declared: Sequence[MetricColumn]) -> list[str]:
    """One sentence per pair of probes and label budget: which configurations the later probe scores
    higher or lower, resolved (as in the conclusions), each with its difference and interval."""
    names = {c.key: c for c in declared}
    lines = []
    keys = [(row.metric, row.reference_metric, budget_key(row.labels_per_class)) for row in frame.itertuples(index=False)]
    for key in dict.fromkeys(keys):
        rows = frame[[k == key for k in keys]]
        first = rows.iloc[0]
        parts = []
        for word, chosen in (("higher", rows["resolved"] & (rows["mean_diff"] > 0)),
                             ("lower", rows["resolved"] & (rows["mean_diff"] < 0)), ("not separated", ~rows["resolved"])):
            if chosen.any():
                parts.append(f"{word}: " + "; ".join(f"{row.configuration} {interval_text(row, names)}"
                                                     for row in rows[chosen].itertuples(index=False)))
        lines.append(f"{metric_name(names, first['metric'])} − {metric_name(names, first['reference_metric'])}"
                     f"{labels_text(first['labels_per_class'])}: " + ". ".join(parts) + ".")
    return lines

