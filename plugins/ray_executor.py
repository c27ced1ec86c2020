"""The ``ray`` executor: each run a Ray Core task, on this machine's CPUs and GPUs or on a cluster.

Not Ray Tune: mimbench's run-id store already resumes. Ray places each task where its
``num_cpus``/``num_gpus`` fit (a fractional ``gpus_per_run`` packs several small runs on one
GPU) and retries a task whose worker process or node died (``max_retries``); an exception in
a run is caught by the task itself and fails only that run (``error.txt``), never retried.
"""

from __future__ import annotations

import logging
from typing import Iterator

from mimbench.errors import ConfigError
from mimbench.executors import missing_extra
from mimbench.jobs import Outcome, Task


def _execute(task: Task) -> Outcome:
    return task()


class RayExecutor:
    """Ray Core tasks: several runs at once on this machine's CPUs/GPUs, or on a Ray cluster."""

    in_process = False

    def __init__(self, address: str | None = None, gpus_per_run: float | None = None, cpus_per_run: float = 1.0,
                 max_retries: int = 3):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError(missing_extra("ray", "Ray", "ray")) from None
        if gpus_per_run is not None and gpus_per_run < 0:
            raise ValueError(f"gpus_per_run must be >= 0 (fractions pack runs on one GPU), got {gpus_per_run}")
        if cpus_per_run <= 0:
            raise ValueError(f"cpus_per_run must be > 0, got {cpus_per_run}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.address, self.gpus_per_run, self.cpus_per_run = address, gpus_per_run, cpus_per_run
        self.max_retries = max_retries
        self.threads = max(1, int(cpus_per_run))
        self._pending: dict = {}
        self._started_here = False

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, Outcome]]:
        import ray

        if not tasks:
            return
        if not ray.is_initialized():  # address None: a new instance on this machine (or $RAY_ADDRESS's cluster)
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=False)
            self._started_here = True
        try:
            gpus = self.gpus_per_run
            if gpus is None:
                gpus = 1 if ray.cluster_resources().get("GPU", 0) else 0
            remote = ray.remote(_execute).options(num_cpus=self.cpus_per_run, num_gpus=gpus,
                                                  max_retries=self.max_retries, retry_exceptions=False)
            self._pending = {remote.remote(task): task for task in tasks}
            while self._pending:
                ready, _ = ray.wait(list(self._pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    task = self._pending.pop(ref)
                    yield task, self._outcome(ray, ref)
        except KeyboardInterrupt:
            self.cancel()
            raise
        finally:
            self._pending = {}

    def _outcome(self, ray, ref) -> Outcome:
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:  # the worker or its node died, after every retry
            lines = str(exc).strip().splitlines()
            return Outcome.failed(f"{type(exc).__name__} (after {self.max_retries} retries): "
                                  f"{lines[0] if lines else 'the Ray task failed'}")

    def in_flight(self) -> int:
        return len(self._pending)

    def cancel(self) -> None:
        import ray

        if ray.is_initialized():
            for ref in list(self._pending):
                ray.cancel(ref, force=True)

    def close(self) -> None:
        """Stop the Ray instance this executor started (never one it found running)."""
        if self._started_here:
            import ray

            ray.shutdown()
            self._started_here = False
