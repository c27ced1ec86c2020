"""Does a label-free number pick the run the probes would? ``predictors.csv``, and the attention
contrasts of ``diagnostics.csv``.

For every label-free number of :data:`PREDICTORS` the runs have (RankMe and α-ReQ from the
``diagnostics`` probe, the final pre-training loss, the reconstruction PSNR under the reference
masker), every probe score (:func:`mimbench.report.agreement.probe_metrics`) and label budget,
:func:`predictors` gives:

- Kendall's τ-b between the pre-trained configurations' mean predictor (oriented so that higher is
  what it prefers) and their mean probe score, with the jackknife interval over the seeds of
  ``agreement.csv`` (:func:`mimbench.report.agreement.kendall_with_interval`);
- the selection regret: the configuration the predictor prefers (``picked``, its mean over seeds)
  against the configuration with the best mean probe score (``best``), best − picked, with the 95%
  t interval of the seeds' paired differences (:func:`mimbench.stats.mean_interval`, plain; none
  with one seed). Best is chosen on the same seeds, so the regret is an optimistic bound of how good
  the best is, not an unbiased estimate; ``picked_well`` is the rule the report writes: true when
  the predictor picked the best, or when the regret's interval reaches 0 (the pick is not resolved
  below the best); false when it is; empty with one seed and another pick.

A predictor is compared only where its values are comparable (:data:`SHARED`): RankMe and α-ReQ
between configurations of one encoder config; the loss between configurations of one loss and
target (and encoder); the reference PSNR where the suite has a reference masker and without the runs
de-normalised with the hidden patch's own statistics. No row otherwise. Baselines are not entries
of the ranking (they are no candidates for selection).

``diagnostics.csv`` holds the contrasts the papers draw, in the columns of ``comparisons.csv``: each
pre-trained configuration's mean attention distance in its last block (``attn_distance``) against its
``supervised`` and ``random-init`` partners, paired by seed, Holm and family-wise intervals per family
(:func:`mimbench.report.comparisons.adjusted`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd

from mimbench import stats
from mimbench.columns import MetricColumn
from mimbench.report import comparisons, render
from mimbench.report.agreement import kendall_with_interval, probe_metrics
from mimbench.report.aggregate import to_bool
from mimbench.report.comparisons import labels_cell
from mimbench.report.conclusions import interval_text, labels_text, metric_name
from mimbench.report.labelled import view
from mimbench.report.pairs import finished, seed_pairs

PREDICTORS_FILE, DIAGNOSTICS_FILE = "predictors.csv", "diagnostics.csv"
#: Each label-free number: its column, its name, and what it prefers.
PREDICTORS = (("rankme", "RankMe", "higher"), ("alpha_req", "α-ReQ", "closer to 1"),
              ("final_loss", "final pre-training loss", "lower"),
              ("ref_psnr", "PSNR under the reference masker", "higher"))
#: The components whose config (name and params) a predictor's runs must share to be compared.
SHARED = {"rankme": ("encoder",), "alpha_req": ("encoder",), "final_loss": ("encoder", "loss", "target"),
          "ref_psnr": ()}
#: The columns of ``predictors.csv``, in this order.
COLUMNS = ["predictor", "prefers", "metric", "labels_per_class", "n_configurations", "n_seeds", "kendall_tau",
           "ci_low", "ci_high", "picked", "best", "regret", "regret_ci_low", "regret_ci_high", "picked_well"]
#: The diagnostics contrasted with the baselines in ``diagnostics.csv``, and against which partners.
CONTRASTED, CONTRAST_FAMILIES = ("attn_distance",), (comparisons.SUPERVISED, comparisons.RANDOM_INIT)


def predictors(runs: pd.DataFrame, declared: Sequence[MetricColumn]) -> pd.DataFrame:
    """One row per predictor, probe score and label budget (:data:`COLUMNS`), from the labelled
    ``runs``; empty for a suite without diagnostics (no ``rankme`` column)."""
    runs = finished(view(runs, "budget"))
    runs = runs[runs["pretrained"].astype(bool)]
    if "rankme" not in runs.columns or runs.empty:
        return pd.DataFrame([], columns=COLUMNS)
    metrics = probe_metrics(declared, list(runs.columns))
    budgets = [labels_cell(row) for _, row in runs.iterrows()]
    rows = []
    for labels in dict.fromkeys(budgets):
        chosen = runs[[budget == labels for budget in budgets]]
        for key, _, prefers in PREDICTORS:
            candidates = _comparable(chosen, key)
            if candidates is None:
                continue
            for metric in metrics:
                row = _row(candidates, key, prefers, metric.key)
                if row is not None:
                    rows.append({**row, "labels_per_class": labels})
    return pd.DataFrame(rows, columns=COLUMNS)


def _comparable(runs: pd.DataFrame, key: str) -> pd.DataFrame | None:
    """The runs whose ``key`` values compare (see :data:`SHARED`), or None when they do not."""
    if key not in runs.columns or runs[key].isna().all():
        return None
    if key == "ref_psnr" and "recon_uses_target_stats" in runs.columns:
        runs = runs[~runs["recon_uses_target_stats"].map(to_bool).astype(bool)]
    for axis in SHARED[key]:
        described = [c for c in runs.columns if c == axis or c.startswith(axis + ".")]
        if any(runs[c].astype(str).nunique() > 1 for c in described):
            return None
    return runs


def _row(runs: pd.DataFrame, key: str, prefers: str, metric: str) -> dict[str, Any] | None:
    """The row of predictor ``key`` against ``metric`` over ``runs``, or None with < 2 configurations."""
    scores = runs[["config_id", "seed", "label", key, metric]].dropna()
    if scores["config_id"].nunique() < 2:
        return None
    scores = scores.assign(preferred=_oriented(scores[key].astype(float), prefers))
    tau, low, high, seeds = kendall_with_interval(scores, "preferred", metric)
    means = scores.groupby("config_id")[["preferred", metric]].mean()
    picked, best = means["preferred"].idxmax(), means[metric].idxmax()
    name = scores.drop_duplicates("config_id").set_index("config_id")["label"]
    regret = float(means.at[best, metric] - means.at[picked, metric])
    regret_low = regret_high = math.nan
    if picked != best:
        diffs = seed_pairs(scores, best, picked, metric)["diff"].to_numpy(float)
        if len(diffs) >= 2:
            regret_low, regret_high = stats.mean_interval(diffs, correct_skew=False)
    well = True if picked == best else (None if math.isnan(regret_low) else bool(regret_low <= 0))
    return {"predictor": key, "prefers": prefers, "metric": metric, "n_configurations": int(len(means)),
            "n_seeds": seeds, "kendall_tau": tau, "ci_low": low, "ci_high": high, "picked": name[picked],
            "best": name[best], "regret": regret, "regret_ci_low": regret_low, "regret_ci_high": regret_high,
            "picked_well": well}


def _oriented(values: pd.Series, prefers: str) -> pd.Series:
    """``values`` turned so that higher is what the predictor prefers."""
    if prefers == "lower":
        return -values
    if prefers == "closer to 1":
        return -(values - 1.0).abs()
    return values


def diagnostics_contrasts(runs: pd.DataFrame, declared: Sequence[MetricColumn]) -> pd.DataFrame:
    """``diagnostics.csv``'s frame (the columns of :func:`mimbench.report.comparisons.compare`): each
    pre-trained configuration's :data:`CONTRASTED` diagnostics against its :data:`CONTRAST_FAMILIES`
    partners, paired by seed."""
    runs = view(runs, "budget")
    metrics = [c for c in declared if c.key in CONTRASTED and c.key in runs.columns]
    rows = [row for family in CONTRAST_FAMILIES for row in comparisons.baseline_rows(runs, metrics, family, None)]
    return comparisons.adjusted(comparisons.frame_of(rows), CONTRAST_FAMILIES)


def to_csv(frame: pd.DataFrame) -> str:
    """``predictors.csv``: numbers to 12 significant digits, empty where there is none."""
    frame = frame.assign(picked_well=[None if v is None or (isinstance(v, float) and math.isnan(v)) else bool(v)
                                      for v in frame["picked_well"]])
    return frame[COLUMNS].to_csv(index=False, float_format="%.12g")


def selection_lines(frame: pd.DataFrame, names: dict[str, str]) -> list[str]:
    """The report's sentences, one per row of ``frame`` (:func:`predictors`), by rule: picked the
    best; a pick not resolved below the best (the regret's interval reaches 0); a pick resolved
    below it; or, with one seed, a single measurement."""
    lines = []
    predictor_names = {key: name for key, name, _ in PREDICTORS}
    for row in frame.itertuples(index=False):
        subject = (f"{predictor_names[row.predictor]} ({row.prefers}) for {names.get(row.metric, row.metric)}"
                   f"{labels_text(row.labels_per_class)}")
        tau = f"τ = {row.kendall_tau:+.2f}" + (f" [{row.ci_low:+.2f}, {row.ci_high:+.2f}]" if pd.notna(row.ci_low) else "")
        if row.picked == row.best:
            verdict = f"picks the best configuration, {row.best}"
        elif pd.isna(row.picked_well):
            verdict = f"picks {row.picked} instead of {row.best} (−{row.regret:.3f}; one seed: no interval)"
        else:
            interval = f"−{row.regret:.3f} [{-row.regret_ci_high:+.3f}, {-row.regret_ci_low:+.3f}]"
            verdict = (f"picks {row.picked} instead of {row.best}: {interval}, "
                       + ("not resolved below the best: it picked well" if row.picked_well
                          else "resolved below the best: it did not pick well"))
        lines.append(f"{subject}: {tau}; {verdict}.")
    return lines


def diagnostics_blocks(picked: pd.DataFrame, contrasts: pd.DataFrame,
                       declared: Sequence[MetricColumn]) -> list[render.Block]:
    """"Label-free selection and diagnostics": the predictors' τ and regret (``predictors.csv``) and
    the attention contrasts with the baselines (``diagnostics.csv``); nothing without diagnostics."""
    if picked.empty and contrasts.empty:
        return []
    names = {c.key: c for c in declared}
    blocks: list[render.Block] = [render.Heading("Label-free selection and diagnostics")]
    if not picked.empty:
        blocks += [
            render.Paragraph(
                "Would a number computed without labels have picked the configuration the probe ranks first? "
                "For each label-free number: Kendall's τ-b between the pre-trained configurations' mean value "
                "(oriented as it prefers) and their mean probe score, with a 95% jackknife interval over the seeds "
                "(as in agreement.csv); then the configuration it prefers against the probe's best, best − picked "
                "with the 95% t interval of their paired seeds. It **picked well** when it picked the best or its "
                "pick is not resolved below it. The best is chosen on the same seeds, so the regret is an "
                f"optimistic bound. In [{PREDICTORS_FILE}]({PREDICTORS_FILE})."),
            render.Bullets(selection_lines(picked, {key: metric_name(names, key) for key in picked["metric"]}))]
    if not contrasts.empty:
        blocks += [
            render.Paragraph(
                "Attention distance of the last block (pixels; Xie et al., CVPR 2023: masked image modeling keeps "
                "attention local in late layers where supervised pre-training goes global) against the same "
                f"encoder trained on the labels and untrained, paired by seed: {comparisons.interval_caption(contrasts)}; "
                f"resolved with Holm over each family. In [{DIAGNOSTICS_FILE}]({DIAGNOSTICS_FILE})."),
            render.Table(["configuration", "against", "n", "Δ [95% CI]", "resolved"],
                         [[row.configuration, row.reference, str(row.n), interval_text(row, names),
                           "yes" if row.resolved else "no"] for row in contrasts.itertuples(index=False)],
                         [False, False, True, True, False])]
    return blocks
