"""Do the probes agree? ``agreement.csv``, and the comparisons whose sign depends on the probe.

A conclusion about masking variants is only as good as the probe it was read from: a linear probe
on mean-pooled features can rank configurations that an attentive probe or fine-tuning calls
equal, or the other way round. For every pair of probe scores (:func:`probe_metrics`) and label
budget, :func:`agreement` gives Kendall's τ-b between the configurations' mean scores (every
pre-trained configuration scored by both, each mean over its finished seeds; the baselines are
the yardsticks of the comparisons, not entries of the ranking) with a jackknife
interval over the seeds: the τ of the means with each seed left out in turn, SE² = (n − 1)/n ·
Σ (τ₋ₛ − τ̄)², and τ ± t(n − 1, 0.975) · SE, clipped to [−1, 1] (none with one seed). The interval
is centred on τ, so it always holds it; it treats the configurations as fixed and the seeds as the
sample. :func:`sign_disagreements` lists the comparisons of ``comparisons.csv`` whose difference
changes sign from one probe to another, and :func:`only_under` what a conclusion that holds under
some probes only has to say.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from mimbench import columns
from mimbench.columns import MetricColumn
from mimbench.report.comparisons import labels_cell
from mimbench.report.labelled import view
from mimbench.report.pairs import finished

#: Each suite's probe agreement, written next to comparisons.csv.
AGREEMENT_FILE = "agreement.csv"
#: The columns of ``agreement.csv``, in this order.
COLUMNS = ["probe_a", "probe_b", "metric_a", "metric_b", "labels_per_class", "n_configurations", "n_seeds",
           "kendall_tau", "ci_low", "ci_high"]


def probe_metrics(declared: Sequence[MetricColumn], present: Sequence[str]) -> list[MetricColumn]:
    """The probes' compared headline scores the runs have (best-block columns left out): accuracies,
    and scores of kind ``other`` (the restoration probe's PSNR and SSIM), higher better as
    ``comparisons.csv`` takes them; the core's reconstruction columns are not a probe's."""
    return [c for c in columns.compared(declared) if c.kind in ("accuracy", "other") and c.key in present]


def probe_name(metric: str) -> str:
    """The probe behind an accuracy column: ``linear_acc`` -> ``linear``, ``seg_miou`` -> ``seg_miou``."""
    return metric.removesuffix("_acc")


def agreement(runs: pd.DataFrame, declared: Sequence[MetricColumn]) -> pd.DataFrame:
    """One row per pair of probes and label budget (:data:`COLUMNS`), from the labelled ``runs``."""
    runs = finished(view(runs, "budget"))
    runs = runs[runs["pretrained"].astype(bool)]
    metrics = probe_metrics(declared, list(runs.columns))
    rows = []
    if runs.empty:
        return pd.DataFrame(rows, columns=COLUMNS)
    budgets = [labels_cell(row) for _, row in runs.iterrows()]
    for labels in dict.fromkeys(budgets):
        chosen = runs[[budget == labels for budget in budgets]]
        for a, b in itertools.combinations(metrics, 2):
            scores = chosen[["config_id", "seed", a.key, b.key]].dropna()
            if scores["config_id"].nunique() < 2:
                continue
            tau, low, high, seeds = kendall_with_interval(scores, a.key, b.key)
            rows.append({"probe_a": probe_name(a.key), "probe_b": probe_name(b.key), "metric_a": a.key,
                         "metric_b": b.key, "labels_per_class": labels,
                         "n_configurations": int(scores["config_id"].nunique()), "n_seeds": seeds,
                         "kendall_tau": tau, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=COLUMNS)


def kendall_with_interval(scores: pd.DataFrame, a: str, b: str) -> tuple[float, float, float, int]:
    """τ-b between the per-configuration means of columns ``a`` and ``b`` of ``scores`` (columns
    ``config_id``, ``seed``, a, b), its jackknife interval over the seeds (module docstring; NaN
    with one seed) and the number of seeds."""
    tau = _tau(scores, a, b)
    seeds = sorted(scores["seed"].unique())
    n = len(seeds)
    if n < 2 or math.isnan(tau):
        return tau, math.nan, math.nan, n
    left_out = np.array([_tau(scores[scores["seed"] != seed], a, b) for seed in seeds])
    if np.isnan(left_out).any():  # a configuration scored on one seed only, or ties everywhere
        return tau, math.nan, math.nan, n
    se = math.sqrt((n - 1) / n * float(((left_out - left_out.mean()) ** 2).sum()))
    half = float(scipy_stats.t.ppf(0.975, n - 1)) * se
    return tau, max(-1.0, tau - half), min(1.0, tau + half), n


def _tau(scores: pd.DataFrame, a: str, b: str) -> float:
    means = scores.groupby("config_id")[[a, b]].mean()
    if len(means) < 2:
        return math.nan
    return float(scipy_stats.kendalltau(means[a].to_numpy(float), means[b].to_numpy(float)).statistic)


def to_csv(frame: pd.DataFrame) -> str:
    """``agreement.csv``: numbers to 12 significant digits, empty where there is none."""
    return frame[COLUMNS].to_csv(index=False, float_format="%.12g")


def _same_question(frame: pd.DataFrame, metrics: set[str]) -> list[pd.DataFrame]:
    """The rows of ``comparisons.csv`` (its frame) that ask one question under several probes: same
    family, configuration, reference and label budget, one row per probe accuracy."""
    rows = frame[frame["metric"].isin(metrics)]
    if rows.empty:
        return []
    keys = [(r.family, r.configuration, r.reference, budget_key(r.labels_per_class)) for r in rows.itertuples(index=False)]
    return [rows[[k == key for k in keys]] for key in dict.fromkeys(keys)
            if sum(k == key for k in keys) > 1]


def sign_disagreements(frame: pd.DataFrame, declared: Sequence[MetricColumn]) -> list[pd.DataFrame]:
    """The groups of comparisons (one row per probe) whose mean difference is positive under some
    probe and negative under another."""
    metrics = {c.key for c in probe_metrics(declared, list(frame["metric"].unique()))} if len(frame) else set()
    return [rows for rows in _same_question(frame, metrics)
            if (rows["mean_diff"] > 0).any() and (rows["mean_diff"] < 0).any()]


def only_under(row: Any, frame: pd.DataFrame, declared: Sequence[MetricColumn]) -> str:
    """For a resolved comparison ``row`` of ``frame``: `` (under linear only; attentive: not
    separated)`` when the same question asked under another probe is not resolved the same way,
    else ``""``."""
    named = {c.key: c.name for c in probe_metrics(declared, list(frame["metric"].unique()))}
    metrics = set(named)
    if row.metric not in metrics:
        return ""
    sign = np.sign(row.mean_diff)
    others = frame[(frame["family"] == row.family) & (frame["configuration"] == row.configuration)
                   & (frame["reference"] == row.reference) & frame["metric"].isin(metrics - {row.metric})
                   & (frame["labels_per_class"].map(budget_key) == budget_key(row.labels_per_class))]
    if others.empty:
        return ""
    agreeing = [named[row.metric]]
    dissent = []
    for other in others.itertuples(index=False):
        if bool(other.resolved):
            if np.sign(other.mean_diff) == sign:
                agreeing.append(named[other.metric])
                continue
            dissent.append(f"{named[other.metric]}: the opposite")
        else:
            dissent.append(f"{named[other.metric]}: not separated")
    if not dissent:
        return ""
    return f" (under {', '.join(agreeing)} only; {', '.join(dissent)})"


def budget_key(labels: Any) -> str:
    """A label budget cell as a key that compares equal to itself: ``""`` for none (None or NaN)."""
    return "" if labels is None or (isinstance(labels, float) and math.isnan(labels)) else str(labels)
