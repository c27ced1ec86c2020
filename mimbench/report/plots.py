"""The report's figures, drawn with seaborn on matplotlib's Agg canvas (no display needed).

Every function returns a :class:`matplotlib.figure.Figure` (or None when the suite has
nothing to draw for it), so tests and notebooks can inspect axes, labels, bars and lines;
:func:`~mimbench.report.canvas.figure_files` renders it as PNG and PDF. Figures are built without pyplot: no global
state, nothing left open. Inputs come from :mod:`mimbench.report`: ``runs`` is a labelled
per-run frame labelled by the suite's design (:mod:`mimbench.report.labelled`), ``table`` an aggregated one
(:func:`~mimbench.report.aggregate`). The metrics drawn, their names and axis labels come from
``declared``, the suite's metric columns (:mod:`mimbench.columns`, read by
:meth:`mimbench.folder.SuiteFolder.read_columns`); without it they are inferred from the frame's columns.

This module holds the bar, scatter and sweep figures; the others are in
:mod:`~mimbench.report.curves` (label efficiency, loss curves, reconstruction montage) and
:mod:`~mimbench.report.interval_plots` (the forest plot of the comparisons, accuracy against
compute), and what they share in :mod:`~mimbench.report.canvas`.
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from mimbench.columns import MetricColumn
from mimbench.labels import param_text
from mimbench.report.canvas import (REFERENCE_PSNR, baseline_lines, encoder_palette, legend_outside, metric_title,
                                    new_figure, probe_columns, psnr_columns, reference_first, rotate_ticks,
                                    series_palette, styled, wrapped_title)
from mimbench.specs import Status

#: Axis labels of commonly swept params.
PARAM_LABELS = {"masker.ratio": "mask ratio (fraction hidden)", "train.lr": "peak learning rate",
                "train.epochs": "pre-training epochs", "masker.mask_patch_size": "mask patch size (px)"}


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
    rotate_ticks(ax, order)
    return [Patch(facecolor=palette[h], label=h) for h in hue_order]


@styled
def probe_accuracy_figure(runs: pd.DataFrame, declared: Sequence[MetricColumn] | None = None) -> Figure | None:
    """Probe accuracy per masker: one panel per declared accuracy (:func:`probe_columns`), bars
    per pre-training setup with one hue per encoder (mean over finished seeds, error bars ± 1 std);
    the baselines as horizontal reference lines (random-init dashed in its encoder's colour, raw
    pixels dotted grey)."""
    probes = probe_columns(runs, declared)
    done = runs[runs["status"] == Status.DONE]
    pretrained = done[done["pretrained"]]
    if not probes or pretrained.empty:
        return None
    palette = encoder_palette(runs.loc[runs["encoder_label"] != "pixels", "encoder_label"])
    fig, axes = new_figure(_bar_width(pretrained), 3.6 * len(probes), nrows=len(probes))
    for ax, probe in zip(axes, probes):
        handles = _bars(ax, pretrained, probe, palette)
        baseline_lines(ax, done[~done["pretrained"]], probe.key, palette)
        ax.set_ylim(0, min(1.05, ax.get_ylim()[1] * 1.05))  # accuracies are fractions
        wrapped_title(ax, f"{metric_title(probe)} per masker (mean ± 1 std over seeds)")
        legend_outside(ax, "encoder · baseline", handles)
    return fig


def _points(ax, data: pd.DataFrame, metric: MetricColumn, palette: dict[str, tuple]) -> list[Line2D]:
    """Per setup (x) and encoder (hue, side by side): the mean of ``metric`` over finished seeds
    with its 95% interval (:func:`mimbench.stats.mean_interval`; none with one
    seed), and each seed as a small dot. Points, not bars: the axis need not start at 0."""
    from mimbench import stats

    order = list(dict.fromkeys(data["setup_label"]))
    hue_order = list(dict.fromkeys(data["encoder_label"]))
    width = 0.6 / len(hue_order)
    for i, setup in enumerate(order):
        for j, hue in enumerate(hue_order):
            values = data.loc[(data["setup_label"] == setup) & (data["encoder_label"] == hue), metric.key]
            values = values.dropna().to_numpy(float)
            if not len(values):
                continue
            x = i + (j - (len(hue_order) - 1) / 2) * width
            mean = values.mean()
            low, high = stats.mean_interval(values) if len(values) > 1 else (mean, mean)
            ax.plot([x] * len(values), values, linestyle="", marker=".", markersize=4, color=palette[hue], alpha=0.5)
            ax.errorbar(x, mean, yerr=[[mean - low], [high - mean]], fmt="o", markersize=7, capsize=4,
                        color=palette[hue], label=f"_{hue}: {setup}")  # "_": not in the legend
    ax.set_xticks(range(len(order)), order)
    ax.set_xlim(-0.5, len(order) - 0.5)
    ax.set_xlabel("masker" if all("/" not in s for s in order) else "pre-training setup")
    ax.set_ylabel(metric.axis_label)
    rotate_ticks(ax, order)
    return [Line2D([], [], color=palette[h], marker="o", linestyle="", label=h) for h in hue_order]


@styled
def psnr_figure(runs: pd.DataFrame, declared: Sequence[MetricColumn] | None = None) -> Figure | None:
    """Reconstruction PSNR per masker: one panel per declared PSNR column (the core's: the run's
    own masker, and the suite's reference masker, the same masks for every run); per pre-training
    setup and encoder, the mean over finished seeds with its 95% interval and the seeds
    as dots (:func:`_points`). The y axis is zoomed to the data, so that differences of a few tenths
    of a dB show; points rather than bars, whose lengths would then exaggerate them."""
    pretrained = runs[(runs["status"] == Status.DONE) & runs["pretrained"]]
    metrics = psnr_columns(runs, declared)
    if not metrics:
        return None
    palette = encoder_palette(runs.loc[runs["encoder_label"] != "pixels", "encoder_label"])
    fig, axes = new_figure(_bar_width(pretrained), 3.6 * len(metrics), nrows=len(metrics))
    titles = {"recon_psnr": "Reconstruction PSNR under each run's own masker",
              REFERENCE_PSNR: "Reconstruction PSNR under the reference masker (the same masks for every run)"}
    for ax, metric in zip(axes, metrics):
        handles = _points(ax, pretrained, metric, palette)
        wrapped_title(ax, f"{titles.get(metric.key, metric.axis_label)}, mean and 95% interval over seeds "
                          "(dots: seeds)")
        legend_outside(ax, "encoder", handles)
    return fig


@styled
def psnr_vs_accuracy_figure(table: pd.DataFrame, declared: Sequence[MetricColumn] | None = None) -> Figure | None:
    """Does better reconstruction mean better features? One point per pre-trained configuration:
    PSNR (under the reference masker when there is one) against each declared accuracy
    (:func:`probe_columns`), error bars ± 1 std over seeds; colour = encoder, marker = masker;
    in the title, Spearman's rho over the configurations with its 95% interval, p-value and n, or,
    with fewer than 5 configurations, that no correlation is claimed (:func:`correlation_text`).
    None with fewer than 2 configurations: one point shows no relation."""
    pretrained = table[table["pretrained"] & (table["n_done"] > 0)]
    x = next(iter(reference_first(psnr_columns(table, declared))), None)
    probes = probe_columns(table, declared)
    if x is None or not probes or len(pretrained) < 2:
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
        wrapped_title(ax, f"{metric_title(probe)} vs PSNR ({correlation_text(pair.iloc[:, 0], pair.iloc[:, 1])})")
        ax.set_xlabel(x.axis_label)
        ax.set_ylabel(probe.axis_label)
    handles = [Line2D([], [], color=c, marker="o", linestyle="", label=e) for e, c in palette.items()]
    handles += [Line2D([], [], color="0.3", marker=m, linestyle="", label=k) for k, m in markers.items()]
    axes[-1].legend(handles=handles, title="encoder · masker", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                    frameon=False)
    return fig


def correlation_text(x: Sequence[float], y: Sequence[float]) -> str:
    """Spearman's rho with its uncertainty (:func:`mimbench.stats.spearman`), or why none is claimed."""
    from mimbench import stats

    found = stats.spearman(x, y)
    if found is not None:
        return f"{found.text()} configurations"
    if len(x) < stats.MIN_POINTS_FOR_CORRELATION:
        return f"no correlation claimed: n = {len(x)} configurations, fewer than {stats.MIN_POINTS_FOR_CORRELATION}"
    return f"n = {len(x)} configurations; no correlation: one variable is constant"


def _std(row: pd.Series, metric: str) -> float | None:
    value = row.get(f"{metric}_std")
    return None if value is None or pd.isna(value) else float(value)


@styled
def sweep_figure(table: pd.DataFrame, param: str, declared: Sequence[MetricColumn] | None = None,
                 other_sweeps: Sequence[str] = ()) -> Figure | None:
    """Metrics against a swept param: one panel per metric (the declared accuracies, then the
    PSNR columns, the reference masker's first), one line per configuration (the other
    components, and ``other_sweeps`` values), mean ± 1 std over seeds at each value.
    ``table`` must be aggregated with the swept params left out of its labels
    (the design's ``table`` view: ``aggregate(view(runs, "table"))``)."""
    pretrained = table[table["pretrained"] & (table["n_done"] > 0) & table[param].notna()] \
        if param in table.columns else table.iloc[0:0]
    metrics = [*probe_columns(pretrained, declared), *reference_first(psnr_columns(pretrained, declared))] \
        if not pretrained.empty else []
    if pretrained.empty or not metrics or pretrained[param].nunique() < 2:
        return None
    series = pretrained["label"] + [
        "".join(f", {o.split('.', 1)[1]}={param_text(o, v)}" for o, v in zip(other_sweeps, values))
        for values in pretrained[list(other_sweeps)].itertuples(index=False)] if other_sweeps else pretrained["label"]
    values = pretrained[param]
    numeric = pd.to_numeric(values, errors="coerce").notna().all()
    positions = pd.to_numeric(values) if numeric else values.map({v: i for i, v in enumerate(dict.fromkeys(values))})
    palette = series_palette(series)
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
        wrapped_title(ax, f"{metric_title(metric)} vs {param}")
        if numeric and (positions > 0).all() and positions.max() / positions.min() >= 20:
            ax.set_xscale("log")
        if numeric and positions.nunique() <= 8:
            ticks = sorted(positions.unique())
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        if not numeric:
            ax.set_xticks(range(values.nunique()), [str(v) for v in dict.fromkeys(values)])
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    legend_outside(axes[min(ncols, len(metrics)) - 1], "configuration")
    return fig
