"""What one run of a suite is, as typed, frozen, picklable values.

A suite is expanded once (:func:`mimbench.expansion.expand`) into specs. A spec carries
everything a worker needs but the data itself: its components (each a name with params that
were validated and filled in once, at expansion), its typed ``train`` and ``eval`` settings,
where its images come from (:class:`DataSpec`) and its ``run_id``, a hash of its config
(:meth:`RunSpec.config`, the ``config.json`` a run folder holds). Two kinds, told apart by type:

- :class:`RunSpec`: pre-train one configuration, then evaluate it;
- :class:`BaselineSpec`: the probes on an untrained encoder (``random-init``) or on raw pixels.

``Status`` names what became of a run; :mod:`mimbench.design` gives every job its readable name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Union

from mimbench.schema import COMPONENT_AXES, TrainConfig

BaselineKind = Literal["random-init", "pixels", "supervised"]


class Status(str, Enum):
    """What became of a run: ``metrics.json`` says done or diverged (finished), ``error.txt``
    failed; a run with neither is pending. Compares equal to its text (``Status.DONE == "done"``)."""

    DONE = "done"
    DIVERGED = "diverged"
    FAILED = "failed"
    PENDING = "pending"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        return self in (Status.DONE, Status.DIVERGED)


#: The statuses of a finished run's ``metrics.json``.
FINISHED = (Status.DONE.value, Status.DIVERGED.value)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True, eq=False)
class Component:
    """A component by kind's name, with every param validated and filled in (never validated again).
    Two are equal when their name and params are."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Component) and canonical_json(self.to_json()) == canonical_json(other.to_json())

    def __hash__(self) -> int:
        return hash(canonical_json(self.to_json()))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}

    @classmethod
    def from_json(cls, spec: dict[str, Any]) -> "Component":
        return cls(spec["name"], dict(spec.get("params") or {}))

    def text(self) -> str:
        """``patch(ratio=0.6,mask_patch_size=4)``, or the bare name without params."""
        params = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}({params})" if params else self.name


#: The target of a run that names none, and of every run from before targets existed.
DEFAULT_TARGET = Component("pixels")
#: ``train`` keys that say when a run saves its state, not what it computes: never in a run id.
NOT_IN_RUN_ID = ("checkpoint_every", "keep_checkpoint")


def _optional(component: Component | None) -> dict[str, Any] | None:
    return None if component is None else component.to_json()


@dataclass(frozen=True)
class DataSpec:
    """Where a job's images come from and how they are held; the key of a process's data cache."""

    dataset: Component
    eval_dataset: Component | None
    image_size: int
    in_memory_gb: float | None  # null: decided by the device the worker runs on
    workers: int
    needs_labels: bool  # the suite has probes: the probe splits must have class labels

    def key(self) -> str:
        return canonical_json([self.dataset.to_json(), _optional(self.eval_dataset), self.image_size,
                               self.in_memory_gb, self.workers, self.needs_labels])

    def __hash__(self) -> int:
        return hash(self.key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DataSpec) and self.key() == other.key()


@dataclass(frozen=True)
class EvalSpec:
    """How a pre-trained run is evaluated (the suite's ``eval``, components resolved)."""

    mask_seed: int
    batch_size: int
    reference_masker: Component | None
    probes: tuple[Component, ...]
    dataset: Component | None
    labels_per_class: int | None
    classical_reference: bool = True  # biharmonic inpainting and mean-fill on the evaluation masks

    def to_json(self) -> dict[str, Any]:
        return {"mask_seed": self.mask_seed, "batch_size": self.batch_size,
                "reference_masker": _optional(self.reference_masker), "probes": [p.to_json() for p in self.probes],
                "dataset": _optional(self.dataset), "labels_per_class": self.labels_per_class,
                "classical_reference": self.classical_reference}


def hash_config(config: dict[str, Any]) -> str:
    """A short, stable hash of a resolved run config, leaving out ``eval.probes`` (a probe added
    to a finished suite runs on the saved encoders instead of starting the runs over) and
    ``eval.classical_reference`` (it adds reference columns, it changes no run's own), and keys
    added since, at their defaults, so that suites from before them keep their ids:
    ``eval.labels_per_class`` null, ``train.compile`` false, ``train.devices`` 1, ``train.budget_flops`` null,
    ``train.precision`` auto,
    ``target`` pixels; and ``train.checkpoint_every`` / ``keep_checkpoint`` always."""
    if config.get("target") == DEFAULT_TARGET.to_json():
        config = {k: v for k, v in config.items() if k != "target"}
    if "eval" in config:
        evaluation = {k: v for k, v in config["eval"].items()
                      if k not in ("probes", "classical_reference") and not (k == "labels_per_class" and v is None)}
        config = {**config, "eval": evaluation}
    if "train" in config:
        defaults = {"compile": False, "devices": 1, "budget_flops": None, "precision": "auto"}
        train = {k: v for k, v in config["train"].items()
                 if not (k in defaults and v == defaults[k]) and k not in NOT_IN_RUN_ID}
        config = {**config, "train": train}
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:12]


class _Identified:
    """Specs are equal when their ids are: the id hashes everything the spec holds but its data
    source (:meth:`config`); a spec made without one gets it computed."""

    run_id: str

    def __post_init__(self) -> None:
        if not self.run_id:
            object.__setattr__(self, "run_id", hash_config(self.config()))  # type: ignore[attr-defined]

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.run_id == self.run_id  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.run_id)


@dataclass(frozen=True, eq=False)
class RunSpec(_Identified):
    """Pre-train one configuration and evaluate it. ``run_id`` is :func:`hash_config` of :meth:`config`."""

    dataset: Component
    image_size: int
    seed: int
    train: TrainConfig
    eval: EvalSpec
    encoder: Component
    decoder: Component
    masker: Component
    loss: Component
    data: DataSpec
    target: Component = DEFAULT_TARGET  # what the decoder predicts; pixels unless the grid names another
    run_id: str = ""

    def config(self) -> dict[str, Any]:
        """The resolved config as JSON (``config.json`` holds it, the run id hashes it)."""
        return {"dataset": self.dataset.to_json(), "image_size": self.image_size, "seed": self.seed,
                "train": self.train.model_dump(), "eval": self.eval.to_json(),
                **{axis: getattr(self, axis).to_json() for axis in COMPONENT_AXES}}

    @property
    def pretraining_id(self) -> str:
        """The id of what the run pre-trains: its config's id with ``eval.labels_per_class`` left
        out. Runs that differ only in how many labels their probes see share one pre-training."""
        config = self.config()
        return hash_config({**config, "eval": {**config["eval"], "labels_per_class": None}})

    def components(self) -> dict[str, Component]:
        return {axis: getattr(self, axis) for axis in COMPONENT_AXES}


@dataclass(frozen=True, eq=False)
class BaselineSpec(_Identified):
    """The suite's probes on the ``random-init`` encoder (built exactly as its runs' encoder is
    before training, from the same seed), on raw ``pixels``, or on the ``supervised`` control (that
    encoder trained on the labels with its runs' ``train`` settings, :mod:`mimbench.supervised`). It
    holds what the probes depend on, and no more (an ``encoder`` for ``random-init`` and
    ``supervised``, a ``train`` for ``supervised`` only)."""

    kind: BaselineKind
    dataset: Component
    image_size: int
    seed: int
    eval: EvalSpec
    encoder: Component | None
    data: DataSpec
    train: TrainConfig | None = None
    run_id: str = ""

    def config(self) -> dict[str, Any]:
        evaluation = {"batch_size": self.eval.batch_size, "probes": [p.to_json() for p in self.eval.probes],
                      "dataset": _optional(self.eval.dataset)}
        if self.eval.labels_per_class is not None:  # absent when null: older ids stay
            evaluation["labels_per_class"] = self.eval.labels_per_class
        config = {"baseline": self.kind, "dataset": self.dataset.to_json(), "image_size": self.image_size,
                  "eval": evaluation, "seed": self.seed}
        if self.encoder is not None:
            config["encoder"] = self.encoder.to_json()
        if self.train is not None:
            config["train"] = self.train.model_dump()
        return config


Job = Union[RunSpec, BaselineSpec]

#: The kinds of baseline, each a partner a trained run is compared with (:func:`baseline_of`).
BASELINE_KINDS: tuple[BaselineKind, ...] = ("random-init", "pixels", "supervised")


def baseline_of(run: RunSpec, kind: BaselineKind) -> BaselineSpec:
    """The baseline of ``kind`` that ``run`` is compared with: built from its seed, dataset and
    evaluation (``random-init`` and ``supervised``: and its encoder config; ``supervised``: and its
    ``train`` settings)."""
    encoder = None if kind == "pixels" else run.encoder
    return BaselineSpec(kind, run.dataset, run.image_size, run.seed, run.eval, encoder, run.data,
                        run.train if kind == "supervised" else None)


def run_spec_from_config(config: dict[str, Any], data: DataSpec | None = None) -> RunSpec:
    """A pre-trained run's spec from its ``config.json`` (the resolved config it was run with)."""
    evaluation = config.get("eval") or {}
    optional = {key: Component.from_json(evaluation[key]) if evaluation.get(key) else None
                for key in ("reference_masker", "dataset")}
    eval_spec = EvalSpec(evaluation.get("mask_seed", 0), evaluation.get("batch_size", 512), optional["reference_masker"],
                         tuple(Component.from_json(p) for p in evaluation.get("probes", [])), optional["dataset"],
                         evaluation.get("labels_per_class"), evaluation.get("classical_reference", True))
    dataset = Component.from_json(config["dataset"])
    data = data or DataSpec(dataset, optional["dataset"], config["image_size"], None, 0, bool(eval_spec.probes))
    return RunSpec(dataset, config["image_size"], config["seed"], TrainConfig.model_validate(config["train"]),
                   eval_spec, data=data, **{axis: Component.from_json(config[axis]) for axis in COMPONENT_AXES
                                            if axis in config},
                   run_id=config.get("run_id", ""))


def named_axes(runs: list[RunSpec]) -> tuple[str, ...]:
    """The component axes a run is named by: the target only in suites where some run predicts
    something other than pixels (so the names of suites from before targets stay as they were)."""
    return COMPONENT_AXES if any(run.target != DEFAULT_TARGET for run in runs) else COMPONENT_AXES[:-1]
