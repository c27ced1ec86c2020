"""Tasks: one job (a :mod:`mimbench.specs` spec) as an executor runs it, and what it reports back.

A :class:`Task` is plain, picklable data: the job's spec, the suite folder, the plugin sources a
worker must load, the device and a few settings. A worker in another process or on another
machine runs it with :func:`mimbench.worker.run_task` and writes only inside its own run folder;
it reports an :class:`Outcome`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimbench.specs import Component, Job, Status

__all__ = ["Outcome", "PluginSources", "Task"]


@dataclass(frozen=True)
class PluginSources:
    """The plugins a worker must load to rebuild the driver's registry: installed entry points
    (found again on the worker) plus these files and modules, in order (``--plugin`` first,
    then ``$MIMBENCH_PLUGINS`` as the driver saw it). Files are absolute paths."""

    specs: tuple[str, ...] = ()

    @classmethod
    def from_cli(cls, plugin_specs: tuple[str, ...] | list[str] = (), env: str | None = None) -> "PluginSources":
        """``--plugin`` values and the ``MIMBENCH_PLUGINS`` value (read from the environment when None)."""
        env = os.environ.get("MIMBENCH_PLUGINS", "") if env is None else env
        specs = [*plugin_specs, *(s for s in env.split(os.pathsep) if s.strip())]
        return cls(tuple(dict.fromkeys(_absolute_if_file(s) for s in specs)))


def _absolute_if_file(spec: str) -> str:
    return str(Path(spec).resolve()) if spec.endswith(".py") or Path(spec).exists() else spec


@dataclass(frozen=True)
class Task:
    """One job as an executor runs it: :func:`mimbench.worker.run_task` ``(task)`` returns an
    :class:`Outcome`. ``probes_to_add`` non-empty means the run is finished and only these
    probes are run on its saved encoder (``eval.probes`` grew)."""

    job: Job
    suite_dir: str
    plugins: PluginSources
    device: str = "auto"  # auto | cpu | cuda | cuda:N, resolved on the worker
    threads: int | None = None  # torch threads on the worker; None: torch's default
    show_progress: bool = True  # a per-step bar (on a terminal only); off in remote workers
    probes_to_add: tuple[Component, ...] = ()
    label: str = ""  # a readable name of the job, for bars and messages
    # a run whose encoder was pre-trained by another run of the suite (same pre-training,
    # other labels_per_class): that run's id; the task only evaluates
    pretrained_in: str | None = None
    trackers: tuple[Component, ...] = ()  # the suite's trackers, resolved
    # the driver's lock token (mimbench.folder.lock): the worker checks that the driver still holds
    # the suite folder before each write, and stops without writing once it does not; "": unchecked
    lock_token: str = ""



@dataclass(frozen=True)
class Outcome:
    """What a worker reports for one task: the run's record (``metrics.json``'s content, or a
    failed record with ``error``), a note for the console (e.g. "added probes knn") and
    warnings (a tracker or a hook that failed), which the driver prints."""

    record: dict[str, Any]
    note: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def status(self) -> Status:
        try:
            return Status(self.record.get("status", Status.FAILED))
        except ValueError:
            return Status.FAILED

    @classmethod
    def failed(cls, error: str) -> "Outcome":
        return cls({"status": Status.FAILED.value, "error": error})
