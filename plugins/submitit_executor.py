"""The ``submitit`` executor: a SLURM job array, one array task per run, through submitit.

A preempted or timed-out task is requeued (the run starts again: its folder has no
``metrics.json``). ``cluster: local`` runs the same array as local processes (submitit's
local executor), which is how the tests exercise it without SLURM.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator, Literal

from mimbench.plugin import ConfigError, Outcome, Task, missing_extra, run_task


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
                 partition: str | None = None, timeout_min: int = 240, gpus_per_run: int = 0, cpus_per_run: int = 4,
                 mem_gb: float | None = None, max_parallel: int | None = None, slurm: dict[str, Any] | None = None,
                 poll_seconds: float = 2.0):
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise ConfigError(missing_extra("executor 'submitit'", "submitit", "slurm")) from None
        if timeout_min < 1 or gpus_per_run < 0 or cpus_per_run < 1:
            raise ValueError(f"need timeout_min >= 1, gpus_per_run >= 0, cpus_per_run >= 1; got {timeout_min}, "
                             f"{gpus_per_run}, {cpus_per_run}")
        self.folder = Path(suite_dir) / ".submitit"
        self.cluster, self.poll_seconds = cluster, poll_seconds
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
        self.threads = cpus_per_run
        self._pending: list = []

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, Outcome]]:
        import submitit

        if not tasks:
            return
        executor = submitit.AutoExecutor(folder=self.folder / "%j",
                                         cluster=None if self.cluster == "auto" else self.cluster)
        executor.update_parameters(**self.parameters)
        jobs = executor.map_array(_Checkpointable(), tasks)
        self._pending = list(zip(jobs, tasks))
        while self._pending:
            still = []
            for job, task in self._pending:
                if job.done():
                    yield task, _outcome(job)
                else:
                    still.append((job, task))
            self._pending = still
            if still:
                time.sleep(self.poll_seconds)

    def in_flight(self) -> int:
        return len(self._pending)

    def cancel(self) -> None:
        for job, _ in self._pending:
            job.cancel(check=False)


def _outcome(job) -> Outcome:
    try:
        return job.result()
    except Exception as exc:  # the array task died (node failure, out of memory, cancelled)
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        return Outcome.failed(f"SLURM job {job.job_id} failed: {type(exc).__name__}: "
                              f"{lines[-1] if lines else 'no message'} (logs in {job.paths.folder})")
