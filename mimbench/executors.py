"""Executors: what runs a suite's tasks. The built-in ones (``local``, ``ray``, ``submitit``) are
plugins (``mimbench_plugins.executors``), and any plugin may add one through
``mimbench_register_executors``.

An executor is built from the suite's ``execution`` params and runs a list of
:class:`~mimbench.jobs.Task`; a task is plain, picklable data that a worker anywhere executes
with :func:`mimbench.plugin.run_task`, which returns its :class:`~mimbench.jobs.Outcome`.
A task catches every exception of its own run; what reaches the executor is a system
failure (the worker process or node died), which the executor may retry and otherwise
reports as a failed outcome.
"""

from __future__ import annotations

from typing import Iterator, Protocol, runtime_checkable

from mimbench.jobs import Outcome, Task


@runtime_checkable
class Executor(Protocol):
    """The executor contract (see ``mimbench_register_executors`` in :mod:`mimbench.hookspecs`)."""

    #: True when tasks run in the driver's own process (they share its data cache and its terminal).
    in_process: bool
    #: informative: the torch threads of each task (every task carries its own, ``task.threads``).
    threads: int | None

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, Outcome]]:
        """Start every task; yield each with its outcome as it finishes, in any order."""

    def in_flight(self) -> int:
        """Tasks started (or queued on the engine) and not finished yet."""

    def cancel(self) -> None:
        """Stop the tasks still queued or running (on Ctrl-C); their runs stay unfinished."""

    # Optional: ``close()``, called once when the suite is over (e.g. to stop an engine it started).
