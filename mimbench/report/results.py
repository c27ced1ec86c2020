"""A finished suite as the report reads it: :func:`read_results`, and the readers of the run files.

Everything is read through :class:`mimbench.folder.SuiteFolder`: ``summary.csv``, ``columns.json``
(the metric columns the core and the probes declare), ``suite.yaml``, and each run's
``config.json``, ``history.csv`` and ``reconstructions.png``. A run file that cannot be read is
left out and named by :func:`unreadable_runs`, never a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from mimbench.columns import MetricColumn
from mimbench.folder import HISTORY_FILE, SUITE_FILE, SUMMARY_FILE, DamagedFile, SuiteFolder
from mimbench.report import comparisons, reference_names
from mimbench.folder.summary import typed, written_type
from mimbench.design import DESIGN_VERSION, from_summary
from mimbench.report.aggregate import aggregate, load_summary, normalize_summary
from mimbench.report.best import mark_best
from mimbench.report.labelled import labelled, view
from mimbench.specs import FINISHED, Status

#: At most this many configurations in the reconstruction montage (the first seed of each).
MONTAGE_LIMIT = 24


@dataclass
class SuiteResults:
    """A finished suite as the report reads it: the typed summary, the declared metric columns,
    the suite as run, the params shown in columns of their own, the labelled runs and the table
    aggregated over seeds."""

    folder: Path
    name: str
    summary: pd.DataFrame
    declared: list[MetricColumn]
    suite: dict[str, Any]
    sweep: list[str]
    shown: list[str]
    design: dict[str, Any]  # design.json (see mimbench.design)
    runs: pd.DataFrame  # the summary labelled by the design (see mimbench.report.labelled)
    table: pd.DataFrame
    comparisons: pd.DataFrame  # see mimbench.report.comparisons.compare
    outcomes: comparisons.Outcomes  # the runs' per-image outcomes (kept_outcomes), each file read once
    reference: dict[str, Any] | None = None


def typed_summary(suite_dir: Path) -> pd.DataFrame:
    """The suite's summary as :func:`mimbench.load` gives it and ``summary.parquet`` holds it:
    normalised (:func:`~mimbench.report.aggregate.normalize_summary`), each column of its declared
    type (:meth:`~mimbench.folder.SuiteFolder.summary_types`), else of the type it was written
    with in ``summary.csv`` (a float written as 4.0 stays a float)."""
    folder = SuiteFolder(suite_dir)
    written = folder.read_summary()
    types = {column: written_type(written[column]) for column in written.columns}
    return typed(normalize_summary(written), {**types, **folder.summary_types(list(written.columns))})


def kept_outcomes(folder: SuiteFolder) -> comparisons.Outcomes:
    """The suite's per-image outcomes (:data:`mimbench.report.comparisons.Outcomes`) from each
    run's ``predictions.npz``, each file read once; a run without the file, or without the column,
    has none (a damaged file too: the report then compares its seeds' accuracies only)."""
    files: dict[str, dict[str, Any] | None] = {}

    def outcomes(run_id: str, metric: str):
        if run_id not in files:
            try:
                files[run_id] = folder.run(run_id).read_predictions()
            except DamagedFile:
                files[run_id] = None
        kept = files[run_id]
        if kept is None or metric not in kept or "labels" not in kept:
            return None
        return kept[metric] == kept["labels"]

    return outcomes


def read_results(suite_dir: Path, reference: dict[str, Any] | None = None) -> SuiteResults:
    """Read a suite folder; a missing folder or ``summary.csv`` raises :class:`~mimbench.errors.ConfigError`.
    ``reference``: the configuration the others are compared with (``--reference``); None: the
    suite's ``report.reference``."""
    suite_dir = Path(suite_dir)
    summary = load_summary(suite_dir)
    folder = SuiteFolder(suite_dir)
    declared = folder.read_columns(list(summary.columns))
    suite = folder.read_suite()
    sweep = [key for key in (suite.get("sweep") or {}) if key in summary.columns]
    if reference is None:
        reference = suite_reference(suite)
    design = read_design(folder, summary, sweep)
    runs = labelled(summary, design)
    outcomes = kept_outcomes(folder)
    frame = comparisons.compare(runs, declared, reference, outcomes)
    table = aggregate(view(runs, "table"), declared=declared)
    table = mark_best(comparisons.with_intervals(table, frame), runs, declared)
    return SuiteResults(suite_dir, str(suite.get("name") or suite_dir.name), summary, declared, suite, sweep,
                        list(design["shown"]), design, runs, table, frame, outcomes, reference)


def read_design(folder: SuiteFolder, summary: pd.DataFrame, sweep: list[str]) -> dict[str, Any]:
    """The suite's ``design.json``; for a folder written before it existed (or before its version, or
    one whose design does not name every run of the summary), the design :func:`mimbench.design.from_summary` builds from
    ``summary.csv`` by the same rules."""
    try:
        design = folder.read_design()
    except (OSError, ValueError):
        return from_summary(summary, sweep)
    named = design.get("runs")
    if design.get("version") != DESIGN_VERSION or not isinstance(named, dict) \
            or not set(summary["run_id"].astype(str)) <= set(named):
        return from_summary(summary, sweep)
    return design


def labelled_runs(suite_dir: Path) -> pd.DataFrame:
    """The suite's runs (its summary) named by its design: what the report's figures read."""
    return read_results(suite_dir).runs


def suite_reference(suite: dict[str, Any]) -> dict[str, Any] | None:
    """The suite's ``report.reference`` as written in its ``suite.yaml`` (None: none, or unreadable)."""
    report = suite.get("report")
    reference = report.get("reference") if isinstance(report, dict) else None
    if not isinstance(reference, dict) or not reference:
        return None
    reference_names.check_reference(reference, f"{SUITE_FILE}: report.reference")
    return reference


def spec_text(spec: Any) -> str:
    """How the report names a component spec of ``suite.yaml``: ``name(key=value, ...)``."""
    if not isinstance(spec, dict):
        return str(spec)
    params = ", ".join(f"{k}={v}" for k, v in (spec.get("params") or {}).items())
    return f"{spec.get('name')}({params})" if params else str(spec.get("name"))


def unreadable_runs(suite_dir: Path, runs: pd.DataFrame) -> list[str]:
    """A warning for each run of the summary whose ``metrics.json``, ``config.json`` or
    ``history.csv`` cannot be read, naming it: the report shows what ``summary.csv`` recorded."""
    warnings = []
    folder = SuiteFolder(suite_dir)
    for run_id, label in zip(runs["run_id"].astype(str), runs["label"]):
        run = folder.run(run_id)
        reasons = run.unreadable()
        rerun = "; `mimbench run` sets its folder aside and runs it again" if reasons else ""
        try:
            run.history()
        except (OSError, ValueError, TypeError) as exc:
            reasons.append(f"{HISTORY_FILE} cannot be read ({type(exc).__name__}), its loss curve is left out")
        if reasons:
            warnings.append(f"run {run_id} ({label}): {'; '.join(reasons)}; this report shows what "
                            f"{SUMMARY_FILE} recorded for it{rerun}")
    return warnings


def read_configs(suite_dir: Path, run_ids: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Each readable run's ``config.json`` by run id (the unreadable ones are left out)."""
    configs = {}
    folder = SuiteFolder(suite_dir)
    for run_id in run_ids:
        try:
            configs[str(run_id)] = folder.run(str(run_id)).read_config()
        except (OSError, ValueError):
            continue
    return configs


def histories(suite_dir: Path, runs: pd.DataFrame) -> pd.DataFrame:
    """The loss per epoch of the finished and diverged pre-trained runs, from their ``history.csv``:
    columns ``epoch``, ``loss``, ``label``, ``loss_name``, ``target``, ``seed`` (unreadable histories left out)."""
    frames = []
    folder = SuiteFolder(suite_dir)
    for _, row in runs[runs["pretrained"] & runs["status"].isin(FINISHED)].iterrows():
        try:
            history = pd.DataFrame(folder.run(str(row["run_id"])).history())
        except (OSError, ValueError, TypeError):  # ValueError: not UTF-8, or not numbers
            continue
        if {"epoch", "loss"} <= set(history.columns):
            frames.append(history[["epoch", "loss"]].assign(label=row["label"], loss_name=row["loss"],
                                                            target=row.get("target") or "pixels", seed=row["seed"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["epoch", "loss", "label",
                                                                                     "loss_name", "target", "seed"])


def montage_images(suite_dir: Path, runs: pd.DataFrame, picture: str = "reconstructions",
                   baselines: bool = False) -> list[tuple[str, Path]]:
    """(label, the run's ``<picture>.png``) of the first finished seed of each configuration (and of
    each baseline with ``baselines``), in suite order."""
    done = runs[(runs["pretrained"] | baselines) & (runs["status"] == Status.DONE)]
    first = done.sort_values("seed", kind="stable").drop_duplicates("config_id").set_index("config_id")
    return [(f"{first.at[c, 'label']} (seed {first.at[c, 'seed']})",
             SuiteFolder(suite_dir).run(str(first.at[c, "run_id"])).picture(picture))
            for c in list(dict.fromkeys(done["config_id"]))[:MONTAGE_LIMIT]]
