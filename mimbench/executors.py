"""Executors: what runs a suite's tasks. ``local`` is here; ``ray`` and ``submitit`` are
plugins (``mimbench_plugins.executors``), and any plugin may add one through
``mimbench_register_executors``.

An executor is built from the suite's ``execution`` params and runs a list of
:class:`~mimbench.jobs.Task`; each task is a picklable callable that executes one job
anywhere (:func:`mimbench.worker.execute`) and returns its :class:`~mimbench.jobs.Outcome`.
A task catches every exception of its own run; what reaches the executor is a system
failure (the worker process or node died), which the executor may retry and otherwise
reports as a failed outcome.
"""

from __future__ import annotations

from typing import Iterator, Protocol, runtime_checkable

from mimbench import errors
from mimbench.jobs import Outcome, Task


@runtime_checkable
class Executor(Protocol):
    """The executor contract (see ``mimbench_register_executors`` in :mod:`mimbench.hookspecs`)."""

    #: True when tasks run in the driver's own process (they share its data cache and its terminal).
    in_process: bool
    #: torch threads each task sets on its worker (None: torch's default).
    threads: int | None

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, Outcome]]:
        """Start every task; yield each with its outcome as it finishes, in any order."""

    def in_flight(self) -> int:
        """Tasks started (or queued on the engine) and not finished yet."""

    def cancel(self) -> None:
        """Stop the tasks still queued or running (on Ctrl-C); their runs stay unfinished."""

    # Optional: ``close()``, called once when the suite is over (e.g. to stop an engine it started).


class LocalExecutor:
    """In this process, one run after another (the default)."""

    in_process = True

    def __init__(self, threads: int | None = None) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = threads  # torch threads of this process while it runs tasks; None: unchanged
        self._running = 0

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, Outcome]]:
        for task in tasks:
            self._running = 1
            try:
                outcome = task()
            finally:
                self._running = 0
            yield task, outcome

    def in_flight(self) -> int:
        return self._running

    def cancel(self) -> None:
        """Nothing to do: Ctrl-C already stopped the run in this process."""


def missing_extra(executor: str, module: str, extra: str) -> str:
    """The one-line error for an executor whose optional dependency is not installed."""
    return errors.missing_extra(f"executor {executor!r}", module, extra)
