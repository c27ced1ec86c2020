"""The report's line figures and pictures: accuracy against labels per class (label
efficiency), the pre-training loss curves, and the montage of the runs' reconstructions.

Each function returns a :class:`matplotlib.figure.Figure`, or None when the suite has nothing to
draw for it; ``declared`` as in :mod:`mimbench.report.plots`.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from mimbench.columns import MetricColumn
from mimbench.labels import ALL_LABELS, LABELS_PER_CLASS
from mimbench.report.aggregate import PROBE_LABELS_PER_CLASS, label_counts
from mimbench.report.labelled import view
from mimbench.report.canvas import (legend_outside, metric_title, new_figure, probe_columns, series_palette, styled,
                                    wrapped_title)
from mimbench.specs import Status

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


@styled
def label_efficiency_figure(runs: pd.DataFrame, declared: Sequence[MetricColumn] | None = None) -> Figure | None:
    """Accuracy against labelled training images per class (log x axis): one panel per declared
    headline accuracy (:func:`probe_columns`), one line per pre-trained configuration (labelled
    without its labels per class) at the mean over finished seeds, a band of ± 1 std (ddof = 1);
    the baselines as lines of their own (random-init dashed, per encoder; "from scratch" in the
    panels of the probes declared with ``trains_encoder``, e.g. fine-tuning; raw pixels dotted grey). All labels (an empty
    ``eval.labels_per_class``) sit at the right end (:func:`label_axis`). None when the finished
    runs have fewer than 2 distinct label counts."""
    done = runs[runs["status"] == Status.DONE]
    if len(label_counts(done)) < 2:
        return None
    probes = probe_columns(runs, declared)
    if not probes:
        return None
    done = view(runs, "budget").loc[done.index]  # one line per configuration, all counts
    x, ticks = label_axis(done)
    done = done.assign(_x=x)
    pretrained, baselines = done[done["pretrained"]], done[~done["pretrained"]]
    palette = series_palette(pretrained["label"])
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
                    if probe.trains_encoder else label
                _mean_line(ax, group, probe.key, name, dark[encoder], "--", "s", "baseline")
        ax.set_xscale("log")
        ax.set_xticks(list(ticks), list(ticks.values()))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(min(ticks) / 1.5, max(ticks) * 1.5)
        ax.set_xlabel("labelled training images per class (log scale)")
        ax.set_ylabel(probe.axis_label)
        wrapped_title(ax, f"{metric_title(probe)} vs labels per class (mean ± 1 std over seeds)")
        legend_outside(ax, "configuration · baseline")
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


@styled
def loss_curves_figure(histories: pd.DataFrame) -> Figure | None:
    """Training loss per epoch from the runs' ``history.csv``: one panel per loss and prediction
    target (their scales differ: a loss on HOG cells or teacher features shares no axis with one on
    pixels), one line per configuration (mean over seeds), a band of ± 1 std. ``histories`` has
    columns ``label``, ``loss_name``, ``seed``, ``epoch``, ``loss`` and ``target`` (absent: pixels)."""
    histories = histories[np.isfinite(pd.to_numeric(histories["loss"], errors="coerce"))] if len(histories) else histories
    if histories.empty:
        return None
    if "target" not in histories.columns:
        histories = histories.assign(target="pixels")
    panels = list(dict.fromkeys(zip(histories["loss_name"], histories["target"])))
    palette = series_palette(histories["label"])
    fig, axes = new_figure(7.0 + 2.8, 3.6 * len(panels), nrows=len(panels))
    for ax, (loss, target) in zip(axes, panels):
        data = histories[(histories["loss_name"] == loss) & (histories["target"] == target)]
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
        units = "normalised pixels" if target == "pixels" else f"units of the {target} target"
        ax.set_ylabel(f"training loss ({loss}, {units})")
        wrapped_title(ax, f"Pre-training loss ({loss} on {target}): mean over seeds, band ± 1 std")
        legend_outside(ax, "configuration")
    return fig


RECONSTRUCTIONS_CAPTION = ("Reconstructions on fixed test images. Rows in each panel: original; what the encoder saw "
                           "(hidden pixels as a grey checkerboard); prediction; prediction pasted into the hidden pixels.")
SEGMENTATIONS_CAPTION = ("Segmentations of fixed test images by the seg_linear probe. Rows in each panel: image; "
                         "ground truth; prediction (a colour per class, background black, unlabelled white).")
DETECTIONS_CAPTION = ("Detections on fixed test images by the detection probe: true boxes white; coloured by class, "
                      "the best detections after class-agnostic NMS scoring over 0.3, at most twice as many as true "
                      "boxes (every detection is scored: detections.json).")


@styled
def reconstruction_montage(images: Sequence[tuple[str, Path]], columns: int = 2, dpi: int = 150,
                           caption: str = RECONSTRUCTIONS_CAPTION) -> Figure | None:
    """The runs' pictures (``reconstructions.png``, or ``segmentations.png`` with its ``caption``) side
    by side, one panel per ``(label, path)``, titled with its label (``ax.texts``); in each
    reconstruction, rows: original, what the encoder saw (hidden pixels as a grey checkerboard), the
    prediction, the prediction pasted into the hidden pixels.

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
        caption, max(40, int(canvas.shape[1] / (dpi * 0.09))))), ha="center", va="center", fontsize=11)
    return fig


def _rgb(picture: np.ndarray) -> np.ndarray:
    """An image read by matplotlib as float RGB in [0, 1]."""
    picture = picture.astype(np.float32)
    if picture.max() > 1.0:
        picture = picture / 255.0
    if picture.ndim == 2:
        picture = np.stack([picture] * 3, axis=-1)
    return picture[..., :3]
