"""The ``local`` executor: the tasks in this process, one after another (the default)."""

from __future__ import annotations

from typing import Iterator

from typing import Any

from mimbench.plugin import Outcome, Task, Worker


class LocalExecutor:
    """In this process, one run after another (the default)."""

    in_process = True

    def __init__(self, threads_per_run: int | None = None) -> None:
        self.threads = threads_per_run  # execution.threads_per_run: each task sets them in this process
        self.worker = Worker()
        self._running = 0

    def use_runtime(self, runtime: Any) -> None:
        """Execute the tasks with the driver's runtime (its plugins, device and loaded data)."""
        self.worker = Worker(runtime)

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, Outcome]]:
        for task in tasks:
            self._running = 1
            try:
                outcome = self.worker.run(task)
            finally:
                self._running = 0
            yield task, outcome

    def in_flight(self) -> int:
        return self._running

    def cancel(self) -> None:
        """Nothing to do: Ctrl-C already stopped the run in this process."""
