"""The report's figures of intervals: the forest plot of every paired comparison with its
bootstrap interval, and accuracy against pre-training compute with its Pareto front.

Each function returns a :class:`matplotlib.figure.Figure`, or None when the suite has nothing to
draw for it; ``declared`` as in :mod:`mimbench.report.plots`.
"""

from __future__ import annotations

import textwrap
from typing import Sequence

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mimbench.columns import MetricColumn
from mimbench.report.aggregate import declared_or_inferred
from mimbench.report.canvas import (baseline_lines, encoder_palette, legend_outside, metric_title, new_figure,
                                    probe_columns, series_palette, styled, wrapped_title)
from mimbench.specs import Status


@styled
def comparisons_figure(frame: pd.DataFrame, declared: Sequence[MetricColumn] | None = None) -> Figure | None:
    """A forest plot of the report's paired comparisons (``frame``: from
    :func:`mimbench.report.comparisons.compare`): one panel per metric, one row per comparison,
    the mean paired difference with its 95% interval (:func:`mimbench.stats.mean_interval`), a line at 0; filled markers for
    the resolved ones (:func:`mimbench.report.comparisons.is_resolved`), colour by family (against random-init, against raw
    pixels, against the reference configuration, against biharmonic inpainting)."""
    if frame is None or frame.empty:
        return None
    names = {c.key: c for c in declared_or_inferred(pd.DataFrame(columns=list(frame["metric"])), declared)}
    metrics = list(dict.fromkeys(frame["metric"]))
    # supervised last: the colours of the other families stay what they were before it existed
    colors = dict(zip(("random-init", "pixels", "reference", "biharmonic", "supervised"),
                      sns.color_palette("colorblind", 5)))
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
            significant = row["resolved"] is True or row["resolved"] == True  # noqa: E712 (numpy bools)
            ax.plot(row["mean_diff"], y, marker="o", markersize=6, color=color,
                    markerfacecolor=color if significant else "white", linestyle="")
        ax.axvline(0, color="0.3", linewidth=1.0, linestyle="--")
        ax.set_yticks(range(len(rows)), [_comparison_label(r) for _, r in rows.iterrows()])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        column = names.get(metric)
        ax.set_xlabel(f"Δ {column.axis_label if column else metric} (configuration − reference)")
        wrapped_title(ax, f"{metric_title(column) if column else metric}: mean paired difference, "
                          "95% interval")
    family_names = {"random-init": "vs random-init", "pixels": "vs raw pixels", "reference": "vs the reference",
                    "biharmonic": "vs biharmonic inpainting", "supervised": "vs supervised"}
    handles = [Line2D([], [], color=c, marker="o", linestyle="-", label=family_names[f]) for f, c in colors.items()
               if (frame["family"] == f).any()]
    handles.append(Line2D([], [], color="0.3", marker="o", markerfacecolor="0.3", linestyle="",
                          label="resolved (Holm, or the family-wise interval)"))
    axes[0].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def _comparison_label(row: pd.Series) -> str:
    """The comparison on at most two lines of ~45 characters (long labels would squeeze the plot)."""
    labels = row.get("labels_per_class")
    where = "" if labels is None or pd.isna(labels) else f", {labels} labels/class"
    lines = textwrap.wrap(f"{row['configuration']} vs {row['reference']}{where}", 45)
    return "\n".join(lines[:2]) + ("…" if len(lines) > 2 else "")


@styled
def compute_figure(runs: pd.DataFrame, declared: Sequence[MetricColumn] | None = None) -> Figure | None:
    """Accuracy against pre-training compute: one panel per declared headline accuracy
    (:func:`probe_columns`), one point per pre-trained configuration at its mean ``train_flops``
    (log x axis) and mean accuracy over finished seeds, with the 95% interval of that
    mean (:func:`mimbench.stats.mean_interval`); the Pareto front (no other configuration
    is as cheap and more accurate) as a line; the baselines, which cost no pre-training, as
    horizontal lines. None without ``train_flops``, or when every configuration cost the same
    (within 1%): the x axis would carry nothing."""
    from mimbench import stats

    done = runs[runs["status"] == Status.DONE]
    pretrained = done[done["pretrained"]]
    if "train_flops" not in pretrained.columns or not pretrained["train_flops"].gt(0).any():
        return None
    costs = pretrained[pretrained["train_flops"] > 0].groupby("config_id")["train_flops"].mean()
    if costs.max() <= 1.01 * costs.min():
        return None
    probes = probe_columns(runs, declared)
    if not probes:
        return None
    palette = encoder_palette(runs.loc[runs["encoder_label"] != "pixels", "encoder_label"])
    colours = series_palette(pretrained["label"])  # one per configuration: two budgets of one recipe differ
    markers = dict(zip(dict.fromkeys(pretrained["masker_label"]), "osD^vP*Xph<>" * 4))
    fig, axes = new_figure(11.0, 4.2 * len(probes), nrows=len(probes))
    for ax, probe in zip(axes, probes):
        points = []
        for _, group in pretrained.groupby("config_id", sort=False):
            values = group[probe.key].dropna().to_numpy(float)
            flops = group["train_flops"].mean()
            if not len(values) or not flops > 0:
                continue
            low, high = stats.mean_interval(values) if len(values) > 1 else (values[0], values[0])
            first = group.iloc[0]
            ax.errorbar(flops, values.mean(), yerr=[[values.mean() - low], [high - values.mean()]],
                        fmt=markers[first["masker_label"]], color=colours[first["label"]],
                        markersize=7, capsize=3, label=first["label"])
            points.append((flops, values.mean()))
        front = pareto_front(points)
        if len(front) > 1:
            line, = ax.plot(*zip(*front), color="0.4", linewidth=1.0, linestyle="-", zorder=0,
                            label="Pareto front")
            line.set_gid("pareto")
        baseline_lines(ax, done[~done["pretrained"]], probe.key, palette)
        ax.set_xscale("log")
        ax.set_xlabel("pre-training FLOPs (log scale)")
        ax.set_ylabel(probe.axis_label)
        wrapped_title(ax, f"{metric_title(probe)} against pre-training FLOPs")
        legend_outside(ax, "configuration · baseline")
    return fig


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points (cost, value) that no other point beats with less or equal cost and a higher
    value, by increasing cost."""
    front: list[tuple[float, float]] = []
    for cost, value in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or value > front[-1][1]:
            front.append((cost, value))
    return front
