"""What every figure of the report shares: its style, the canvas it is drawn on, how it is saved,
its palettes, the metrics it draws, and small helpers for titles, legends and baseline lines.

Figures are built without pyplot (no global state, nothing left open), on matplotlib's Agg
canvas (no display needed), inside the report's seaborn style (:func:`styled`).
"""

from __future__ import annotations

import functools
import io
import textwrap
from typing import Callable, Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mimbench.columns import MetricColumn
from mimbench.report.aggregate import declared_or_inferred
from mimbench.specs import Status

#: The core's PSNR under the suite's reference masker (the same masks for every run): the
#: x axis of the PSNR-vs-accuracy figure when a suite has it.
REFERENCE_PSNR = "ref_psnr"
_STYLE = {**sns.axes_style("whitegrid"), "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9,
          "ytick.labelsize": 9, "legend.fontsize": 9, "legend.title_fontsize": 9, "figure.titlesize": 12,
          "savefig.facecolor": "white"}


def styled(function: Callable[..., Figure | None]) -> Callable[..., Figure | None]:
    """Draw inside the report's style, without touching the caller's matplotlib settings."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with mpl.rc_context(_STYLE):
            return function(*args, **kwargs)
    return wrapper


def new_figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kwargs) -> tuple[Figure, np.ndarray]:
    """A figure on an Agg canvas with a constrained layout, and its axes as a flat array."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes.ravel()


def figure_files(fig: Figure, formats: Sequence[str] = ("png", "pdf"), dpi: int = 150) -> dict[str, bytes]:
    """``fig`` rendered in each of ``formats`` (``{"png": bytes, "pdf": bytes}``), without a date, so
    that the same results give the same files; the suite folder writes them. The figure's layout is
    frozen after the first format."""
    files = {}
    for fmt in formats:
        buffer = io.BytesIO()
        metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None} if fmt == "png" else None
        fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
        fig.set_layout_engine("none")  # laid out once: the next format reuses the positions (2x faster)
        files[fmt] = buffer.getvalue()
    return files


def encoder_palette(labels: Sequence[str]) -> dict[str, tuple]:
    """One colour per encoder label, stable across the report's figures."""
    labels = list(dict.fromkeys(labels))
    return dict(zip(labels, sns.color_palette("colorblind", max(len(labels), 1))))


def series_palette(labels: Sequence[str]) -> dict[str, tuple]:
    """One colour per line label: colour-blind safe up to 10 lines, else evenly spaced hues."""
    labels = list(dict.fromkeys(labels))
    name = "colorblind" if len(labels) <= 10 else "husl"
    return dict(zip(labels, sns.color_palette(name, max(len(labels), 1))))


def probe_columns(runs: pd.DataFrame, declared: Sequence[MetricColumn] | None = None) -> list[MetricColumn]:
    """The declared headline accuracies (best-block columns aside), in declaration order, that
    were measured on some finished pre-trained run (``runs``: per run, or aggregated)."""
    return _measured(runs, declared, lambda c: c.kind == "accuracy" and c.headline and not c.best_of)


def psnr_columns(runs: pd.DataFrame, declared: Sequence[MetricColumn] | None = None) -> list[MetricColumn]:
    """The declared headline PSNR columns compared between configurations (not the classical
    references), in declaration order, that were measured on some
    finished pre-trained run (``runs``: per run, or aggregated)."""
    return _measured(runs, declared, lambda c: c.kind == "psnr" and c.headline and c.compared)


def _measured(runs: pd.DataFrame, declared: Sequence[MetricColumn] | None,
              wanted: Callable[[MetricColumn], bool]) -> list[MetricColumn]:
    if "n_runs" in runs.columns:  # aggregated: one row per configuration, <key>_mean columns
        done, suffix = runs[runs["pretrained"] & (runs["n_done"] > 0)], "_mean"
    else:
        done, suffix = runs[(runs["status"] == Status.DONE) & runs["pretrained"]], ""
    return [c for c in declared_or_inferred(runs, declared) if wanted(c) and c.key + suffix in done.columns
            and done[c.key + suffix].notna().any()]


def reference_first(columns: Sequence[MetricColumn]) -> list[MetricColumn]:
    """PSNR columns with the reference masker's first: it scores every run on the same masks."""
    return sorted(columns, key=lambda c: c.key != REFERENCE_PSNR)


def wrapped_title(ax, text: str) -> None:
    """A title wrapped to the width of its axes."""
    width = ax.get_position().width * ax.figure.get_figwidth()
    ax.set_title(textwrap.fill(text, max(30, int(width * 11))))


def metric_title(column: MetricColumn) -> str:
    """How titles name a metric: its axis label without the unit for a fraction-valued score
    ("linear accuracy", "seg. linear mIoU"), else its axis label."""
    if column.kind == "accuracy":
        return column.axis_label.split(" (")[0] if column.axis else f"{column.name} accuracy"
    return column.axis_label


def rotate_ticks(ax, labels: Sequence[str]) -> None:
    """Slant the x tick labels when they are long or many."""
    if labels and (max(len(str(t)) for t in labels) > 9 or len(labels) > 6):
        for tick in ax.get_xticklabels():
            tick.set_rotation(30)
            tick.set_horizontalalignment("right")


def legend_outside(ax, title: str, handles: Sequence = ()) -> None:
    """The legend right of the axes: ``handles`` first, then the labelled artists of the axes."""
    handles = [*handles, *ax.get_legend_handles_labels()[0]]
    if handles:
        ax.legend(handles=handles, title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def baseline_lines(ax, baselines: pd.DataFrame, metric: str, palette: dict[str, tuple]) -> None:
    """The baselines' mean ``metric`` as horizontal lines (gid ``baseline``): random-init dashed in
    its encoder's colour, raw pixels dotted grey."""
    if metric not in baselines.columns:
        return
    for label, group in baselines.groupby("label", sort=False):
        value = group[metric].mean()
        if pd.isna(value):
            continue
        encoder = group["encoder_label"].iloc[0]
        pixels = encoder == "pixels"
        line = ax.axhline(value, color="0.35" if pixels else palette.get(encoder, "0.5"),
                          linestyle=":" if pixels else "--", linewidth=1.4, label=f"{label}: {value:.3f}", zorder=3)
        line.set_gid("baseline")
