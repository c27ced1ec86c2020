"""The ``submitit`` executor: a SLURM job array, one array task per run, through submitit.

A preempted or timed-out task is requeued and the run continues from its last checkpoint
(``train.checkpoint_every``; its folder has no ``metrics.json`` yet). ``cluster: local`` runs the same tasks as local processes (submitit's
local executor), which is how the tests exercise it without SLURM: at most ``max_parallel``
at a time (default: the CPUs this process may use over each run's torch threads), since
submitit itself starts every local task at once.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal

from mimbench.plugin import ConfigError, Interval, Outcome, Task, missing_extra, run_task


class _Checkpointable:
    """The array's function: runs a task; on preemption submitit calls ``checkpoint`` and
    requeues the same task."""

    def __call__(self, task: Task) -> Outcome:
        return run_task(task)

    def checkpoint(self, task: Task):
        import submitit

        return submitit.helpers.DelayedSubmission(self, task)


class SubmititExecutor:
    """SLURM job arrays through submitit, one array task per run (or local processes)."""

    in_process = False

    def __init__(self, suite_dir: str, cluster: Literal["auto", "slurm", "local"] = "auto",
                 partition: str | None = None, timeout_min: Annotated[int, Interval(ge=1, le=525_600)] = 240,
                 gpus_per_run: Annotated[int, Interval(ge=0, le=64)] = 0,
                 cpus_per_run: Annotated[int, Interval(ge=1, le=4096)] | None = None,
                 mem_gb: Annotated[float, Interval(gt=0, le=65_536)] | None = None,
                 max_parallel: Annotated[int, Interval(ge=1, le=100_000)] | None = None, slurm: dict[str, Any] | None = None,
                 poll_seconds: Annotated[float, Interval(gt=0, le=3600)] = 2.0, threads_per_run: int = 1):
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise ConfigError(missing_extra("executor 'submitit'", "submitit", "slurm")) from None
        # execution.threads_per_run: each run's torch threads; its CPUs unless cpus_per_run says otherwise
        cpus_per_run = threads_per_run if cpus_per_run is None else cpus_per_run
        if timeout_min < 1 or gpus_per_run < 0 or cpus_per_run < 1:
            raise ValueError(f"need timeout_min >= 1, gpus_per_run >= 0, cpus_per_run >= 1; got {timeout_min}, "
                             f"{gpus_per_run}, {cpus_per_run}")
        if max_parallel is not None and max_parallel < 1:
            raise ValueError(f"max_parallel must be >= 1 (or null: all at once on SLURM, as many as the CPUs "
                             f"allow under cluster: local), got {max_parallel}")
        if cluster == "slurm" and shutil.which("sbatch") is None:
            raise ConfigError("executor 'submitit': cluster 'slurm' needs SLURM, and there is no sbatch on PATH "
                              "here; run the driver on a SLURM login node, or set execution.cluster=local to "
                              "run the tasks as local processes")
        self.folder = Path(suite_dir) / ".submitit"
        self.cluster, self.poll_seconds, self.max_parallel = cluster, poll_seconds, max_parallel
        self.parameters: dict[str, Any] = {"timeout_min": timeout_min, "gpus_per_node": gpus_per_run,
                                           "cpus_per_task": cpus_per_run, "tasks_per_node": 1, "nodes": 1,
                                           "name": f"mimbench-{Path(suite_dir).name}"}
        if mem_gb is not None:
            self.parameters["mem_gb"] = mem_gb
        if partition is not None:
            self.parameters["slurm_partition"] = partition
        if max_parallel is not None:
            self.parameters["slurm_array_parallelism"] = max_parallel
        if slurm:
            self.parameters["slurm_additional_parameters"] = dict(slurm)
        self.threads = threads_per_run
        self._pending: list = []
        self._waiting: list[Task] = []  # local tasks not started yet (at most max_parallel run)

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, Outcome]]:
        import submitit

        if not tasks:
            return
        cluster = submitit.AutoExecutor.which() if self.cluster == "auto" else self.cluster
        local = cluster != "slurm"
        # SLURM names each task's folder (%j); submitit's local executor would also create a
        # literal "%j" folder, so its tasks share one folder per driver start (files named by pid)
        folder = self.folder / (time.strftime("local-%Y%m%d-%H%M%S") if local else "%j")
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
        executor.update_parameters(**self.parameters)
        limit = local_parallelism(self.max_parallel, tasks[0].threads or self.threads)
        if local:
            self._waiting = list(tasks)
        else:
            self._pending = list(zip(executor.map_array(_Checkpointable(), tasks), tasks))
        while self._pending or self._waiting:
            while self._waiting and len(self._pending) < limit:
                task = self._waiting.pop(0)
                self._pending.append((executor.submit(_Checkpointable(), task), task))
            done = [job.done() for job, _ in self._pending]
            finished = [pair for pair, ended in zip(self._pending, done) if ended]
            self._pending = [pair for pair, ended in zip(self._pending, done) if not ended]
            for job, task in finished:
                yield task, _outcome(job)
            if self._pending and not finished:
                time.sleep(self.poll_seconds)

    def in_flight(self) -> int:
        return len(self._pending) + len(self._waiting)

    def cancel(self) -> None:
        self._waiting = []
        for job, _ in self._pending:
            job.cancel(check=False)


def local_parallelism(max_parallel: int | None, threads: int | None) -> int:
    """How many local tasks run at once: ``max_parallel``, or the CPUs this process may use
    over each task's torch threads, at least one."""
    if max_parallel is not None:
        return max_parallel
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, threads or 1))


def _outcome(job) -> Outcome:
    try:
        return job.result()
    except Exception as exc:  # the array task died (node failure, out of memory, cancelled)
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        return Outcome.failed(f"SLURM job {job.job_id} failed: {type(exc).__name__}: "
                              f"{lines[-1] if lines else 'no message'} (logs in {job.paths.folder})")
