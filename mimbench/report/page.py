"""``report.md`` and ``report.html`` for a finished suite folder, with the tables and figures they show.

:func:`write_report` is what ``mimbench report RESULTS_DIR`` and the end of ``mimbench run``
call; :func:`~mimbench.report.results.read_results` and :func:`~mimbench.report.figure_plan.figures` are what
the Python API (:mod:`mimbench.api`) reads. Everything is computed from the run records on disk, read through
:class:`mimbench.folder.SuiteFolder` (``summary.csv``, ``columns.json``: the metric columns the core and the
probes declare, ``suite.yaml``, each run's ``config.json``, ``history.csv`` and ``reconstructions.png``; see
:mod:`~mimbench.report.results`); every file is written atomically. A figure that cannot be drawn becomes a
warning in the report, not a failure. The figures are planned in :mod:`~mimbench.report.figure_plan`, the
report's sections written in :mod:`~mimbench.report.blocks`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mimbench.folder import SuiteFolder
from mimbench.report import agreement, comparisons, predictors, probe_gaps, render
from mimbench.report.blocks import COMPARISONS_FILE, agreement_blocks, comparison_blocks, page_blocks
from mimbench.report.figure_plan import draw_figures, figure_plan
from mimbench.report.results import read_configs, read_results, unreadable_runs
from mimbench.report.tables import write_tables
from mimbench.report.written import Report

__all__ = ["Report", "write_report"]


def write_report(suite_dir: Path, reference: dict[str, Any] | None = None) -> Report:
    """Write the tables (``table.csv``, ``table.md``, ``table.tex``, ``summary.parquet``),
    ``comparisons.csv``, ``agreement.csv``, ``probe_gaps.csv``, with diagnostics ``predictors.csv`` and
    ``diagnostics.csv``, the figures (``figures/*.png`` and ``.pdf``), ``report.md`` and
    ``report.html`` into ``suite_dir``; ``reference`` as for :func:`read_results`. A missing
    folder or ``summary.csv`` raises :class:`~mimbench.errors.ConfigError`."""
    results = read_results(suite_dir, reference)
    suite_dir, summary, declared, runs, table = results.folder, results.summary, results.declared, results.runs, \
        results.table
    report = Report(suite_dir)
    report.warnings += unreadable_runs(suite_dir, runs)
    files, warnings = write_tables(summary, table, suite_dir, results.shown, results.name, declared)
    report.files.update(files)
    report.warnings += warnings
    folder = SuiteFolder(suite_dir)
    report.files[COMPARISONS_FILE] = folder.write(COMPARISONS_FILE, comparisons.to_csv(results.comparisons))
    agreed = agreement.agreement(runs, declared)
    report.files[agreement.AGREEMENT_FILE] = folder.write(agreement.AGREEMENT_FILE, agreement.to_csv(agreed))
    gaps = probe_gaps.probe_gaps(runs, declared, results.outcomes)
    report.files[probe_gaps.PROBE_GAPS_FILE] = folder.write(probe_gaps.PROBE_GAPS_FILE, probe_gaps.to_csv(gaps))
    picked, contrasts = predictors.predictors(runs, declared), predictors.diagnostics_contrasts(runs, declared)
    if not picked.empty:  # a suite with diagnostics
        report.files[predictors.PREDICTORS_FILE] = folder.write(predictors.PREDICTORS_FILE, predictors.to_csv(picked))
    if not contrasts.empty:
        report.files[predictors.DIAGNOSTICS_FILE] = folder.write(predictors.DIAGNOSTICS_FILE,
                                                                 comparisons.to_csv(contrasts))
    configs = read_configs(suite_dir, runs["run_id"])
    figures = draw_figures(figure_plan(suite_dir, runs, table, results.sweep, results.suite, declared,
                                       results.comparisons),
                           suite_dir / "figures", report)
    blocks = page_blocks(results.name, results.suite, summary, runs, table, results.shown, configs, figures, report,
                         declared)
    at = next(i for i, block in enumerate(blocks) if isinstance(block, render.Heading) and block.text == "Baselines")
    blocks[at:at] = (comparison_blocks(results.comparisons, table, runs, declared, results.reference)
                     + agreement_blocks(agreed, gaps, results.comparisons, declared)
                     + predictors.diagnostics_blocks(picked, contrasts, declared))
    report.files["report.md"] = folder.write("report.md", render.to_markdown(blocks))
    report.files["report.html"] = folder.write("report.html",
                                               render.to_html(blocks, f"mimbench report: {results.name}", suite_dir))
    return report
