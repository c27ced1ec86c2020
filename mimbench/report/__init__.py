"""Publishing a finished suite: aggregation over seeds, tables, figures and the report page.

- :mod:`~mimbench.report.aggregate`: the suite's runs grouped by configuration, mean ± std over
  seeds, gains over the random-init baseline (:func:`load_summary`, :func:`aggregate`...).
- :mod:`~mimbench.report.comparisons`: every paired comparison with its interval (``comparisons.csv``);
  :mod:`~mimbench.report.reference_names`: the reference configuration a user names.
- :mod:`~mimbench.report.tables`: ``table.csv``, ``table.md``, ``table.tex``, ``summary.parquet``.
- :mod:`~mimbench.report.results`: a suite folder as the report reads it (:func:`read_results`).
- the figures (seaborn on matplotlib's Agg canvas): :mod:`~mimbench.report.canvas` (style, saving),
  :mod:`~mimbench.report.plots` (bars, scatter, sweeps), :mod:`~mimbench.report.curves` (label
  efficiency, loss curves, reconstructions), :mod:`~mimbench.report.interval_plots` (the forest
  plot, accuracy against compute); :mod:`~mimbench.report.figure_plan` (which figures, captions).
- :mod:`~mimbench.report.blocks`: the report's sections; :mod:`~mimbench.report.render`: the report
  as markdown and as one self-contained HTML page.
- :mod:`~mimbench.report.page`: :func:`write_report`, what ``mimbench report`` calls.

The metric columns shown are the ones the core and the probes declare (:mod:`mimbench.columns`),
read from the suite folder by :meth:`mimbench.folder.SuiteFolder.read_columns`. Nothing here imports torch or
the plugins. ``write_report`` and ``Report`` are imported on first use, so that the aggregation
alone (in a notebook) does not import matplotlib and seaborn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mimbench.report.aggregate import aggregate, baseline_gains, failures, load_summary

if TYPE_CHECKING:
    from mimbench.report.page import write_report
    from mimbench.report.written import Report

__all__ = ["Report", "aggregate", "baseline_gains", "failures", "load_summary", "write_report"]


def __getattr__(name: str) -> Any:
    if name in ("Report", "write_report"):
        from mimbench.report import page

        return getattr(page, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
