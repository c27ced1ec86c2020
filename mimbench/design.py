"""The plan written down once: ``design.json``, what a suite's runs are, what they are called and
how they pair.

The planner knows every configuration, the label of every run and which baselines each trained run
is compared with; :func:`design` writes that down (the driver saves it in the suite folder as
``design.json`` when it takes the folder), and everything downstream (the console, ``config.json``,
trackers, the report's tables, figures and comparisons) reads it instead of working it out again::

    {"version": 2,
     "shown": ["masker.ratio"],
     "configurations": {"<configuration id>": {
         "label": "vit / patch(ratio=0.4)", "kind": "run", "seeds": [0, 1],
         "components": {"dataset": "fashion-mnist", "encoder": "vit(dim=128)", ...},
         "varying": {"masker.ratio": 0.4},
         "labels": {"full": {"label": ..., "encoder_label": ..., "setup_label": ..., ...},
                    "budget": {...}, "table": {...}},
         "partners": {"random-init": "<configuration id>", "pixels": "<configuration id>"}}},
     "runs": {"<run_id>": {"label": "vit / patch(ratio=0.4) seed=0", "configuration": "<configuration id>",
                           "seed": 0, "kind": "run",
                           "partners": {"random-init": "<run_id>", "pixels": "<run_id>"}}}}

A configuration is a run's config but its seed (its id hashes it the way a run id hashes the whole
config); ``kind`` is ``run`` for a pre-trained configuration, else the baseline's kind
(``random-init``, ``pixels``). Labels come from the one grammar, :mod:`mimbench.labels`, in three
views: ``full`` (every param that varies; a run's label is its configuration's full label and its
seed), ``budget`` (without ``eval.labels_per_class``, for the tables and figures that give the label
budget a column or an axis of its own) and ``table`` (without the params of ``shown``: the swept ones
and the evaluation settings that vary, which ``table.csv`` shows in columns of their own).

A trained run's ``partners`` are its baselines by kind: built the same way from the same seed and
evaluated with the same settings (the ``random-init`` one from the same encoder config); a baseline
has none. A configuration's partners are the configurations of its runs' partners: comparing two
configurations pairs their runs by seed.

:func:`from_summary` builds the same structure from a ``summary.csv`` for folders written before
``design.json`` existed (and for summaries built by hand in a notebook): the same grammar on the
summary's rows, partners matched on the columns the planner pairs on.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Sequence

import pandas as pd

from mimbench.labels import COMPONENTS, LABELS_PER_CLASS, cell_value, job_columns, labels, \
    param_columns, shown_params
from mimbench.specs import BASELINE_KINDS, BaselineSpec, Job, RunSpec, baseline_of, hash_config

#: The layout of design.json (raised when a key changes meaning).
DESIGN_VERSION = 2
#: The baselines a trained run is compared with, by kind.
PARTNER_KINDS = BASELINE_KINDS
#: The label views (see the module's docstring).
VIEWS = ("full", "budget", "table")


def configuration_id(job: Job) -> str:
    """The id of ``job``'s configuration: its config without the seed, hashed as a run id is."""
    return hash_config({key: value for key, value in job.config().items() if key != "seed"})


def partners(run: RunSpec, baseline_ids: set[str]) -> dict[str, str]:
    """The baselines a trained run is compared with, by kind: those among ``baseline_ids`` built
    for it (:func:`~mimbench.specs.baseline_of`)."""
    found = {}
    for kind in PARTNER_KINDS:
        candidate = baseline_of(run, kind)
        if candidate.run_id in baseline_ids:
            found[kind] = candidate.run_id
    return found


def design(jobs: Sequence[Job], sweep: Iterable[str] = ()) -> dict[str, Any]:
    """``design.json``'s content for a plan's ``jobs`` (runs, then baselines); ``sweep``: the suite's
    swept params (``sweep:`` keys), shown in columns of their own."""
    baseline_ids = {job.run_id for job in jobs if isinstance(job, BaselineSpec)}
    rows = pd.DataFrame([job_columns(job) for job in jobs])
    run_partners = [partners(job, baseline_ids) if isinstance(job, RunSpec) else {} for job in jobs]
    return _assemble(rows, [job.run_id for job in jobs], [job.seed for job in jobs],
                     [configuration_id(job) for job in jobs], run_partners, sweep)


def from_summary(summary: pd.DataFrame, sweep: Iterable[str] = ()) -> dict[str, Any]:
    """The design of a suite from its ``summary.csv`` (normalised: ``pretrained`` bool, ``baseline``
    "" for pre-trained runs), for folders written before ``design.json``: the same labels, partners
    matched on seed, dataset, evaluation settings and (``random-init``) encoder and its params."""
    names = [c for c in ("dataset", *COMPONENTS, "pretrained", "baseline") if c in summary.columns]
    rows = summary[names + param_columns(summary)].reset_index(drop=True)
    rows = rows.assign(baseline=[value if isinstance(value, str) and value else None for value in rows["baseline"]])
    keys = [json.dumps([cell_value(v) for v in row], default=str) for row in rows.itertuples(index=False)]
    configurations = [hashlib.sha256(key.encode()).hexdigest()[:16] for key in keys]
    run_ids, seeds = summary["run_id"].astype(str).to_list(), [cell_value(s) for s in summary["seed"]]
    return _assemble(rows, run_ids, seeds, configurations, _matched_partners(rows, run_ids, seeds), sweep)


def _matched_partners(rows: pd.DataFrame, run_ids: list[str], seeds: list[Any]) -> list[dict[str, str]]:
    """Each row's baselines by kind, for :func:`from_summary`."""
    found: list[dict[str, str]] = [{} for _ in run_ids]
    evaluation = [c for c in param_columns(rows) if c.startswith("eval.")]
    for kind in PARTNER_KINDS:
        paired_on = ("dataset",) if kind == "pixels" else ("dataset", "encoder")
        key_columns = [*paired_on, *[c for c in param_columns(rows) if c.split(".", 1)[0] in paired_on], *evaluation]
        keys = [json.dumps([cell_value(v) for v in row] + [seed], default=str)
                for row, seed in zip(rows[key_columns].itertuples(index=False), seeds)]
        baselines = {key: run_id for key, run_id, kind_of in zip(keys, run_ids, rows["baseline"]) if kind_of == kind}
        for i, (key, pretrained) in enumerate(zip(keys, rows["pretrained"])):
            if pretrained and key in baselines:
                found[i][kind] = baselines[key]
    return found


def _assemble(rows: pd.DataFrame, run_ids: list[str], seeds: list[Any], configurations: list[str],
              run_partners: list[dict[str, str]], sweep: Iterable[str]) -> dict[str, Any]:
    shown = shown_params(rows, sweep)
    views = {view: frame.to_dict("records") for view, frame in (
        ("full", labels(rows)), ("budget", labels(rows, hide=(LABELS_PER_CLASS,))), ("table", labels(rows, hide=shown)))}
    in_labels = [p for p in param_columns(rows) if rows[p].map(cell_value).nunique(dropna=True) > 1
                 or (p.startswith("eval.") and rows[p].map(cell_value).nunique(dropna=False) > 1)]
    configuration_of = dict(zip(run_ids, configurations))
    entries: dict[str, dict[str, Any]] = {}
    runs: dict[str, dict[str, Any]] = {}
    for i, (run_id, seed, configuration) in enumerate(zip(run_ids, seeds, configurations)):
        full = views["full"][i]
        kind = "run" if rows["pretrained"].iat[i] else str(rows["baseline"].iat[i])
        if configuration not in entries:  # its first run describes it: the seed is all that differs
            row = rows.iloc[i]
            entries[configuration] = {
                "label": full["label"], "kind": kind, "seeds": [], "components": _components(row),
                "varying": {p: cell_value(row[p]) for p in in_labels
                            if cell_value(row[p]) is not None or p.startswith("eval.")},
                "labels": {view: records[i] for view, records in views.items()}, "partners": {}}
        entry = entries[configuration]
        entry["seeds"].append(seed)
        for kind_of, partner in run_partners[i].items():
            entry["partners"].setdefault(kind_of, configuration_of[partner])
        runs[run_id] = {"label": f"{full['label']} seed={seed}", "configuration": configuration, "seed": seed,
                        "kind": kind, "partners": run_partners[i]}
    return {"version": DESIGN_VERSION, "shown": shown, "configurations": entries, "runs": runs}


def _components(row: pd.Series) -> dict[str, str]:
    """Each component of a configuration row by axis, as ``name(param=value,...)`` (all its params)."""
    parts = {}
    for axis in ("dataset", *COMPONENTS):
        name = row.get(axis)
        if not isinstance(name, str) or not name:
            continue
        params = [f"{c.split('.', 1)[1]}={cell_value(row[c])}" for c in row.index
                  if c.startswith(axis + ".") and cell_value(row[c]) is not None]
        parts[axis] = f"{name}({','.join(params)})" if params else name
    return parts


def run_labels(design_: dict[str, Any]) -> dict[str, str]:
    """run_id -> its label (its configuration's full label and its seed)."""
    return {run_id: run["label"] for run_id, run in design_["runs"].items()}
