"""The driver: plan a suite, check it, hand its unfinished jobs to an executor, record results.

The driver is the only writer of ``suite.yaml``, ``columns.json`` and ``summary.csv`` (the
report is written after it, from those files); workers write only inside their own run
folder. It holds the suite folder's lock while it runs. The CLI, the benchmarks and the
tests all go through these functions::

    plan = plan_suite(suite, registry)              # jobs: runs, then baselines
    check_trackers(plan, registry, suite_dir)      # exit 2 material, before any training...
    data = check_plan(plan, registry, plugins, device, executor)  # ...and the data, each component built once
    table = run_suite(plan, out, executor, plugins, registry)

Runs' events (the ``mimbench_run_started`` / ``_epoch_finished`` / ``_run_finished`` hooks, the
trackers) are sent by the worker that executes each run (:mod:`mimbench.tracking`), not here;
the driver only prepares the trackers once per suite and prints the warnings workers report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from mimbench import columns, ownership, store
from mimbench.columns import MetricColumn
from mimbench.errors import ConfigError
from mimbench.executors import Executor
from mimbench.jobs import BaselineJob, Job, Outcome, PluginSources, RunJob, Task, canonical_json
from mimbench.lock import SuiteLock
from mimbench.ownership import MAPPING_ORIGIN, SuiteIdentity
from mimbench.probing import check_block_index
from mimbench.registry import Registry
from mimbench.expansion import expand, expand_baselines, run_labels
from mimbench.suite import Suite, suite_to_yaml
from mimbench.tracking import build_trackers, prepare_trackers
from mimbench.worker import SuiteData, resolve_device, suite_data


@dataclass(frozen=True)
class Plan:
    """A suite expanded into jobs: its runs, then its baselines, with a readable label each, and
    the suite's trackers (resolved specs, ``{"name", "params"}``)."""

    suite: Suite
    runs: list[RunJob]
    baselines: list[BaselineJob]
    labels: dict[str, str]
    trackers: tuple[dict[str, Any], ...] = ()
    origin: str = MAPPING_ORIGIN  # where the suite came from (see mimbench.ownership)

    @property
    def jobs(self) -> list[Job]:
        return [*self.runs, *self.baselines]


def plan_suite(suite: Suite, registry: Registry, origin: str = MAPPING_ORIGIN) -> Plan:
    """``origin``: where the suite came from (:func:`mimbench.ownership.origin_of`), recorded in the
    suite folder's marker."""
    runs = expand(suite, registry)
    baselines = expand_baselines(suite, runs)
    trackers = tuple({"name": t.name, "params": registry.resolve_params("tracker", t.name, t.params)}
                     for t in suite.trackers)
    return Plan(suite, runs, baselines, run_labels([*runs, *baselines]), trackers, origin)


def identity(plan: Plan) -> SuiteIdentity:
    """What the plan's suite folder must belong to (see :mod:`mimbench.ownership`)."""
    return SuiteIdentity(plan.suite.name, plan.origin, suite_to_yaml(plan.suite))


def check_run_folders(plan: Plan, suite_dir: Path) -> None:
    """Every folder the plan's runs write, move or delete stays inside the suite folder (no
    symbolic link leads out of it), else :class:`ConfigError` before anything is touched."""
    for name in ("runs", store.DAMAGED_DIR):
        ownership.check_inside(suite_dir, suite_dir / name)
    runs = suite_dir / "runs"
    if runs.is_dir():
        for job in plan.jobs:
            folder = store.run_path(suite_dir, job.run_id)
            if folder.is_symlink():
                ownership.check_inside(suite_dir, folder)


def check_trackers(plan: Plan, registry: Registry, suite_dir: Path) -> None:
    """Build each of the suite's trackers once, so that bad input fails now (exit 2), not in the workers."""
    build_trackers(registry, plan.trackers, suite_dir)


def build_executor(registry: Registry, suite: Suite, suite_dir: Path) -> Executor:
    """The suite's ``execution.executor`` with its params (a missing extra is a ConfigError)."""
    spec = suite.execution
    return registry.build("executor", spec.executor, spec.params(), suite_dir=str(suite_dir))


def declared_columns(registry: Registry, suite_eval: dict[str, Any]) -> list[MetricColumn]:
    """The core's reconstruction columns, then each probe's declared ``metric_columns()``."""
    declared = [list(columns.RECONSTRUCTION_COLUMNS)]
    for spec in suite_eval["probes"]:
        probe = registry.build("probe", spec["name"], spec["params"])
        declare = getattr(probe, "metric_columns", None)
        if callable(declare):
            declared.append(list(declare()))
    return columns.merge(*declared)


def check_plan(plan: Plan, registry: Registry, plugins: PluginSources, device: str, executor: Executor) -> SuiteData:
    """Load the data and build every distinct component once, so that bad input fails now
    (ConfigError, exit 2), not mid-suite. With an executor that runs elsewhere, the checks run on
    this machine's CPU and the device is resolved on each worker."""
    if executor.in_process:
        torch_device = resolve_device(device)
    else:
        torch_device = torch.device("cpu")
        if device != "auto":
            try:
                torch.device(device)
            except RuntimeError:
                raise ConfigError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    data = suite_data(plugins, plan.runs[0].data, torch_device)
    validate(registry, plan.runs, data)
    _check_label_counts(plan, data)
    check_reference(plan)
    return data


def check_reference(plan: Plan) -> None:
    """The suite's ``report.reference`` must name the values of at least one of its runs."""
    reference = plan.suite.report.reference
    if not reference or any(_has_values(job.config, reference) for job in plan.runs):
        return
    named = ", ".join(f"{k}: {v}" for k, v in reference.items())
    raise ConfigError(f"report.reference {{{named}}}: no run of this suite has it (the report compares every "
                      f"configuration with the one that does)")


def _has_values(config: dict[str, Any], reference: dict[str, Any]) -> bool:
    for key, value in reference.items():
        axis, _, param = key.partition(".")
        spec = config.get(axis)
        if not isinstance(spec, dict):
            return False
        if axis == "train":
            actual = spec.get(param)
        else:
            actual = spec.get("params", {}).get(param) if param else spec.get("name")
        if actual != value:
            return False
    return True


def _check_label_counts(plan: Plan, data: SuiteData) -> None:
    """Every ``eval.labels_per_class`` must fit in each class of the labelled train split."""
    counts = sorted({job.config["eval"].get("labels_per_class") for job in plan.jobs} - {None})
    if not counts or not plan.runs[0].config["eval"]["probes"]:
        return
    labels = data.probe_train.all_labels().cpu()
    smallest = int(labels.bincount()[labels.unique()].min())
    if counts[-1] > smallest:
        raise ConfigError(f"eval.labels_per_class {counts[-1]}: the labelled train split has only {smallest} "
                          f"images in its smallest class (allowed: 1..{smallest}, or null for every label)")


def validate(registry: Registry, runs: list[RunJob], data: SuiteData) -> None:
    """Build every distinct component once, so bad params fail now (exit 2), not mid-suite.

    Maskers are also called once on a small batch: a ValueError there is a bad
    configuration (e.g. an image size the mask grid does not divide). Anything else a
    masker does wrong (another exception, a mask of the wrong shape) fails its own runs
    later, with error.txt, and not the whole suite.
    """
    if runs and runs[0].config["train"]["batch_size"] > len(data.train):
        raise ConfigError(f"train.batch_size {runs[0].config['train']['batch_size']} is larger than the "
                          f"train split ({len(data.train)} images)")
    size, channels = data.train.image_size, data.train.channels
    probe = torch.zeros(2, channels, size, size, device=data.normalize.mean.device)
    # Each distinct component once (a sweep of thousands of runs has few of each); a decoder
    # depends on its encoder's out_dim and stride. Only those are kept, not the modules.
    encoders: dict[str, tuple[int, int]] = {}
    built: set[tuple[str, ...]] = set()
    for run in runs:
        config = run.config
        encoder_key = canonical_json([config["image_size"], config["encoder"]])
        if encoder_key not in encoders:
            encoder = registry.build("encoder", config["encoder"]["name"], config["encoder"]["params"],
                                     in_channels=channels, image_size=config["image_size"])
            _check_probe_layers(encoder, config, probe)
            encoders[encoder_key] = (encoder.out_dim, encoder.stride)
        out_dim, stride = encoders[encoder_key]
        decoder_key = ("decoder", canonical_json([config["image_size"], config["decoder"], out_dim, stride]))
        if decoder_key not in built:
            registry.build("decoder", config["decoder"]["name"], config["decoder"]["params"], in_dim=out_dim,
                           stride=stride, out_channels=channels, image_size=config["image_size"])
            built.add(decoder_key)
        for kind in ("masker", "loss"):
            key = (kind, canonical_json(config[kind]))
            if key in built:
                continue
            component = registry.build(kind, config[kind]["name"], config[kind]["params"])
            if kind == "masker":
                _try_masker(component, probe, f"masker {config['masker']['name']!r}")
            built.add(key)
    reference = runs[0].config["eval"]["reference_masker"] if runs else None
    if reference is not None:
        masker = registry.build("masker", reference["name"], reference["params"])
        _try_masker(masker, probe, f"eval.reference_masker {reference['name']!r}")
    for spec in runs[0].config["eval"]["probes"] if runs else []:
        registry.build("probe", spec["name"], spec["params"])


def _check_probe_layers(encoder: torch.nn.Module, config: dict[str, Any], images: torch.Tensor) -> None:
    """A probe's block index must exist in every encoder it will read (checked before training)."""
    indices = [(spec["name"], spec["params"]["layer"]) for spec in config["eval"]["probes"]
               if isinstance(spec["params"].get("layer"), int)]
    if not indices or not callable(getattr(encoder, "blocks", None)):
        return
    with torch.no_grad():
        count = len(encoder.to(images.device).eval().blocks(images))
    for name, layer in indices:
        try:
            check_block_index(layer, count, f"encoder {config['encoder']['name']!r}")
        except ValueError as exc:
            raise ConfigError(f"probe {name!r}: {exc}") from None


def _try_masker(masker, probe: torch.Tensor, what: str) -> None:
    try:
        masker(probe)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    except Exception:  # not a configuration problem: the runs that use it will fail and say why
        pass


def missing_probes(folder: Path, job: Job, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The probes ``job`` asks for that its finished folder has not run (none if it did not end done)."""
    if record.get("status") != "done":
        return []
    try:
        done = store.read_config(folder).get("eval", {}).get("probes", [])
    except (OSError, ValueError):
        done = []
    return [spec for spec in job.config["eval"]["probes"] if spec not in done]


def outcome_text(record: dict[str, Any], declared: list[MetricColumn]) -> str:
    """The status and the declared headline metrics of a record, for the run's console line."""
    shown = [f"{c.name} {record[c.key]:.{c.digits}f}" for c in declared
             if c.headline and isinstance(record.get(c.key), (int, float))]
    return "  ".join([record.get("status", "failed"), *shown])


def run_suite(plan: Plan, out: Path, executor: Executor, plugins: PluginSources, registry: Registry,
              device: str = "auto", fresh: bool = False) -> pd.DataFrame:
    """Run every unfinished job of ``plan`` into ``out/<suite name>`` on ``executor``, holding the
    folder's lock; returns the summary table. Ctrl-C cancels the tasks in flight, rewrites the
    summary and re-raises KeyboardInterrupt."""
    suite = plan.suite
    suite_dir = Path(out) / suite.name
    ownership.check_ownership(suite_dir, identity(plan), fresh)  # before the lock writes into the folder
    with SuiteLock(suite_dir):
        shared = ownership.check_ownership(suite_dir, identity(plan), fresh)  # another driver may have been first
        if shared:
            tqdm.write(f"note: {shared}")
        if fresh:
            ownership.empty_folder(suite_dir)
        check_run_folders(plan, suite_dir)
        ownership.claim(suite_dir, identity(plan))
        _write_suite_file(suite_dir, suite, len(plan.jobs), noted=bool(shared))
        declared = declared_columns(registry, plan.runs[0].config["eval"]) if plan.runs else []
        store.write_columns(suite_dir, declared)
        progress = SuiteProgress(plan, executor)
        set_aside_damaged(plan, suite_dir, progress)
        first, second = schedule(plan, suite_dir, progress)
        if first or second:
            for warning in prepare_trackers(registry, plan.trackers, suite_dir):
                progress.write(f"warning: {warning}")
        options = dict(plugins=plugins, device=device, threads=executor.threads, show_progress=executor.in_process,
                       trackers=tuple(canonical_json(spec) for spec in plan.trackers))
        try:
            for phase in (first, second):
                tasks = [task_for(job, suite_dir, plan, source, missing, **options) for job, source, missing in phase
                         if phase is first or _source_finished(suite_dir, job, source, progress)]
                if not tasks:
                    continue
                for task, outcome in executor.run(tasks):
                    _record_failure(suite_dir, task, outcome)
                    store.write_summary(suite_dir, plan.jobs, declared)
                    progress.finished(task, outcome, outcome_text(outcome.record, declared))
                    for warning in outcome.warnings:
                        progress.write(f"warning: {warning}")
        except KeyboardInterrupt:
            executor.cancel()
            store.write_summary(suite_dir, plan.jobs, declared)
            progress.close()
            raise
        finally:
            close = getattr(executor, "close", None)
            if callable(close):
                close()
        progress.close()
        return store.write_summary(suite_dir, plan.jobs, declared)


def set_aside_damaged(plan: Plan, suite_dir: Path, progress: "SuiteProgress") -> None:
    """Move every run folder of ``plan`` whose ``metrics.json`` or ``config.json`` cannot be read to
    ``damaged/`` (nothing is deleted), saying so in one line: the run is then unfinished and runs again."""
    for job in plan.jobs:
        reasons = store.damage(store.run_path(suite_dir, job.run_id))
        if not reasons:
            continue
        moved = store.set_aside(suite_dir, job.run_id)
        progress.write(f"warning: run {job.run_id} ({plan.labels[job.run_id]}): {'; '.join(reasons)}; its folder "
                       f"was moved to {moved.relative_to(suite_dir)} and the run starts again")


#: (job, run id of the folder holding its pre-trained encoder or None, probes to add) for each task.
Scheduled = list[tuple[Job, "str | None", list[dict[str, Any]]]]


def schedule(plan: Plan, suite_dir: Path, progress: "SuiteProgress") -> tuple[Scheduled, Scheduled]:
    """Split the unfinished jobs into two phases: first every baseline, every run that
    pre-trains (one per pre-training id) and every run whose encoder is already trained; then the
    runs that evaluate an encoder a first-phase run is training (same pre-training, another
    ``eval.labels_per_class``). Finished jobs are skipped (or get their missing probes)."""
    trained = _finished_pretraining(plan, suite_dir)
    training_now: dict[str, str] = {}
    first: Scheduled = []
    second: Scheduled = []
    for job in plan.jobs:
        folder = store.run_path(suite_dir, job.run_id)
        finished = store.finished_record(folder)
        if finished is not None:
            missing = missing_probes(folder, job, finished)
            if missing:
                first.append((job, None, missing))
            else:
                progress.skipped(job)
            continue
        if isinstance(job, BaselineJob):
            first.append((job, None, []))
        elif job.pretraining_id in trained:
            first.append((job, trained[job.pretraining_id], []))
        elif job.pretraining_id in training_now:
            second.append((job, training_now[job.pretraining_id], []))
        else:
            training_now[job.pretraining_id] = job.run_id
            first.append((job, None, []))
    return first, second


def _finished_pretraining(plan: Plan, suite_dir: Path) -> dict[str, str]:
    """Pre-training id -> the run folder holding that finished pre-training (its encoder.pt), for
    the plan's runs, including one left by an earlier version of the suite (``runs/<id>``)."""
    trained: dict[str, str] = {}
    for job in plan.runs:
        for candidate in (job.run_id, job.pretraining_id):
            folder = store.run_path(suite_dir, candidate)
            record = store.finished_record(folder)
            if record is None or record.get("pretrained_in") or not (folder / store.ENCODER_FILE).exists():
                continue
            trained.setdefault(job.pretraining_id, candidate)
    return trained


def _source_finished(suite_dir: Path, job: Job, source: str | None, progress: "SuiteProgress") -> bool:
    """Whether the run that pre-trains ``job``'s encoder finished; if not, ``job`` fails saying so."""
    if source is None or store.finished_record(store.run_path(suite_dir, source)) is not None:
        return True
    error = f"not evaluated: run {source}, which pre-trains its encoder, did not finish (see its error.txt)"
    store.write_atomic(store.run_path(suite_dir, job.run_id, store.ERROR_FILE), error + "\n")
    progress.write(f"{job.run_id}  {progress.labels[job.run_id]:<{progress.width}}        -  FAILED: {error}")
    progress.counts["failed"] += 1
    progress.bar.update(1)
    return False


def task_for(job: Job, suite_dir: Path, plan: Plan, source: str | None, missing: list[dict[str, Any]],
             plugins: PluginSources, device: str, threads: int | None, show_progress: bool,
             trackers: tuple[str, ...] = ()) -> Task:
    return Task(job, str(suite_dir), plugins, device, threads, show_progress,
                tuple(canonical_json(spec) for spec in missing), plan.labels[job.run_id], source, trackers)


def _write_suite_file(suite_dir: Path, suite: Suite, count: int, noted: bool = False) -> None:
    previous = suite_dir / store.SUITE_FILE
    text = suite_to_yaml(suite)
    try:
        previous_text = previous.read_text() if previous.exists() else None
    except (OSError, ValueError) as exc:  # the driver's own file: rewritten from the suite
        tqdm.write(f"note: {previous} could not be read ({getattr(exc, 'strerror', None) or 'not UTF-8'}); rewritten")
        previous_text = None
    if not noted and previous_text is not None and ownership.what_runs(previous_text) != ownership.what_runs(text):
        tqdm.write(f"note: {previous} held another version of suite {suite.name!r}; summary.csv will list "
                   f"this version's {count} runs (earlier runs stay in {suite_dir / 'runs'}; "
                   f"use --set name=... to keep versions apart)")
    store.write_atomic(previous, text)


def _record_failure(suite_dir: Path, task: Task, outcome: Outcome) -> None:
    """A task that failed without writing its error (its worker died, or could not see the
    folder): the driver records the error, so that the summary shows the run as failed."""
    if outcome.status != "failed" or task.probes_to_add:
        return
    folder = store.run_path(suite_dir, task.job.run_id)
    if (folder / store.ERROR_FILE).exists() or (folder / store.METRICS_FILE).exists():
        return
    store.write_atomic(folder / store.ERROR_FILE, f"{outcome.record.get('error', 'the run failed')}\n")


class SuiteProgress:
    """The suite's bar (runs in flight, done, failed) on a terminal, and one line per run
    everywhere, whatever executor runs them."""

    def __init__(self, plan: Plan, executor: Executor):
        self.labels, self.executor = plan.labels, executor
        self.width = max((len(label) for label in plan.labels.values()), default=0)
        self.counts = {"done": 0, "failed": 0, "skipped": 0}
        self.bar = tqdm(total=len(plan.jobs), desc=f"suite {plan.suite.name}", unit="run", dynamic_ncols=True,
                        disable=None)
        self.started = time.perf_counter()

    def write(self, line: str) -> None:
        self.bar.write(line)

    def skipped(self, job: Job) -> None:
        self.counts["skipped"] += 1
        self.bar.update(1)
        self.write(f"{job.run_id}  {self.labels[job.run_id]:<{self.width}}  already finished, skipped")

    def finished(self, task: Task, outcome: Outcome, text: str) -> None:
        self.counts["failed" if outcome.status == "failed" else "done"] += 1
        self.bar.update(1)
        self.bar.set_postfix(in_flight=self.executor.in_flight(), done=self.counts["done"],
                             failed=self.counts["failed"], refresh=False)
        label = f"{task.job.run_id}  {self.labels[task.job.run_id]:<{self.width}}"
        if task.probes_to_add:
            self.write(f"{label}  {outcome.note}")
            return
        seconds = outcome.record.get("wall_seconds")
        timing = f"{seconds:6.1f}s" if isinstance(seconds, (int, float)) else "      -"
        if outcome.status == "failed":
            text = f"FAILED: {outcome.record.get('error', '')}"
        self.write(f"{label}  {timing}  {text}")

    def close(self) -> None:
        self.bar.close()
