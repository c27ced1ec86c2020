"""The driver: hand a planned suite's unfinished jobs to an executor and record what they report.

The driver holds the suite folder's lock while it runs and is the only writer of ``suite.yaml``,
``columns.json`` and ``summary.csv`` (the report is written after it, from those files); workers
write only inside their own run folder. The CLI, the API, the benchmarks and the tests go::

    plan = plan_suite(suite, registry, origin)      # mimbench.planning: jobs, checked before
    data = check_plan(plan, runtime)                # anything trains
    table = run_suite(plan, out, executor, runtime) # here

Runs' events (the ``mimbench_run_started`` / ``_epoch_finished`` / ``_run_finished`` hooks, the
trackers) are sent by the worker that executes each run (:mod:`mimbench.tracking`), not here;
the driver only prepares the trackers once per suite and prints the warnings workers report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from mimbench.columns import MetricColumn
from mimbench.executors import Executor
from mimbench.folder import SUPERSEDED_DIR, RunFolder, SuiteFolder
from mimbench.protocols import capability
from mimbench.folder.ownership import what_runs
from mimbench.folder.summary import summary_row
from mimbench.jobs import Outcome, Task
from mimbench.planning import Plan, declared_columns, param_types
from mimbench.progress import SuiteProgress
from mimbench.reuse import ReuseCheck, ReusePolicy, selected
from mimbench.runtime import Runtime
from mimbench.specs import FINISHED, BaselineSpec, Component, Job, Status
from mimbench.schema import suite_to_yaml
from mimbench.tracking import prepare_trackers

#: The summary table's ``attrs`` key: the finished runs whose new probes could not be added.
PROBES_NOT_ADDED = "probes_not_added"
#: (job, run id of the folder holding its pre-trained encoder or None, probes to add) for each task.
Scheduled = list[tuple[Job, "str | None", list[Component]]]


def run_suite(plan: Plan, out: Path, executor: Executor, runtime: Runtime, device: str = "auto",
              fresh: bool = False, reuse: ReusePolicy = ReusePolicy(), header: str = "") -> pd.DataFrame:
    """Run every unfinished job of ``plan`` into ``out/<suite name>`` on ``executor`` (tasks carry
    ``runtime``'s plugins and ``device``, resolved on each worker), holding the folder's lock;
    returns the summary table. A finished run is reused unless ``reuse`` says to run it again
    (:mod:`mimbench.reuse`). Ctrl-C cancels the tasks in flight, rewrites the summary and
    re-raises KeyboardInterrupt. The ids of finished runs whose new probes could not be added
    (the run stays done without them) are in the table's ``attrs[PROBES_NOT_ADDED]``. ``header``
    is printed (flushed, for a log) once the folder is taken: a driver refused the folder prints
    only why."""
    folder = SuiteFolder(Path(out) / plan.suite.name)
    folder.check_ownership(plan.identity(), fresh)  # before the lock writes into the folder
    with folder.lock() as lock:
        _take_folder(plan, folder, fresh)
        declared = declared_columns(runtime, plan.runs[0].eval.probes) if plan.runs else []
        folder.write_columns(declared, param_types(plan, runtime.registry))
        progress = SuiteProgress(plan.suite.name, plan.labels, executor)
        if header:
            progress.write(header)
        set_aside_damaged(plan, folder, progress)
        notes = review_finished(plan, folder, progress, ReuseCheck(runtime.registry, reuse))
        first, second = schedule(plan, folder, progress, notes)
        if first or second:
            for warning in prepare_trackers(runtime.registry, plan.trackers, folder.path):
                progress.warn(warning)
        not_added: list[str] = []
        use_runtime = capability("executor", executor, "use_runtime")
        if use_runtime is not None and executor.in_process:
            use_runtime(runtime)  # the checks' data stays loaded for the runs
        try:
            for phase in (first, second):
                tasks = [task_for(job, folder, plan, source, missing, runtime, device, executor, lock.token)
                         for job, source, missing in phase
                         if phase is first or _source_finished(folder, job, source, progress)]
                if tasks:
                    not_added += _run_tasks(tasks, executor, plan, folder, declared, progress)
        except KeyboardInterrupt:
            executor.cancel()
            folder.write_summary(plan.jobs, declared)
            progress.close()
            raise
        finally:
            close = capability("executor", executor, "close")
            if close is not None:
                close()
        progress.close()
        table = folder.write_summary(plan.jobs, declared)
        table.attrs[PROBES_NOT_ADDED] = not_added
        return table


def _take_folder(plan: Plan, folder: SuiteFolder, fresh: bool) -> None:
    """Under the lock: check the folder again (another driver may have been first), empty it for
    ``--fresh``, mark it as the suite's and write ``suite.yaml`` and ``design.json``."""
    shared = folder.check_ownership(plan.identity(), fresh)
    if shared:
        tqdm.write(f"note: {shared}")
    if fresh:
        folder.empty()
    folder.check_run_folders([job.run_id for job in plan.jobs])
    folder.claim(plan.identity())
    _write_suite_file(folder, plan, noted=bool(shared))
    folder.write_design(plan.design)


def _run_tasks(tasks: list[Task], executor: Executor, plan: Plan, folder: SuiteFolder,
               declared: list[MetricColumn], progress: SuiteProgress) -> list[str]:
    """One phase: every task on the executor, the summary rewritten as each one ends (from the
    rows read at the phase's start, each task's from its outcome: the record the worker wrote, or
    for a failure what its folder says); returns the finished runs whose probe addition failed."""
    not_added = []
    rows = folder.summary_rows(plan.jobs)
    for task, outcome in executor.run(tasks):
        if task.probes_to_add and outcome.status == Status.FAILED:
            not_added.append(task.job.run_id)
        run = folder.run(task.job.run_id)
        _record_failure(run, task, outcome)
        rows[task.job.run_id] = summary_row(task.job, run, outcome.record if outcome.status in FINISHED else None)
        folder.write_summary(plan.jobs, declared, rows)
        progress.finished(task, outcome, declared)
        for warning in outcome.warnings:
            progress.warn(warning)
    return not_added


def set_aside_damaged(plan: Plan, folder: SuiteFolder, progress: SuiteProgress) -> None:
    """Move every run folder of ``plan`` whose ``metrics.json`` or ``config.json`` cannot be read to
    ``damaged/`` (nothing is deleted), saying so in one line: the run is then unfinished and runs again."""
    for job in plan.jobs:
        reasons = folder.run(job.run_id).damage()
        if not reasons:
            continue
        moved = folder.set_aside(job.run_id)
        progress.write(f"warning: run {job.run_id} ({plan.labels[job.run_id]}): {'; '.join(reasons)}; its folder "
                       f"was moved to {moved.relative_to(folder.path)} and the run starts again")


def review_finished(plan: Plan, folder: SuiteFolder, progress: SuiteProgress, check: ReuseCheck) -> dict[str, str]:
    """Move the finished runs to run again to ``superseded/`` (saying why); return the notes of
    those kept (their code changed), by run id. Warns once when runs kept and runs to come would
    have different CPU thread counts."""
    notes: dict[str, str] = {}
    kept_threads: set[int] = set()
    unfinished = 0
    for job in plan.jobs:
        run = folder.run(job.run_id)
        if run.finished_record() is None:
            unfinished += 1
            continue
        config = finished_config(run)
        verdict = check.verdict(job, config.get("code"))
        if verdict.again:
            moved = folder.set_aside(job.run_id, into=SUPERSEDED_DIR)
            progress.write(f"{progress.line_start(job)}  runs again ({verdict.note}); its earlier folder is in "
                           f"{moved.relative_to(folder.path)}")
            unfinished += 1
            continue
        if verdict.note:
            progress.warn(f"run {job.run_id} ({plan.labels[job.run_id]}): {verdict.note}")
            notes[job.run_id] = "its code changed since it ran (see the warning)"
        threads = config.get("threads")
        if isinstance(threads, int) and str(config.get("device", "")).startswith("cpu"):
            kept_threads.add(threads)
    for selector in check.policy.rerun:
        if not any(selected(job, selector) for job in plan.jobs):
            progress.warn(f"--rerun {', '.join(f'{k}={v}' for k, v in selector.items())}: no run of this suite matches")
    other = sorted(kept_threads - {plan.threads})
    if unfinished and other:
        progress.warn(f"finished runs of this suite ran on the CPU with {', '.join(map(str, other))} torch thread(s), "
                      f"the runs to come get {plan.threads} (execution.threads_per_run): CPU results are bit-identical "
                      f"only at the same count; --set execution.threads_per_run={other[0]} matches them")
    return notes


def finished_config(run: RunFolder) -> dict[str, Any]:
    """A finished run's ``config.json`` ({} when it cannot be read: nothing recorded to compare)."""
    try:
        return run.read_config()
    except (OSError, ValueError):
        return {}


def schedule(plan: Plan, folder: SuiteFolder, progress: SuiteProgress,
             notes: dict[str, str] | None = None) -> tuple[Scheduled, Scheduled]:
    """Split the unfinished jobs into two phases: first every baseline, every run that
    pre-trains (one per pre-training id) and every run whose encoder is already trained; then the
    runs that evaluate an encoder a first-phase run is training (same pre-training, another
    ``eval.labels_per_class``). Finished jobs are skipped (or get their missing probes), with
    their ``notes``."""
    trained = _finished_pretraining(plan, folder)
    training_now: dict[str, str] = {}
    first: Scheduled = []
    second: Scheduled = []
    for job in plan.jobs:
        run = folder.run(job.run_id)
        finished = run.finished_record()
        if finished is not None:
            missing = missing_probes(run, job, finished)
            if missing:
                first.append((job, None, missing))
            else:
                progress.skipped(job, (notes or {}).get(job.run_id, ""))
        elif isinstance(job, BaselineSpec):
            first.append((job, None, []))
        elif job.pretraining_id in trained:
            first.append((job, trained[job.pretraining_id], []))
        elif job.pretraining_id in training_now:
            second.append((job, training_now[job.pretraining_id], []))
        else:
            training_now[job.pretraining_id] = job.run_id
            first.append((job, None, []))
    return first, second


def missing_probes(run: RunFolder, job: Job, record: dict[str, Any]) -> list[Component]:
    """The probes ``job`` asks for that its finished folder has not run (none if it did not end done)."""
    if record.get("status") != Status.DONE:
        return []
    done = run.probes_run()
    return [spec for spec in job.eval.probes if spec.to_json() not in done]


def _finished_pretraining(plan: Plan, folder: SuiteFolder) -> dict[str, str]:
    """Pre-training id -> the run folder holding that finished pre-training (its encoder.pt), for
    the plan's runs, including one left by an earlier version of the suite (``runs/<id>``)."""
    trained: dict[str, str] = {}
    for job in plan.runs:
        for candidate in (job.run_id, job.pretraining_id):
            run = folder.run(candidate)
            record = run.finished_record()
            if record is None or record.get("pretrained_in") or not run.has_encoder():
                continue
            trained.setdefault(job.pretraining_id, candidate)
    return trained


def _source_finished(folder: SuiteFolder, job: Job, source: str | None, progress: SuiteProgress) -> bool:
    """Whether the run that pre-trains ``job``'s encoder finished; if not, ``job`` fails saying so."""
    if source is None or folder.run(source).finished_record() is not None:
        return True
    error = f"not evaluated: run {source}, which pre-trains its encoder, did not finish (see its error.txt)"
    folder.run(job.run_id).write_error(error)
    progress.failed_before_start(job, error)
    return False


def task_for(job: Job, folder: SuiteFolder, plan: Plan, source: str | None, missing: list[Component],
             runtime: Runtime, device: str, executor: Executor, lock_token: str = "") -> Task:
    """The task an executor runs for ``job``: plain data, picklable; ``lock_token``: the driver's
    (:attr:`~mimbench.folder.SuiteLock.token`), which its worker checks before each write."""
    return Task(job, str(folder.path), runtime.plugins, device, plan.threads, executor.in_process,
                tuple(missing), plan.labels[job.run_id], source, plan.trackers, lock_token)


def _write_suite_file(folder: SuiteFolder, plan: Plan, noted: bool = False) -> None:
    text = suite_to_yaml(plan.suite)
    try:
        previous = folder.previous_suite_yaml()
    except (OSError, ValueError) as exc:  # the driver's own file: rewritten from the suite
        tqdm.write(f"note: {folder.path / 'suite.yaml'} could not be read "
                   f"({getattr(exc, 'strerror', None) or 'not UTF-8'}); rewritten")
        previous = None
    if not noted and previous is not None and what_runs(previous) != what_runs(text):
        tqdm.write(f"note: {folder.path / 'suite.yaml'} held another version of suite {plan.suite.name!r}; "
                   f"summary.csv will list this version's {len(plan.jobs)} runs (earlier runs stay in "
                   f"{folder.path / 'runs'}; use --set name=... to keep versions apart)")
    folder.write_suite_yaml(text)


def _record_failure(run: RunFolder, task: Task, outcome: Outcome) -> None:
    """A task that failed without writing its error (its worker died, or could not see the
    folder): the driver records the error, so that the summary shows the run as failed."""
    if outcome.status != Status.FAILED or task.probes_to_add:
        return
    if run.has_error() or run.has_metrics():
        return
    run.write_error(outcome.record.get("error", "the run failed"))
