"""Jobs: what one run of a suite is, as frozen, picklable data.

A suite is planned once (:func:`mimbench.expansion.expand`) into jobs. A job carries everything a
worker needs except the data itself: its resolved config, where the data comes from, and
(through :class:`Task`) the suite folder, the plugin sources and the device. A worker in
another process or on another machine runs a :class:`Task` with
:func:`mimbench.worker.execute` and writes only inside its own run folder.

Two kinds of job, told apart by type, never by looking inside the config:

- :class:`RunJob`: pre-train one configuration, then evaluate it;
- :class:`BaselineJob`: the probes on an untrained encoder (``random-init``) or on raw pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

BaselineKind = Literal["random-init", "pixels"]


@dataclass(frozen=True)
class DataSpec:
    """Where a job's images come from and how they are held; the key of the per-process data cache.

    ``dataset`` and ``eval_dataset`` are resolved component specs (``{"name", "params"}``),
    stored as canonical JSON so that the spec is hashable.
    """

    dataset_json: str
    eval_dataset_json: str | None
    image_size: int
    in_memory_gb: float | None  # null: decided by the device the worker runs on
    workers: int
    needs_labels: bool  # the suite has probes: the probe splits must have class labels

    @property
    def dataset(self) -> dict[str, Any]:
        return json.loads(self.dataset_json)

    @property
    def eval_dataset(self) -> dict[str, Any] | None:
        return None if self.eval_dataset_json is None else json.loads(self.eval_dataset_json)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def run_id(config: dict[str, Any]) -> str:
    """A short, stable hash of a resolved run config, leaving out ``eval.probes`` (a probe added
    to a finished suite runs on the saved encoders instead of starting the runs over), and keys
    added since, at their defaults, so that suites from before them keep their ids:
    ``eval.labels_per_class`` null, ``train.compile`` false, ``train.devices`` 1, ``train.budget_flops`` null."""
    if "eval" in config:
        evaluation = {k: v for k, v in config["eval"].items()
                      if k != "probes" and not (k == "labels_per_class" and v is None)}
        config = {**config, "eval": evaluation}
    if "train" in config:
        defaults = {"compile": False, "devices": 1, "budget_flops": None}
        train = {k: v for k, v in config["train"].items() if not (k in defaults and v == defaults[k])}
        config = {**config, "train": train}
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:12]


def pretraining_id(config: dict[str, Any]) -> str:
    """The id of what a run pre-trains: its run id with ``eval.labels_per_class`` left out. Runs
    that differ only in how many labels their probes see share one pre-training."""
    return run_id({**config, "eval": {**config["eval"], "labels_per_class": None}})


@dataclass(frozen=True)
class RunJob:
    """Pre-train one configuration (``config``: dataset, image_size, seed, train, eval, encoder,
    decoder, masker, loss; every param resolved) and evaluate it."""

    run_id: str
    config: dict[str, Any] = field(hash=False, compare=False)
    data: DataSpec = field(hash=False, compare=False)

    @property
    def seed(self) -> int:
        return self.config["seed"]

    @property
    def pretraining_id(self) -> str:
        return pretraining_id(self.config)


@dataclass(frozen=True)
class BaselineJob:
    """The suite's probes on the ``random-init`` encoder (built exactly as its runs' encoder is
    before training, from the same seed) or on raw ``pixels``. ``config`` holds what the probes
    depend on, and no more (an ``encoder`` only for ``random-init``)."""

    run_id: str
    kind: BaselineKind
    config: dict[str, Any] = field(hash=False, compare=False)
    data: DataSpec = field(hash=False, compare=False)

    @property
    def seed(self) -> int:
        return self.config["seed"]


Job = Union[RunJob, BaselineJob]


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
    """One job as an executor runs it: :func:`mimbench.worker.execute` ``(task)`` returns an
    :class:`Outcome`. ``probes_to_add`` non-empty means the run is finished and only these
    probes are run on its saved encoder (``eval.probes`` grew)."""

    job: Job
    suite_dir: str
    plugins: PluginSources
    device: str = "auto"  # auto | cpu | cuda | cuda:N, resolved on the worker
    threads: int | None = None  # torch threads on the worker; None: torch's default
    show_progress: bool = True  # a per-step bar (on a terminal only); off in remote workers
    probes_to_add: tuple[str, ...] = ()  # canonical JSON of each probe spec
    label: str = ""  # a readable name of the job, for bars and messages
    # a RunJob whose encoder was pre-trained by another run of the suite (same pre-training,
    # other labels_per_class): that run's id; the task only evaluates
    pretrained_in: str | None = None
    trackers: tuple[str, ...] = ()  # canonical JSON of each resolved tracker spec (the suite's trackers)

    @property
    def tracker_specs(self) -> list[dict[str, Any]]:
        return [json.loads(text) for text in self.trackers]

    def __call__(self) -> "Outcome":
        from mimbench.worker import execute  # the worker side imports torch; the driver may not yet

        return execute(self)


@dataclass(frozen=True)
class Outcome:
    """What a worker reports for one task: the run's record (``metrics.json``'s content, or a
    failed record with ``error``), a note for the console (e.g. "added probes knn") and
    warnings (a tracker or a hook that failed), which the driver prints."""

    record: dict[str, Any]
    note: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        return self.record.get("status", "failed")

    @classmethod
    def failed(cls, error: str) -> "Outcome":
        return cls({"status": "failed", "error": error})
