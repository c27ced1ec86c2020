"""The aggregated table as files: ``table.csv`` (every column), ``table.md`` (GitHub markdown,
"0.873 ± 0.004"), ``table.tex`` (booktabs) and ``summary.parquet`` (the per-run summary, typed).

The markdown and LaTeX tables show the headline metrics only (the columns the core and the
probes declare with ``headline=True``, see :mod:`mimbench.columns`), each as mean ± std over the
finished seeds, the best value of each column in bold; ``table.csv`` has every metric.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from mimbench import stats
from mimbench.columns import MetricColumn
from mimbench.labels import COMPONENTS, LABELS_PER_CLASS, param_text
from mimbench.report.aggregate import declared_or_inferred, to_bool
from mimbench.folder import SuiteFolder
from mimbench.report.results import typed_summary

#: The note that goes with every rendering of the table.
TABLE_NOTE = ("Mean ± standard deviation over seeds: the sample std of the per-seed values (pandas `std`, "
              "ddof = 1; none shown when n = 1); n = number of finished seeds behind each mean (of the seeds run, "
              "when some failed or diverged). Accuracies are top-1 fractions in [0, 1]; "
              "PSNR is over hidden pixels, in dB; ref. PSNR is under the suite's reference masker. "
              "Δ = gain over the random-init encoder of the same architecture, paired by seed: the mean paired "
              "difference and its {interval} [low, high] (comparisons.csv has every statistic); * = significant "
              "(exact paired sign-flip test, Holm-corrected over the table's Δs, p < 0.05; possible only with "
              "enough seeds for the table's size). Bold: the best mean of its column (among rows evaluated alike "
              "that compare on it), only when it beats every other such row pairwise with a Holm-adjusted "
              "sign-flip test, p < 0.05; no bold otherwise. PFLOPs, TFLOPs or GFLOPs, and train time (where "
              "shown): the pre-training's floating-point operations (matrix products, convolutions and "
              "attention, forward and backward, counted on a real step) and wall time, mean over seeds.")
#: Added to the note when the table has a ``eval.labels_per_class`` column.
LABELS_NOTE = (f"`{LABELS_PER_CLASS}`: the labelled training images per class the probes saw, a class-balanced "
               "subset of the train split, the same for every run and baseline of a seed (all: the whole train "
               "split); every score is on the full test split. Δ pairs each run with the random-init baseline "
               "of the same seed and the same labels per class.")


def table_note(shown: list[str] | tuple[str, ...] = (), table: pd.DataFrame | None = None) -> str:
    """The note for a table showing the param columns ``shown``; its intervals named for the
    paired seeds behind the Δs of ``table`` (the ``<metric>_gain_n`` columns)."""
    counts = [] if table is None else [int(n) for c in table.columns if c.endswith("_gain_n")
                                        for n in table[c].dropna() if n > 0]
    images = [] if table is None else [int(n) for c in table.columns if c.endswith("_gain_n_images")
                                        for n in table[c].dropna()]
    interval = stats.interval_caption(min(counts), max(counts), max(images) if images else None) if counts \
        else f"95% {stats.INTERVAL_METHOD}"
    return TABLE_NOTE.replace("{interval}", interval) + (" " + LABELS_NOTE if LABELS_PER_CLASS in shown else "")


@dataclass(frozen=True)
class Column:
    """A displayed metric: ``<key>_mean`` / ``_std`` of the aggregated table."""

    key: str
    markdown: str
    latex: str
    digits: int = 3
    signed: bool = False


def headline_columns(declared: Sequence[MetricColumn]) -> list[Column]:
    """The displayed columns, in order: the declared headline columns in declaration order (the
    core's first), each accuracy followed by its gain over random-init (Δ); then the best-block
    columns (``best_of``), in declaration order."""
    shown: list[Column] = []
    for metric in (c for c in declared if c.headline and not c.best_of):
        shown.append(Column(metric.key, metric.name, metric.latex_name, metric.digits))
        if metric.kind == "accuracy":
            shown.append(Column(f"{metric.key}_gain", f"Δ {metric.name}", f"$\\Delta$ {metric.latex_name}",
                                metric.digits, signed=True))
    shown += [Column(c.key, c.name, c.latex_name, c.digits) for c in declared if c.headline and c.best_of]
    return shown


@dataclass(frozen=True)
class Value:
    """A cell: ``mean ± std``, or for a Δ with its interval ``mean [low, high]`` and ``*`` when
    significant."""

    mean: float
    std: float
    digits: int
    signed: bool
    best: bool
    interval: tuple[float, float] | None = None
    significant: bool = False

    def text(self, plus_minus: str = " ± ", star: str = "*") -> str:
        sign = "+" if self.signed else ""
        mean = f"{self.mean:{sign}.{self.digits}f}"
        if self.interval is not None:
            low, high = (f"{v:{sign}.{self.digits}f}" for v in self.interval)
            return f"{mean} [{low}, {high}]" + (star if self.significant else "")
        return mean if math.isnan(self.std) else f"{mean}{plus_minus}{self.std:.{self.digits}f}"


@dataclass(frozen=True)
class Display:
    """The table as displayed: config columns (text), metric columns (``Value`` or None), then the
    compute columns (text: what each configuration's pre-training cost)."""

    text_headers: list[str]
    metric_columns: list[Column]
    rows: list[tuple[list[str], list[Value | None], list[str]]]
    compute_headers: tuple[str, ...] = ()


def display(table: pd.DataFrame, sweep: list[str] | tuple[str, ...] = (),
            declared: Sequence[MetricColumn] | None = None) -> Display:
    """Choose the displayed columns of an aggregated table (from :func:`mimbench.report.aggregate`):
    the components that vary (the masker always), the swept params (``sweep``: any param column
    to show, e.g. also an ``eval.<param>`` that varies without being swept), n, and the headline
    metrics of ``declared`` (default: inferred from the table's columns) that have a value
    somewhere. Baselines show their ``eval.<param>`` values, "–" for the others."""
    declared = declared_or_inferred(table, declared)
    pretrained = table[table["pretrained"]]
    axes = ["encoder"] + [axis for axis in COMPONENTS[1:]
                          if axis == "masker" or pretrained[f"{axis}_label"].nunique() > 1]
    sweep = [column for column in sweep if column in table.columns]
    best_of = {c.key: c.best_of for c in declared if c.best_of}
    metrics = [c for c in headline_columns(declared) if f"{c.key}_mean" in table.columns
               and table[f"{c.key}_mean"].notna().any() and not _same_as_last_block(table, c.key, best_of.get(c.key))]
    compute = _compute_columns(table)
    rows = []
    for _, row in table.iterrows():
        texts = _config_cells(row, axes, sweep)
        texts.append(str(row["n_done"]) if row["n_done"] == row["n_runs"] else f"{row['n_done']}/{row['n_runs']}")
        costs = [fmt(row[f"{key}_mean"]) if row["pretrained"] and pd.notna(row[f"{key}_mean"]) else "–"
                 for key, _, fmt in compute]
        rows.append((texts, [_value(row, column) for column in metrics], costs))
    return Display([*axes, *sweep, "n"], metrics, rows, tuple(header for _, header, _ in compute))


def _compute_columns(table: pd.DataFrame) -> list[tuple[str, str, Callable[[float], str]]]:
    """The compute shown per pre-trained configuration (mean over its finished seeds), where the
    table has it: (column, header, format). FLOPs in one unit for the whole column, the largest of
    PFLOPs, TFLOPs and GFLOPs that keeps the biggest value at 0.1 or more."""
    shown = []
    if "train_flops_mean" in table.columns and table["train_flops_mean"].notna().any():
        largest = float(table["train_flops_mean"].max())
        unit, scale = next(((u, s) for u, s in (("PFLOPs", 1e15), ("TFLOPs", 1e12)) if largest >= 0.1 * s),
                           ("GFLOPs", 1e9))
        shown.append(("train_flops", unit, lambda v, s=scale: f"{v / s:.3g}"))
    if "train_seconds_mean" in table.columns and table["train_seconds_mean"].notna().any():
        shown.append(("train_seconds", "train time", _duration))
    return shown


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 60:.1f} min" if seconds < 36000 else \
        f"{seconds / 3600:.1f} h"


def _value(row: pd.Series, column: Column) -> Value | None:
    """A metric's cell; a Δ shows its interval where the table has one (see
    :func:`mimbench.report.comparisons.with_intervals`), a metric is bold where
    :func:`~mimbench.report.best.mark_best` marked it."""
    mean, std = row[f"{column.key}_mean"], row[f"{column.key}_std"]
    if pd.isna(mean):
        return None
    low, high = row.get(f"{column.key}_ci_low"), row.get(f"{column.key}_ci_high")
    interval = (float(low), float(high)) if low is not None and pd.notna(low) and pd.notna(high) else None
    return Value(float(mean), float(std) if pd.notna(std) else math.nan, column.digits, column.signed,
                 to_bool(row.get(f"{column.key}_is_best")), interval, to_bool(row.get(f"{column.key}_significant")))


def _same_as_last_block(table: pd.DataFrame, key: str, base: str | None) -> bool:
    """True for a best-block column when it equals ``base``, the column it is the best block of,
    everywhere (the last block was the best)."""
    if not base or f"{base}_mean" not in table.columns:
        return False
    measured = table[f"{key}_mean"].notna()
    return bool(((table.loc[measured, f"{key}_mean"] - table.loc[measured, f"{base}_mean"]).abs() < 1e-12).all())


def _config_cells(row: pd.Series, axes: list[str], sweep: list[str]) -> list[str]:
    if row["pretrained"]:
        cells = [str(row[f"{axis}_label"]) for axis in axes]
        return cells + [_number(row[column], column) for column in sweep]
    if row["encoder_label"] == "pixels":
        cells = ["raw pixels", "baseline"]
    else:
        cells = [str(row["encoder_label"]), f"{row['baseline'] or 'baseline'} (baseline)"]
    cells = (cells + ["–"] * len(axes))[:len(axes)] if len(axes) > 1 else [f"{cells[0]} ({cells[1]})"]
    # baselines are evaluated like the runs: their eval params apply, the others do not
    return cells + [_number(row[column], column) if column.startswith("eval.") else "–" for column in sweep]


def _number(value, column: str = "") -> str:
    if column == LABELS_PER_CLASS:
        return param_text(column, value)
    if pd.isna(value):
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) >= 1e6:
        return f"{value:g}"  # 1.2132e+12, not 1213202694144
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def to_markdown(table: pd.DataFrame, sweep: list[str] | tuple[str, ...] = (),
                declared: Sequence[MetricColumn] | None = None) -> str:
    """The headline table in GitHub markdown, numbers as ``0.873 ± 0.004``, best in bold."""
    shown = display(table, sweep, declared)
    headers = shown.text_headers + [c.markdown for c in shown.metric_columns] + list(shown.compute_headers)
    align = [":--"] * (len(shown.text_headers) - 1) + ["--:"] * (1 + len(shown.metric_columns)
                                                                 + len(shown.compute_headers))
    lines = [_md_row(headers), _md_row(align)]
    for texts, values, costs in shown.rows:
        cells = texts + ["–" if v is None else (f"**{v.text()}**" if v.best else v.text()) for v in values] + costs
        lines.append(_md_row(cells))
    return "\n".join(lines) + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def to_latex(table: pd.DataFrame, sweep: list[str] | tuple[str, ...] = (), caption: str = "",
             label: str = "tab:mimbench", declared: Sequence[MetricColumn] | None = None) -> str:
    """The headline table as a LaTeX ``table`` float with a booktabs ``tabular``
    (``\\usepackage{booktabs}``), numbers as ``$0.873 \\pm 0.004$``, best in bold."""
    shown = display(table, sweep, declared)
    headers = [_tex_escape(h) for h in shown.text_headers] + [c.latex for c in shown.metric_columns] + \
        [_tex_escape(h) for h in shown.compute_headers]
    spec = "l" * (len(shown.text_headers) - 1) + "r" * (1 + len(shown.metric_columns) + len(shown.compute_headers))
    lines = ["% mimbench table; needs \\usepackage{booktabs}", "\\begin{table}[t]", "\\centering", "\\small",
             f"\\begin{{tabular}}{{{spec}}}", "\\toprule", " & ".join(headers) + " \\\\", "\\midrule"]
    previous = None
    for (texts, values, costs), pretrained in zip(shown.rows, table["pretrained"]):
        if previous is not None and pretrained != previous:
            lines.append("\\midrule")  # a rule around each encoder's baseline rows
        previous = pretrained
        cells = [_tex_escape(t) for t in texts] + [_tex_value(v) for v in values] + [_tex_escape(c) for c in costs]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    if caption:
        lines.append(f"\\caption{{{_tex_escape(caption)}}}")
    lines += [f"\\label{{{label}}}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _tex_value(value: Value | None) -> str:
    if value is None:
        return "--"
    text = value.text(" \\pm ", star="^{*}")
    return f"$\\mathbf{{{text}}}$" if value.best else f"${text}$"


_TEX_SPECIAL = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_",
                "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}",
                "–": "--", "±": "$\\pm$", "Δ": "$\\Delta$", "`": ""}


def _tex_escape(text: str) -> str:
    return re.sub("|".join(re.escape(k) for k in _TEX_SPECIAL), lambda m: _TEX_SPECIAL[m.group()], str(text))


def table_caption(suite_name: str, dataset: str, shown: list[str] | tuple[str, ...] = (),
                  table: pd.DataFrame | None = None) -> str:
    """The LaTeX caption: what the table shows and how its numbers were computed."""
    return f"mimbench suite {suite_name} on {dataset}. " + table_note(shown, table).replace("`", "")


def write_tables(summary: pd.DataFrame, table: pd.DataFrame, folder: Path, sweep: list[str] | tuple[str, ...] = (),
                 suite_name: str = "suite", declared: Sequence[MetricColumn] | None = None
                 ) -> tuple[dict[str, Path], list[str]]:
    """Write ``table.csv``, ``table.md``, ``table.tex`` and ``summary.parquet`` into ``folder``
    (atomically); the markdown and LaTeX tables show the headline columns of ``declared``
    (default: inferred from the summary's columns). Returns the paths written, by file name,
    and warnings (no parquet engine)."""
    folder = Path(folder)
    declared = declared_or_inferred(summary, declared)
    dataset = str(table["dataset"].iloc[0]) if len(table) else ""
    files = {
        "table.csv": table.drop(columns=["config_id"], errors="ignore").to_csv(index=False),
        "table.md": to_markdown(table, sweep, declared) + "\n" + table_note(sweep, table) + "\n",
        "table.tex": to_latex(table, sweep, table_caption(suite_name, dataset, sweep, table), f"tab:{_tex_label(suite_name)}",
                              declared),
    }
    suite = SuiteFolder(folder)
    written = {name: suite.write(name, text) for name, text in files.items()}
    warnings = []
    try:
        buffer = io.BytesIO()
        typed_summary(folder).to_parquet(buffer, index=False)  # what mimbench.load() returns
        written["summary.parquet"] = suite.write("summary.parquet", buffer.getvalue())
    except ImportError as exc:
        warnings.append(f"summary.parquet not written: no parquet engine ({exc}); `pip install pyarrow` adds one")
    return written, warnings


def _tex_label(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9:.-]", "-", name)
