"""Which row of a table is the best of its column, and which configurations compare on a
column at all. A best is marked (bold in the tables, named in the conclusions) only when it beats
every other row evaluated alike pairwise, Holm-adjusted; rows that do not share a scale on a
column (another masker's own masks, another target's units, a target that uses the hidden patch's
own statistics) are never compared on it.
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from mimbench import columns, stats
from mimbench.columns import MetricColumn
from mimbench.labels import cell_value, eval_columns
from mimbench.report.aggregate import to_bool
from mimbench.report.pairs import finished, seed_pairs


def mark_best(table: pd.DataFrame, runs: pd.DataFrame, declared: Sequence[MetricColumn]) -> pd.DataFrame:
    """``table`` with ``<metric>_is_best`` for each declared headline metric compared between
    configurations (:attr:`MetricColumn.compared`): true on the row with
    the best mean of its column (highest; lowest for an ``mse``) among the rows with the same
    evaluation settings, only when it beats every other of those rows pairwise: each paired
    sign-flip test (by seed) favours it with p_holm < 0.05, Holm over those comparisons. So a
    best is never marked on fewer seeds than :func:`mimbench.stats.seeds_for_family` needs, nor
    among rows that do not compare on the metric (:func:`comparable`)."""
    table = table.copy()
    settings = [c for c in eval_columns(table) if c in runs.columns]
    done = finished(runs)
    setting = pd.Series([repr([cell_value(v) for v in row]) for row in table[settings].itertuples(index=False)],
                        index=table.index)
    groups = table.groupby(setting, sort=False).groups
    for metric in (c for c in declared if c.headline and c.compared and f"{c.key}_mean" in table.columns):
        marks = pd.Series(False, index=table.index)
        for rows in groups.values():
            best = best_row(table.loc[rows], done, metric)
            if best is not None:
                marks[best] = True
        table[f"{metric.key}_is_best"] = marks
    return table


def best_row(rows: pd.DataFrame, done: pd.DataFrame, metric: MetricColumn) -> Any | None:
    """The index of the row of ``rows`` (aggregated, one per configuration) whose mean of
    ``metric`` beats every other row's pairwise by seed with Holm-adjusted p < 0.05, or None."""
    ranked = rows.dropna(subset=[f"{metric.key}_mean"])
    if len(ranked) < 2 or not all_comparable(ranked, done, metric.key):
        return None
    better = -1 if metric.kind == "mse" else 1
    ranked = ranked.sort_values(f"{metric.key}_mean", ascending=better < 0, kind="stable")
    best = ranked.index[0]
    p_values = []
    for other in ranked.index[1:]:
        diffs = seed_pairs(done, ranked.at[best, "config_id"], ranked.at[other, "config_id"], metric.key)["diff"]
        result = stats.compare_paired(diffs.to_numpy(float), higher_is_better=better > 0) if len(diffs) else None
        if result is None or result.p_value is None or result.mean_diff * better <= 0:
            return None
        p_values.append(result.p_value)
    return best if all(p < stats.ALPHA for p in stats.holm(p_values)) else None


def all_comparable(rows: pd.DataFrame, done: pd.DataFrame, metric: str) -> bool:
    """Whether the configurations of ``rows`` (with ``config_id``; their finished runs ``done``)
    compare with one another on ``metric`` (:func:`comparable`)."""
    configs = done.drop_duplicates("config_id").set_index("config_id")
    ids = [c for c in rows["config_id"] if c in configs.index]
    return len(ids) == len(rows) and all(comparable(configs.loc[ids[0]], configs.loc[c], metric) for c in ids)


def comparable(first: pd.Series, second: pd.Series, metric: str) -> bool:
    """Whether two configurations (rows with their components' columns) compare on ``metric``:
    not on a column scored under each run's own masker when their maskers differ, nor on one in the
    units of each run's own target when their targets differ, nor on a pixel error when one of them
    de-normalises its prediction with the hidden patch's own statistics (``recon_uses_target_stats``,
    e.g. ``norm_pix``: that reconstruction is handed information the other's is not)."""
    def same(axis: str) -> bool:
        keys = [c for c in first.index if c == axis or c.startswith(axis + ".")]
        return [cell_value(first.get(k)) for k in keys] == [cell_value(second.get(k)) for k in keys]

    if metric in columns.OWN_MASKER_COLUMNS and not same("masker"):
        return False
    if metric in columns.OWN_TARGET_COLUMNS and not same("target"):
        return False
    if metric in columns.PIXEL_ERROR_COLUMNS:
        flags = [to_bool(row.get("recon_uses_target_stats")) for row in (first, second)]
        return flags[0] == flags[1]
    return True
