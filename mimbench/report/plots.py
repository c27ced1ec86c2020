"""The report's figures, drawn with seaborn on matplotlib's Agg canvas (no display needed).

Every function returns a :class:`matplotlib.figure.Figure` (or None when the suite has
nothing to draw for it), so tests and notebooks can inspect axes, labels, bars and lines;
:func:`save_figure` writes it as PNG and PDF. Figures are built without pyplot: no global
state, nothing left open. Inputs come from :mod:`mimbench.report`: ``runs`` is a labelled
per-run frame (:func:`~mimbench.report.label_runs`), ``table`` an aggregated one
(:func:`~mimbench.report.aggregate`). The metrics drawn, their names and axis labels come from
``declared``, the suite's metric columns (:mod:`mimbench.columns`, read by
:func:`mimbench.store.read_columns`); without it they are inferred from the frame's columns.
"""

from __future__ import annotations

import functools
import io
import math
import textwrap
from pathlib import Path
from typing import Callable, Sequence

import matplotlib as mpl
import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, NullLocator

from mimbench.columns import MetricColumn
from mimbench.report.aggregate import (ALL_LABELS, LABELS_PER_CLASS, PROBE_LABELS_PER_CLASS, declared_or_inferred,
                                       label_counts, label_runs, param_text)
from mimbench.store import write_atomic

#: Axis labels of commonly swept params.
PARAM_LABELS = {"masker.ratio": "mask ratio (fraction hidden)", "train.lr": "peak learning rate",
                "train.epochs": "pre-training epochs", "masker.mask_patch_size": "mask patch size (px)"}
#: Accuracies of probes that train the whole encoder: started from random weights, that is
#: training from scratch (the label-efficiency figure names the random-init line so).
FROM_SCRATCH = frozenset({"finetune_acc"})
#: The core's PSNR under the suite's reference masker (the same masks for every run): the
#: x axis of the PSNR-vs-accuracy figure when a suite has it.
REFERENCE_PSNR = "ref_psnr"
_STYLE = {**sns.axes_style("whitegrid"), "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9,
          "ytick.labelsize": 9, "legend.fontsize": 9, "legend.title_fontsize": 9, "figure.titlesize": 12,
          "savefig.facecolor": "white"}


def _styled(function: Callable[..., Figure | None]) -> Callable[..., Figure | None]:
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


def save_figure(fig: Figure, stem: Path, formats: Sequence[str] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` (or ``formats``), atomically; returns
    the paths. The figure's layout is frozen after the first format."""
    paths = []
    for fmt in formats:
        buffer = io.BytesIO()
        metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None} if fmt == "png" else None
        fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
        fig.set_layout_engine("none")  # laid out once: the next format reuses the positions (2x faster)
        path = Path(f"{stem}.{fmt}")
        write_atomic(path, buffer.getvalue())
        paths.append(path)
    return paths


def encoder_palette(labels: Sequence[str]) -> dict[str, tuple]:
    """One colour per encoder label, stable across the report's figures."""
    labels = list(dict.fromkeys(labels))
    return dict(zip(labels, sns.color_palette("colorblind", max(len(labels), 1))))


def _series_palette(labels: Sequence[str]) -> dict[str, tuple]:
    labels = list(dict.fromkeys(labels))
    name = "colorblind" if len(labels) <= 10 else "husl"
    return dict(zip(labels, sns.color_palette(name, max(len(labels), 1))))


def probe_columns(runs: pd.DataFrame, declared: Sequence[MetricColumn] | None = None) -> list[MetricColumn]:
    """The declared headline accuracies (best-block columns aside), in declaration order, that
    were measured on some finished pre-trained run (``runs``: per run, or aggregated)."""
    return _measured(runs, declared, lambda c: c.kind == "accuracy" and c.headline and not c.best_of)


def psnr_columns(runs: pd.DataFrame, declared: Sequence[MetricColumn] | None = None) -> list[MetricColumn]:
    """The declared headline PSNR columns, in declaration order, that were measured on some
    finished pre-trained run (``runs``: per run, or aggregated)."""
    return _measured(runs, declared, lambda c: c.kind == "psnr" and c.headline)


def _measured(runs: pd.DataFrame, declared: Sequence[MetricColumn] | None,
              wanted: Callable[[MetricColumn], bool]) -> list[MetricColumn]:
    if "n_runs" in runs.columns:  # aggregated: one row per configuration, <key>_mean columns
        done, suffix = runs[runs["pretrained"] & (runs["n_done"] > 0)], "_mean"
    else:
        done, suffix = runs[(runs["status"] == "done") & runs["pretrained"]], ""
    return [c for c in declared_or_inferred(runs, declared) if wanted(c) and c.key + suffix in done.columns
            and done[c.key + suffix].notna().any()]


def _reference_first(columns: Sequence[MetricColumn]) -> list[MetricColumn]:
    """PSNR columns with the reference masker's first: it scores every run on the same masks."""
    return sorted(columns, key=lambda c: c.key != REFERENCE_PSNR)


def _title(ax, text: str) -> None:
    """A title wrapped to the width of its axes."""
    width = ax.get_position().width * ax.figure.get_figwidth()
    ax.set_title(textwrap.fill(text, max(30, int(width * 11))))


def _name(column: MetricColumn) -> str:
    """How titles name a metric: "<probe name> accuracy", else its axis label."""
    return f"{column.name} accuracy" if column.kind == "accuracy" else column.axis_label


def _rotate_ticks(ax, labels: Sequence[str]) -> None:
    if labels and (max(len(str(t)) for t in labels) > 9 or len(labels) > 6):
        for tick in ax.get_xticklabels():
            tick.set_rotation(30)
            tick.set_horizontalalignment("right")


def _bar_width(runs: pd.DataFrame) -> float:
    bars = runs["setup_label"].nunique() * max(1, runs["encoder_label"].nunique())
    return min(16.0, max(8.0, 4.5 + 0.5 * bars))


def _bars(ax, data: pd.DataFrame, metric: MetricColumn, palette: dict[str, tuple]) -> list[Patch]:
    """Bars of ``metric`` per setup (x) and encoder (hue), mean over seeds, error bar = std (ddof=1).
    Returns the legend's handles (kept off the axes, so that ``ax.patches`` holds only the bars)."""
    order = list(dict.fromkeys(data["setup_label"]))
    hue_order = list(dict.fromkeys(data["encoder_label"]))
    sns.barplot(data=data, x="setup_label", y=metric.key, hue="encoder_label", order=order, hue_order=hue_order,
                palette=palette, errorbar="sd", capsize=0.15, err_kws={"linewidth": 1.0}, legend=False, ax=ax)
    ax.set_xlabel("masker" if all("/" not in s for s in order) else "pre-training setup")
    ax.set_ylabel(metric.axis_label)
    _rotate_ticks(ax, order)
    return [Patch(facecolor=palette[h], label=h) for h in hue_order]


def _legend_outside(ax, title: str, handles: Sequence = ()) -> None:
    """The legend right of the axes: ``handles`` first, then the labelled artists of the axes."""
    handles = [*handles, *ax.get_legend_handles_labels()[0]]
    if handles:
        ax.legend(handles=handles, title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


@_styled
def probe_accuracy_figure(runs: pd.DataFrame, declared: Sequence[MetricColumn] | None = None) -> Figure | None:
    """Probe accuracy per masker: one panel per declared accuracy (:func:`probe_columns`), bars
    per pre-training setup with one hue per encoder (mean over finished seeds, error bars ± 1 std);
    the baselines as horizontal reference lines (random-init dashed in its encoder's colour, raw
    pixels dotted grey)."""
    probes = probe_columns(runs, declared)
    done = runs[runs["status"] == "done"]
    pretrained = done[done["pretrained"]]
    if not probes or pretrained.empty:
        return None
    palette = encoder_palette(runs.loc[runs["encoder_label"] != "pixels", "encoder_label"])
    fig, axes = new_figure(_bar_width(pretrained), 3.6 * len(probes), nrows=len(probes))
    for ax, probe in zip(axes, probes):
        handles = _bars(ax, pretrained, probe, palette)
        _baseline_lines(ax, done[~done["pretrained"]], probe.key, palette)
        ax.set_ylim(0, min(1.05, ax.get_ylim()[1] * 1.05))  # accuracies are fractions
        _title(ax, f"{_name(probe)} per masker (mean ± 1 std over seeds)")
        _legend_outside(ax, "encoder · baseline", handles)
    return fig


def _baseline_lines(ax, baselines: pd.DataFrame, metric: str, palette: dict[str, tuple]) -> None:
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


@_styled
def psnr_figure(runs: pd.DataFrame, declared: Sequence[MetricColumn] | None = None) -> Figure | None:
    """Reconstruction PSNR per masker: one panel per declared PSNR column (the core's: the run's
    own masker, and the suite's reference masker, the same masks for every run); bars as in
    :func:`probe_accuracy_figure`. The y axis starts near the lowest bar, not at 0, so that
    differences of a few tenths of a dB show."""
    pretrained = runs[(runs["status"] == "done") & runs["pretrained"]]
    metrics = psnr_columns(runs, declared)
    if not metrics:
        return None
    palette = encoder_palette(runs.loc[runs["encoder_label"] != "pixels", "encoder_label"])
    fig, axes = new_figure(_bar_width(pretrained), 3.6 * len(metrics), nrows=len(metrics))
    titles = {"recon_psnr": "Reconstruction PSNR under each run's own masker",
              REFERENCE_PSNR: "Reconstruction PSNR under the reference masker (the same masks for every run)"}
    for ax, metric in zip(axes, metrics):
        handles = _bars(ax, pretrained, metric, palette)
        stats = pretrained.groupby(["setup_label", "encoder_label"])[metric.key].agg(["mean", "std"]).fillna(0)
        low, high = (stats["mean"] - stats["std"]).min(), (stats["mean"] + stats["std"]).max()
        margin = max(0.5, 0.3 * (high - low))
        ax.set_ylim(max(0.0, math.floor(low - margin)), high + margin)
        _title(ax, titles.get(metric.key, metric.axis_label) + ", mean ± 1 std over seeds")
        _legend_outside(ax, "encoder", handles)
    return fig


@_styled
def psnr_vs_accuracy_figure(table: pd.DataFrame, declared: Sequence[MetricColumn] | None = None) -> Figure | None:
    """Does better reconstruction mean better features? One point per pre-trained configuration:
    PSNR (under the reference masker when there is one) against each declared accuracy
    (:func:`probe_columns`), error bars ± 1 std over seeds; colour = encoder, marker = masker;
    Spearman's rho over configurations in the title."""
    pretrained = table[table["pretrained"] & (table["n_done"] > 0)]
    x = next(iter(_reference_first(psnr_columns(table, declared))), None)
    probes = probe_columns(table, declared)
    if x is None or not probes or pretrained.empty:
        return None
    palette = encoder_palette(pretrained["encoder_label"])
    markers = dict(zip(dict.fromkeys(pretrained["masker_label"]), "osD^vP*Xph<>" * 4))
    fig, axes = new_figure(4.6 * len(probes) + 2.2, 4.2, ncols=len(probes))
    for ax, probe in zip(axes, probes):
        for _, row in pretrained.iterrows():
            ax.errorbar(row[f"{x.key}_mean"], row[f"{probe.key}_mean"], xerr=_std(row, x.key), yerr=_std(row, probe.key),
                        fmt=markers[row["masker_label"]], color=palette[row["encoder_label"]], markersize=7,
                        capsize=2, elinewidth=1, label=row["label"])
        pair = pretrained[[f"{x.key}_mean", f"{probe.key}_mean"]].dropna()
        rho = pair.corr(method="spearman").iloc[0, 1] if len(pair) >= 3 else float("nan")
        _title(ax, f"{_name(probe)} vs PSNR"
               + (f" (Spearman ρ = {rho:.2f} over {len(pair)} configurations)" if not math.isnan(rho) else ""))
        ax.set_xlabel(x.axis_label)
        ax.set_ylabel(probe.axis_label)
    handles = [Line2D([], [], color=c, marker="o", linestyle="", label=e) for e, c in palette.items()]
    handles += [Line2D([], [], color="0.3", marker=m, linestyle="", label=k) for k, m in markers.items()]
    axes[-1].legend(handles=handles, title="encoder · masker", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                    frameon=False)
    return fig


def _std(row: pd.Series, metric: str) -> float | None:
    value = row.get(f"{metric}_std")
    return None if value is None or pd.isna(value) else float(value)


@_styled
def sweep_figure(table: pd.DataFrame, param: str, declared: Sequence[MetricColumn] | None = None,
                 other_sweeps: Sequence[str] = ()) -> Figure | None:
    """Metrics against a swept param: one panel per metric (the declared accuracies, then the
    PSNR columns, the reference masker's first), one line per configuration (the other
    components, and ``other_sweeps`` values), mean ± 1 std over seeds at each value.
    ``table`` must be aggregated with the swept params left out of its labels
    (``aggregate(summary, hide=sweep)``)."""
    pretrained = table[table["pretrained"] & (table["n_done"] > 0) & table[param].notna()] \
        if param in table.columns else table.iloc[0:0]
    metrics = [*probe_columns(pretrained, declared), *_reference_first(psnr_columns(pretrained, declared))] \
        if not pretrained.empty else []
    if pretrained.empty or not metrics or pretrained[param].nunique() < 2:
        return None
    series = pretrained["label"] + [
        "".join(f", {o.split('.', 1)[1]}={param_text(o, v)}" for o, v in zip(other_sweeps, values))
        for values in pretrained[list(other_sweeps)].itertuples(index=False)] if other_sweeps else pretrained["label"]
    values = pretrained[param]
    numeric = pd.to_numeric(values, errors="coerce").notna().all()
    positions = pd.to_numeric(values) if numeric else values.map({v: i for i, v in enumerate(dict.fromkeys(values))})
    palette = _series_palette(series)
    ncols = 2 if len(metrics) == 4 else min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = new_figure(4.2 * ncols + 2.6, 3.6 * nrows, nrows=nrows, ncols=ncols)
    for ax, metric in zip(axes, metrics):
        for name in palette:
            rows = pretrained[series == name].assign(_x=positions[series == name]).sort_values("_x")
            ax.errorbar(rows["_x"], rows[f"{metric.key}_mean"], yerr=rows[f"{metric.key}_std"].fillna(0), marker="o",
                        capsize=3, color=palette[name], label=name)
        ax.set_xlabel(PARAM_LABELS.get(param, param))
        ax.set_ylabel(metric.axis_label)
        _title(ax, f"{_name(metric)} vs {param}")
        if numeric and (positions > 0).all() and positions.max() / positions.min() >= 20:
            ax.set_xscale("log")
        if numeric and positions.nunique() <= 8:
            ticks = sorted(positions.unique())
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        if not numeric:
            ax.set_xticks(range(values.nunique()), [str(v) for v in dict.fromkeys(values)])
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    _legend_outside(axes[min(ncols, len(metrics)) - 1], "configuration")
    return fig


def label_axis(runs: pd.DataFrame) -> tuple[pd.Series, dict[float, str]]:
    """Where each run of ``runs`` sits on the label-efficiency x axis, and the ticks (position:
    text). A run's position is its ``eval.labels_per_class``; with all labels (empty), the
    ``probe_labels_per_class`` of the all-label runs (their median, "all (N)"), or without it ten
    times the largest count ("all"), so that all labels sit at the right end of the axis."""
    counts = pd.to_numeric(runs[LABELS_PER_CLASS], errors="coerce").astype(float)
    finite = sorted(counts.dropna().unique())
    ticks = {float(k): f"{k:g}" for k in finite}
    everything = counts.isna()
    if not everything.any():
        return counts, ticks
    used = pd.to_numeric(runs.loc[everything, PROBE_LABELS_PER_CLASS], errors="coerce").dropna() \
        if PROBE_LABELS_PER_CLASS in runs.columns else pd.Series(dtype=float)
    top = finite[-1] if finite else 1.0
    if used.empty:
        position, text = top * 10.0, ALL_LABELS
    else:
        position, text = float(round(used.median())), f"{ALL_LABELS} ({round(used.median()):g})"
        if position <= top:  # a count at or above the split's own: keep "all" the rightmost point
            position = top * 2.0
    ticks[position] = text
    return counts.where(~everything, position), ticks


@_styled
def label_efficiency_figure(runs: pd.DataFrame, declared: Sequence[MetricColumn] | None = None) -> Figure | None:
    """Accuracy against labelled training images per class (log x axis): one panel per declared
    headline accuracy (:func:`probe_columns`), one line per pre-trained configuration (labelled
    without its labels per class) at the mean over finished seeds, a band of ± 1 std (ddof = 1);
    the baselines as lines of their own (random-init dashed, per encoder; "from scratch" in the
    panels of :data:`FROM_SCRATCH` probes; raw pixels dotted grey). All labels (an empty
    ``eval.labels_per_class``) sit at the right end (:func:`label_axis`). None when the finished
    runs have fewer than 2 distinct label counts."""
    done = runs[runs["status"] == "done"]
    if len(label_counts(done)) < 2:
        return None
    probes = probe_columns(runs, declared)
    if not probes:
        return None
    done = label_runs(runs, hide=(LABELS_PER_CLASS,)).loc[done.index]  # one line per configuration, all counts
    x, ticks = label_axis(done)
    done = done.assign(_x=x)
    pretrained, baselines = done[done["pretrained"]], done[~done["pretrained"]]
    palette = _series_palette(pretrained["label"])
    encoders = list(dict.fromkeys(baselines.loc[baselines["encoder_label"] != "pixels", "encoder_label"]))
    dark = dict(zip(encoders, sns.color_palette("dark", max(len(encoders), 1)) if len(encoders) > 1 else ["0.15"]))
    fig, axes = new_figure(9.5, 3.8 * len(probes), nrows=len(probes))
    for ax, probe in zip(axes, probes):
        for label in palette:
            _mean_line(ax, pretrained[pretrained["label"] == label], probe.key, label, palette[label], "-", "o",
                       "configuration")
        for label, group in baselines.groupby("label", sort=False):
            encoder = group["encoder_label"].iloc[0]
            if encoder == "pixels":
                _mean_line(ax, group, probe.key, label, "0.45", ":", "^", "baseline")
            else:
                name = f"{encoder} from scratch ({group['baseline'].iloc[0]} + {probe.name})" \
                    if probe.key in FROM_SCRATCH else label
                _mean_line(ax, group, probe.key, name, dark[encoder], "--", "s", "baseline")
        ax.set_xscale("log")
        ax.set_xticks(list(ticks), list(ticks.values()))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(min(ticks) / 1.5, max(ticks) * 1.5)
        ax.set_xlabel("labelled training images per class (log scale)")
        ax.set_ylabel(probe.axis_label)
        _title(ax, f"{_name(probe)} vs labels per class (mean ± 1 std over seeds)")
        _legend_outside(ax, "configuration · baseline")
    return fig


def _mean_line(ax, runs: pd.DataFrame, metric: str, label: str, color, linestyle: str, marker: str, gid: str) -> None:
    """``metric``'s mean over ``runs`` at each ``_x``, a band of ± 1 std; nothing without values."""
    if metric not in runs.columns:
        return
    stats = runs.groupby("_x")[metric].agg(["mean", "std"]).dropna(subset=["mean"]).sort_index()
    if stats.empty:
        return
    std = stats["std"].fillna(0)
    line, = ax.plot(stats.index, stats["mean"], color=color, linestyle=linestyle, marker=marker, markersize=5,
                    linewidth=1.6, label=label)
    line.set_gid(gid)
    ax.fill_between(stats.index, stats["mean"] - std, stats["mean"] + std, color=color,
                    alpha=0.18 if gid == "configuration" else 0.10, linewidth=0)


@_styled
def loss_curves_figure(histories: pd.DataFrame) -> Figure | None:
    """Training loss per epoch from the runs' ``history.csv``: one panel per loss (their scales
    differ), one line per configuration (mean over seeds), a band of ± 1 std. ``histories`` has
    columns ``label``, ``loss_name``, ``seed``, ``epoch``, ``loss``."""
    histories = histories[np.isfinite(pd.to_numeric(histories["loss"], errors="coerce"))] if len(histories) else histories
    if histories.empty:
        return None
    losses = list(dict.fromkeys(histories["loss_name"]))
    palette = _series_palette(histories["label"])
    fig, axes = new_figure(7.0 + 2.8, 3.6 * len(losses), nrows=len(losses))
    for ax, loss in zip(axes, losses):
        data = histories[histories["loss_name"] == loss]
        for label, group in data.groupby("label", sort=False):
            stats = group.groupby("epoch")["loss"].agg(["mean", "std"]).fillna(0)
            ax.plot(stats.index, stats["mean"], color=palette[label], label=label, linewidth=1.6,
                    marker="o" if len(stats) < 12 else None, markersize=4)  # a single epoch is a point
            ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                            color=palette[label], alpha=0.18, linewidth=0)
        low, high = data["loss"].min(), data["loss"].max()
        if low > 0 and high / low >= 20:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"training loss ({loss}, normalised pixels)")
        _title(ax, f"Pre-training loss ({loss}): mean over seeds, band ± 1 std")
        _legend_outside(ax, "configuration")
    return fig


@_styled
def reconstruction_montage(images: Sequence[tuple[str, Path]], columns: int = 2, dpi: int = 150) -> Figure | None:
    """The runs' ``reconstructions.png`` side by side, one panel per ``(label, path)``, titled
    with its label (``ax.texts``); in each, rows: original, what the encoder saw (hidden pixels
    as a grey checkerboard), the prediction, the prediction pasted into the hidden pixels.

    The pictures are pasted at their own resolution into one image shown on one axes, and the
    figure is sized so that saving it at ``dpi`` maps one picture pixel to one image pixel."""
    images = [(label, Path(path)) for label, path in images if Path(path).is_file()]
    if not images:
        return None
    pictures = [_rgb(mpimg.imread(path)) for _, path in images]
    columns = max(1, min(columns if len(images) <= 12 else 3, len(images)))
    rows = math.ceil(len(images) / columns)
    width = max(max(p.shape[1] for p in pictures), int(dpi * 2.6))  # room for a title under small pictures
    height = max(p.shape[0] for p in pictures)
    title, gap, header = int(dpi * 0.3), int(dpi * 0.12), int(dpi * 0.5)
    canvas = np.ones((header + rows * (title + height + gap), columns * (width + gap) - gap, 3), dtype=np.float32)
    fig = Figure(figsize=(canvas.shape[1] / dpi, canvas.shape[0] / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    chars = max(20, int(width / (dpi * 0.075)))  # ~9 pt characters that fit a panel
    for i, ((label, _), picture) in enumerate(zip(images, pictures)):
        top = header + (i // columns) * (title + height + gap) + title
        left = (i % columns) * (width + gap) + (width - picture.shape[1]) // 2
        canvas[top:top + picture.shape[0], left:left + picture.shape[1]] = picture
        lines = textwrap.wrap(label, chars)
        text = "\n".join(lines[:2]) + ("…" if len(lines) > 2 else "")
        ax.text(left + picture.shape[1] / 2, top - dpi * 0.02, text, ha="center", va="bottom", fontsize=9, linespacing=1.1)
    ax.imshow(canvas, interpolation="nearest")
    ax.text(canvas.shape[1] / 2, header * 0.45, "\n".join(textwrap.wrap(
        "Reconstructions on fixed test images. Rows in each panel: original; what the encoder saw (hidden pixels "
        "as a grey checkerboard); prediction; prediction pasted into the hidden pixels.",
        max(40, int(canvas.shape[1] / (dpi * 0.09))))), ha="center", va="center", fontsize=11)
    return fig


def _rgb(picture: np.ndarray) -> np.ndarray:
    """An image read by matplotlib as float RGB in [0, 1]."""
    picture = picture.astype(np.float32)
    if picture.max() > 1.0:
        picture = picture / 255.0
    if picture.ndim == 2:
        picture = np.stack([picture] * 3, axis=-1)
    return picture[..., :3]


@_styled
def comparisons_figure(frame: pd.DataFrame, declared: Sequence[MetricColumn] | None = None) -> Figure | None:
    """A forest plot of the report's paired comparisons (``frame``: from
    :func:`mimbench.report.comparisons.compare`): one panel per metric, one row per comparison,
    the mean paired difference with its 95% bootstrap interval, a line at 0; filled markers for
    the significant ones (Holm-corrected), colour by family (against random-init, against raw
    pixels, against the reference configuration)."""
    if frame is None or frame.empty:
        return None
    names = {c.key: c for c in declared_or_inferred(pd.DataFrame(columns=list(frame["metric"])), declared)}
    metrics = list(dict.fromkeys(frame["metric"]))
    colors = dict(zip(("random-init", "pixels", "reference"), sns.color_palette("colorblind", 3)))
    sizes = [int((frame["metric"] == m).sum()) for m in metrics]
    fig, axes = new_figure(9.5, sum(0.32 * k + 1.3 for k in sizes), nrows=len(metrics),
                           gridspec_kw={"height_ratios": [0.32 * k + 1.3 for k in sizes]})
    for ax, metric in zip(axes, metrics):
        rows = frame[frame["metric"] == metric].reset_index(drop=True)
        for y, row in rows.iterrows():
            color = colors.get(row["family"], "0.3")
            low, high = row["ci_low"], row["ci_high"]
            if pd.notna(low) and pd.notna(high):
                ax.plot([low, high], [y, y], color=color, linewidth=1.8, solid_capstyle="butt")
            significant = row["significant"] is True or row["significant"] == True  # noqa: E712 (numpy bools)
            ax.plot(row["mean_diff"], y, marker="o", markersize=6, color=color,
                    markerfacecolor=color if significant else "white", linestyle="")
        ax.axvline(0, color="0.3", linewidth=1.0, linestyle="--")
        ax.set_yticks(range(len(rows)), [_comparison_label(r) for _, r in rows.iterrows()])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        column = names.get(metric)
        ax.set_xlabel(f"Δ {column.axis_label if column else metric} (configuration − reference)")
        _title(ax, f"{_name(column) if column else metric}: mean paired difference, 95% bootstrap interval")
    family_names = {"random-init": "vs random-init", "pixels": "vs raw pixels", "reference": "vs the reference"}
    handles = [Line2D([], [], color=c, marker="o", linestyle="-", label=family_names[f]) for f, c in colors.items()
               if (frame["family"] == f).any()]
    handles.append(Line2D([], [], color="0.3", marker="o", markerfacecolor="0.3", linestyle="",
                          label="significant (Holm, p < 0.05)"))
    axes[0].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def _comparison_label(row: pd.Series) -> str:
    labels = row.get("labels_per_class")
    where = "" if labels is None or pd.isna(labels) else f", {labels} labels/class"
    return textwrap.shorten(f"{row['configuration']} vs {row['reference']}{where}", 90, placeholder="…")


@_styled
def compute_figure(runs: pd.DataFrame, declared: Sequence[MetricColumn] | None = None) -> Figure | None:
    """Accuracy against pre-training compute: one panel per declared headline accuracy
    (:func:`probe_columns`), one point per pre-trained configuration at its mean ``train_flops``
    (log x axis) and mean accuracy over finished seeds, with the 95% bootstrap interval of that
    mean (:func:`mimbench.stats.bootstrap_interval`); the Pareto front (no other configuration
    is as cheap and more accurate) as a line; the baselines, which cost no pre-training, as
    horizontal lines. None without ``train_flops``."""
    from mimbench import stats

    done = runs[runs["status"] == "done"]
    pretrained = done[done["pretrained"]]
    if "train_flops" not in pretrained.columns or not pretrained["train_flops"].gt(0).any():
        return None
    probes = probe_columns(runs, declared)
    if not probes:
        return None
    palette = encoder_palette(runs.loc[runs["encoder_label"] != "pixels", "encoder_label"])
    markers = dict(zip(dict.fromkeys(pretrained["masker_label"]), "osD^vP*Xph<>" * 4))
    fig, axes = new_figure(9.5, 4.0 * len(probes), nrows=len(probes))
    for ax, probe in zip(axes, probes):
        points = []
        for _, group in pretrained.groupby("config_id", sort=False):
            values = group[probe.key].dropna().to_numpy(float)
            flops = group["train_flops"].mean()
            if not len(values) or not flops > 0:
                continue
            low, high = stats.bootstrap_interval(values) if len(values) > 1 else (values[0], values[0])
            first = group.iloc[0]
            ax.errorbar(flops, values.mean(), yerr=[[values.mean() - low], [high - values.mean()]],
                        fmt=markers[first["masker_label"]], color=palette.get(first["encoder_label"], "0.3"),
                        markersize=7, capsize=3, label=first["label"])
            points.append((flops, values.mean()))
        front = pareto_front(points)
        if len(front) > 1:
            line, = ax.plot(*zip(*front), color="0.4", linewidth=1.0, linestyle="-", zorder=0,
                            label="Pareto front")
            line.set_gid("pareto")
        _baseline_lines(ax, done[~done["pretrained"]], probe.key, palette)
        ax.set_xscale("log")
        ax.set_xlabel("pre-training FLOPs (log scale)")
        ax.set_ylabel(probe.axis_label)
        _title(ax, f"{_name(probe)} against pre-training compute (mean, 95% bootstrap interval over seeds)")
        _legend_outside(ax, "configuration · baseline")
    return fig


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points (cost, value) that no other point beats with less or equal cost and a higher
    value, by increasing cost."""
    front: list[tuple[float, float]] = []
    for cost, value in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or value > front[-1][1]:
            front.append((cost, value))
    return front
