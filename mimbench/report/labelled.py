"""A suite's runs named as ``design.json`` names them: the frame every table, figure and comparison reads.

:func:`labelled` joins the summary with the design (:mod:`mimbench.design`): each run gets its
configuration (``configuration``: the design's id; ``config_id``: a readable unique id, see
:mod:`mimbench.report.config_ids`), the label columns of the design's ``full`` view
(:data:`mimbench.labels.LABEL_FIELDS`), the same columns of the other views as ``<view>:<field>``
(:func:`view` swaps them in), and the readable ids of its configuration's partners
(:data:`PARTNER_COLUMNS`). Nothing here names a run: the names are the design's.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from mimbench.design import PARTNER_KINDS, VIEWS, from_summary
from mimbench.errors import ConfigError
from mimbench.labels import LABEL_FIELDS
from mimbench.report.config_ids import readable_ids

#: The readable id of a configuration's baseline partner, by kind.
PARTNER_COLUMNS = {kind: f"{kind.replace('-', '_')}_config_id" for kind in PARTNER_KINDS}
#: The label views other than ``full``, kept as ``<view>:<field>`` columns.
OTHER_VIEWS = tuple(v for v in VIEWS if v != "full")
#: Every column :func:`labelled` adds.
LABEL_COLUMNS = ("config_id", "configuration", *LABEL_FIELDS, *PARTNER_COLUMNS.values(),
                 *(f"{v}:{field}" for v in OTHER_VIEWS for field in LABEL_FIELDS))


def labelled(summary: pd.DataFrame, design: dict[str, Any]) -> pd.DataFrame:
    """A copy of ``summary`` (one row per run) with the :data:`LABEL_COLUMNS` from ``design``; a run
    the design does not name is a :class:`ConfigError`."""
    runs = summary.copy()
    entries = design["runs"]
    missing = [str(r) for r in runs["run_id"] if str(r) not in entries]
    if missing:
        raise ConfigError(f"design.json does not name run {missing[0]} of summary.csv ({len(missing)} runs unnamed); "
                          "`mimbench run` with the suite rewrites both")
    configurations = [entries[str(r)]["configuration"] for r in runs["run_id"]]
    full = {c: entry["label"] for c, entry in design["configurations"].items()}
    order = list(design["configurations"])
    readable = dict(zip(order, readable_ids(order, [full[c] for c in order])))
    runs["configuration"] = configurations
    runs["config_id"] = [readable[c] for c in configurations]
    for v in VIEWS:
        for field in LABEL_FIELDS:
            column = field if v == "full" else f"{v}:{field}"
            runs[column] = [design["configurations"][c]["labels"][v][field] for c in configurations]
    for kind, column in PARTNER_COLUMNS.items():
        partners = [design["configurations"][c]["partners"].get(kind) for c in configurations]
        runs[column] = [readable.get(p) if p else None for p in partners]
    return runs


def view(runs: pd.DataFrame, name: str) -> pd.DataFrame:
    """``runs`` (labelled; a bare summary is labelled by :func:`ensure_labelled`) with the label
    columns of the design's view ``name`` (``full``, ``budget``, ``table``) in place of the full ones."""
    runs = ensure_labelled(runs)
    if name == "full":
        return runs
    return runs.assign(**{field: runs[f"{name}:{field}"] for field in LABEL_FIELDS})


def ensure_labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as it is when it is labelled already, else labelled with the design
    :func:`mimbench.design.from_summary` builds from it (a summary made or filtered in a notebook)."""
    if "config_id" in frame.columns:
        return frame
    return labelled(frame, from_summary(frame))
