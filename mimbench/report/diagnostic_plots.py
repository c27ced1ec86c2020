"""The diagnostics' figures: attention distance against depth (the figure of Xie et al., CVPR 2023,
and Park et al., ICLR 2023) and each block's CKA with the last, per configuration and baseline."""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mimbench.report.canvas import legend_outside, new_figure, series_palette, styled, wrapped_title
from mimbench.specs import Status


def per_block(runs: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """The finished runs' ``<prefix>@<block>`` columns in long form: ``label``, ``seed``, ``block``
    (int) and ``value``; empty when no run has them."""
    blocks = [c for c in runs.columns if c.startswith(prefix + "@") and c.split("@", 1)[1].isdigit()]
    done = runs[runs["status"] == Status.DONE]
    if not blocks or done[blocks].isna().all().all():
        return pd.DataFrame(columns=["label", "seed", "block", "value"])
    long = done[["label", "seed", *blocks]].melt(["label", "seed"], var_name="block").dropna(subset=["value"])
    long["block"] = long["block"].str.split("@").str[1].astype(int)
    long["value"] = long["value"].astype(float)
    return long.sort_values(["label", "block"], kind="stable")


@styled
def attention_depth_figure(runs: pd.DataFrame) -> Figure | None:
    """Mean attention distance (pixels) against block, one line per configuration and baseline
    (mean over finished seeds, band ± 1 std); None without attention diagnostics."""
    long = per_block(runs, "attn_distance")
    if long.empty:
        return None
    labels = list(dict.fromkeys(long["label"]))
    fig, axes = new_figure(8.0, 4.2)
    ax = axes[0]
    palette = series_palette(labels)
    sns.lineplot(data=long, x="block", y="value", hue="label", hue_order=labels, palette=palette,
                 errorbar="sd", marker="o", ax=ax, legend=False)
    ax.set_xticks(sorted(long["block"].unique()))
    ax.set_xlabel("block (0 = first)")
    ax.set_ylabel("mean attention distance (px)")
    wrapped_title(ax, "Attention distance per block (mean over heads and images; mean ± 1 std over seeds)")
    palette = series_palette(labels)
    legend_outside(ax, "configuration", [Line2D([], [], color=palette[label], marker="o", label=label)
                                         for label in labels])
    return fig


@styled
def cka_figure(runs: pd.DataFrame) -> Figure | None:
    """A heatmap: rows configurations and baselines, columns blocks, cells the mean over seeds of
    the block's linear CKA with the last block; None without CKA diagnostics."""
    long = per_block(runs, "cka")
    if long.empty:
        return None
    grid = long.groupby(["label", "block"], sort=False)["value"].mean().unstack("block")
    grid = grid.loc[list(dict.fromkeys(long["label"]))]
    fig, axes = new_figure(2.0 + 0.9 * grid.shape[1], 1.2 + 0.4 * grid.shape[0])
    sns.heatmap(grid, annot=True, fmt=".2f", vmin=0.0, vmax=1.0, cmap="viridis", ax=axes[0],
                cbar_kws={"label": "linear CKA with the last block"})
    axes[0].set_xlabel("block (0 = first)")
    axes[0].set_ylabel("")
    wrapped_title(axes[0], "How alike each block's pooled features are to the last block's (mean over seeds)")
    return fig
