"""Pairing by seed, the one way the report compares two configurations.

Two configurations are compared on the seeds both finished: run ``seed=s`` of one against run
``seed=s`` of the other (a pre-trained run and its baselines share a seed by construction, see
:mod:`mimbench.design`). The table's gains, the comparisons of ``comparisons.csv`` and the bold
marks of the best rows all take their differences from :func:`seed_pairs`, so they cannot disagree.
"""

from __future__ import annotations

from typing import Iterator

import pandas as pd

from mimbench.report.labelled import PARTNER_COLUMNS
from mimbench.specs import Status


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of a labelled frame that finished (status ``done``)."""
    return runs[runs["status"] == Status.DONE]


def seed_pairs(done: pd.DataFrame, mine: str, theirs: str, metric: str) -> pd.DataFrame:
    """The values of ``metric`` of configurations ``mine`` and ``theirs`` (``config_id``s of the
    finished runs ``done``) on the seeds where both have one: columns ``mine``, ``theirs`` and
    ``diff`` (mine − theirs), indexed by seed, ascending."""
    def by_seed(config_id: str) -> pd.Series:
        values = done.loc[done["config_id"] == config_id, ["seed", metric]].dropna()
        return values.groupby("seed")[metric].mean().astype(float)  # one run per seed by construction

    first, second = by_seed(mine), by_seed(theirs)
    seeds = sorted(set(first.index) & set(second.index))
    pairs = pd.DataFrame({"mine": first.loc[seeds].to_numpy(float), "theirs": second.loc[seeds].to_numpy(float)},
                         index=pd.Index(seeds, name="seed"))
    pairs["diff"] = pairs["mine"] - pairs["theirs"]
    return pairs


def seed_run_ids(done: pd.DataFrame, config_id: str) -> pd.Series:
    """The run id of each seed of configuration ``config_id`` among the finished runs ``done``."""
    runs = done.loc[done["config_id"] == config_id, ["seed", "run_id"]]
    return runs.drop_duplicates("seed").set_index("seed")["run_id"]


def partner_pairs(runs: pd.DataFrame, metric: str, kind: str) -> Iterator[tuple[pd.Series, pd.Series, pd.DataFrame]]:
    """For each pre-trained configuration of the labelled ``runs`` (in order) that has a partner of
    ``kind`` (``random-init``, ``pixels``) and shares a finished seed with it on ``metric``: its first
    run's row, its partner's first row and their :func:`seed_pairs`."""
    if metric not in runs.columns:
        return
    done = finished(runs)
    column = PARTNER_COLUMNS[kind]
    firsts = runs.drop_duplicates("config_id").set_index("config_id", drop=False)
    for config_id, row in firsts[firsts["pretrained"].astype(bool)].iterrows():
        partner = row[column]
        if not isinstance(partner, str) or partner not in firsts.index:
            continue
        pairs = seed_pairs(done, config_id, partner, metric)
        if not pairs.empty:
            yield row, firsts.loc[partner], pairs
