"""The published results say only what their tables hold: every interval quoted in
``results/README.md`` and ``README.md`` is a row of a published ``comparisons.csv``,
``probe_gaps.csv``, ``diagnostics.csv``, ``agreement.csv`` or ``predictors.csv`` (a τ, or a selection
regret written as the pick's loss, −regret), each of those files is what the report computes from its
folder today, no pixel error is compared
between a target that uses the hidden patch's statistics and one that does not, and at least two
results rest on 10 or more seeds with Holm-adjusted tests."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from mimbench import columns
from mimbench.report import agreement, predictors, probe_gaps
from mimbench.report.comparisons import to_csv
from mimbench.report.labelled import view
from mimbench.report.results import read_results

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = sorted(p.parent for p in (ROOT / "results").glob("*/comparisons.csv"))
#: "+0.053 [+0.049, +0.057]": a mean difference and its interval, as the report writes them.
#: (a line break may fall anywhere a space does)
QUOTED = re.compile(r"([+\-−]\d+\.\d+)\s+\[([+\-−]\d+\.\d+),\s+([+\-−]\d+\.\d+)\]")


def number(text: str) -> float:
    return float(text.replace("−", "-"))


def published_rows() -> pd.DataFrame:
    """Every row of a published comparisons.csv or probe_gaps.csv, and every τ of an agreement.csv
    (as ``mean_diff``, with its interval)."""
    files = [folder / name for folder in PUBLISHED for name in ("comparisons.csv", "probe_gaps.csv", "diagnostics.csv")
             if (folder / name).exists()]
    taus = [pd.read_csv(path).rename(columns={"kendall_tau": "mean_diff"}).assign(folder=path.parent.name)
            for name in ("agreement.csv", "predictors.csv") for path in (folder / name for folder in PUBLISHED)
            if path.exists()]
    losses = [pd.read_csv(path).pipe(lambda f: pd.DataFrame({  # picked - best: the regret's sign turned
        "mean_diff": -f["regret"], "ci_low": -f["regret_ci_high"], "ci_high": -f["regret_ci_low"]}))
        for path in (folder / "predictors.csv" for folder in PUBLISHED) if path.exists()]
    return pd.concat([pd.read_csv(path).assign(folder=path.parent.name) for path in files] + taus + losses)


@pytest.mark.parametrize("document", ["results/README.md", "README.md"])
def test_every_quoted_interval_is_a_row_of_a_published_comparisons_csv(document):
    rows = published_rows()
    quoted = QUOTED.findall((ROOT / document).read_text())
    assert quoted or document == "README.md"
    for mean, low, high in quoted:
        digits = len(mean.split(".")[1])
        tolerance = 0.5 * 10 ** -digits + 1e-9
        found = rows[((rows.mean_diff - number(mean)).abs() <= tolerance)
                     & ((rows.ci_low - number(low)).abs() <= tolerance)
                     & ((rows.ci_high - number(high)).abs() <= tolerance)]
        assert len(found), f"{document}: {mean} [{low}, {high}] is no row of a published comparisons, probe_gaps or agreement"


@pytest.mark.parametrize("folder", PUBLISHED, ids=[p.name for p in PUBLISHED])
def test_each_published_comparisons_csv_is_what_the_report_computes_today(folder):
    results = read_results(folder)
    assert to_csv(results.comparisons) == (folder / "comparisons.csv").read_text()
    if (folder / "agreement.csv").exists():  # folders published before issue 32 have neither
        assert agreement.to_csv(agreement.agreement(results.runs, results.declared)) == \
            (folder / "agreement.csv").read_text()
        gaps = probe_gaps.probe_gaps(results.runs, results.declared, results.outcomes)
        assert probe_gaps.to_csv(gaps) == (folder / "probe_gaps.csv").read_text()
    if (folder / "predictors.csv").exists():  # a suite with diagnostics
        assert predictors.to_csv(predictors.predictors(results.runs, results.declared)) == \
            (folder / "predictors.csv").read_text()
        assert to_csv(predictors.diagnostics_contrasts(results.runs, results.declared)) == \
            (folder / "diagnostics.csv").read_text()
    # and no pixel error compared between a target that uses the hidden patch's statistics and one that does not
    labelled = view(results.runs, "budget")
    uses_stats = {label: bool(flag) for label, flag in zip(labelled["label"], labelled["recon_uses_target_stats"])
                  if pd.notna(flag)} if "recon_uses_target_stats" in labelled.columns else {}
    pixel_errors = results.comparisons[results.comparisons.metric.isin(columns.PIXEL_ERROR_COLUMNS)]
    for row in pixel_errors.itertuples():
        assert uses_stats.get(row.configuration, False) == uses_stats.get(row.reference, False), row


def test_at_least_two_published_results_rest_on_ten_seeds_with_holm():
    rested = [folder.name for folder in PUBLISHED
              if (lambda rows: rows.n.min() >= 10 and rows.p_holm.notna().all())(pd.read_csv(folder / "comparisons.csv"))]
    assert len(rested) >= 2, rested
