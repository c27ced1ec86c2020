"""The suite schema: every key a suite's YAML may hold, with its default visible here, and how
a mistake in it becomes one line (:func:`validation_message`).

A suite's ``grid`` is a cartesian product of components (or a list of such grids, whose runs
are joined: for comparing fixed pairings such as SimMIM's and MAE's recipes); ``sweep`` crosses
it with values of dotted parameter paths (``masker.ratio``, ``train.lr``). Reading a suite from
YAML, with ``--set`` overrides, is :mod:`mimbench.suite`; its expansion into runs
:mod:`mimbench.expansion`.
"""

from __future__ import annotations

import copy
import difflib
import re
import typing
from typing import Annotated, Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mimbench.errors import cut, shown

#: The grid's axes, in the order of a run's label; ``target`` is optional (default ``pixels``).
COMPONENT_AXES = ("encoder", "decoder", "masker", "loss", "target")

#: Limits stated in the schema. Images are resized to ``image_size`` and held as uint8 on the
#: device: 1024 px is already 1 MiB per greyscale image.
MAX_IMAGE_SIZE = 1024
#: The longest suite name: it is a folder's name (most file systems allow 255 bytes), in labels and paths.
MAX_NAME = 100
#: Seeds (``seeds``, ``eval.mask_seed``) are what torch's generators take and a summary's int64
#: column holds: 0 .. 2**63 - 1.
MAX_SEED = 2**63 - 1
#: Counts (epochs, batch sizes, steps, images per class) fit torch's int32 sizes.
MAX_COUNT = 2**31 - 1
#: DataLoader worker processes: each is a process.
MAX_WORKERS = 256
#: ``execution.threads_per_run: auto`` gives each run the driver's CPUs, at most this many.
MAX_AUTO_THREADS = 8
#: A suite expanding to more runs than this is refused unless its ``max_runs`` is raised.
DEFAULT_MAX_RUNS = 10_000

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ComponentSpec(_Strict):
    """A component by name, with params; a bare string means ``{name: <string>}``."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class AugmentConfig(_Strict):
    """Random-resized-crop and flip on the device (``mimbench.augment``); SimMIM's defaults."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    crop_scale: tuple[float, float] = (0.67, 1.0)  # fraction of the image area a crop covers
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio (w / h) of a crop
    flip: bool = True  # mirror left-right with probability 1/2

    @model_validator(mode="after")
    def _ranges(self) -> "AugmentConfig":
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {list(self.crop_scale)}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {list(self.crop_ratio)}")
        return self


class TrainConfig(_Strict):
    """Pre-training: AdamW with linear warm-up then cosine decay to zero, per step. Frozen: a
    run's spec holds one."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    epochs: int = Field(20, ge=1, le=MAX_COUNT)
    batch_size: int = Field(256, ge=1, le=MAX_COUNT)
    lr: float = Field(1.0e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)  # not applied to biases and norm weights
    warmup_epochs: float = Field(1.0, ge=0)
    grad_clip: float | None = Field(5.0, gt=0)  # max global grad norm; null turns clipping off
    log_every: int = Field(50, ge=1, le=MAX_COUNT)  # steps between loss read-outs (the only host syncs)
    augment: AugmentConfig | None = None  # null: none; {} : crop + flip with the defaults above
    # torch.compile the step's model (encoder + decoder + loss): false, true (mode "default") or
    # a mode; its compile time is reported apart from images/s. Pays off on long runs only
    compile: bool | Literal["default", "reduce-overhead", "max-autotune"] = False
    # processes training one run together with DistributedDataParallel: gloo on CPU, NCCL on
    # GPUs (one GPU per process); each takes batch_size / devices of every batch
    devices: int = Field(1, ge=1, le=64)
    # FLOPs of the whole pre-training (mimbench.compute): the run takes the number of optimizer
    # steps that comes nearest, the schedule follows them and `epochs` is unused; null: `epochs`
    budget_flops: float | None = Field(None, gt=0)
    # how often a run saves its whole training state (checkpoint.pt in its folder), which a
    # re-executed run continues from: an epoch count (1: every epoch) or a time ("90s", "10min",
    # "1h": at the first epoch end after it); null: never. Neither it nor keep_checkpoint is
    # part of the run id: they change when a run saves, not what it computes
    checkpoint_every: int | str | None = "10min"
    keep_checkpoint: bool = False  # keep checkpoint.pt once the run is finished (removed by default)

    @field_validator("checkpoint_every")
    @classmethod
    def _interval(cls, value: int | str | None) -> int | str | None:
        checkpoint_interval(value)
        return value

    @model_validator(mode="after")
    def _batch_splits(self) -> "TrainConfig":
        if self.batch_size % self.devices:
            raise ValueError(f"batch_size {self.batch_size} must be divisible by devices {self.devices}: "
                             "every process takes an equal share of each batch")
        return self


_SECONDS = {"s": 1, "min": 60, "h": 3600}


def checkpoint_interval(value: int | str | None) -> tuple[int | None, float | None]:
    """``train.checkpoint_every`` as (epochs, seconds), one of them set, or (None, None) for never:
    ``3`` -> (3, None), ``"10min"`` -> (None, 600.0). A ValueError says what is allowed."""
    if value is None:
        return None, None
    if isinstance(value, bool) or (isinstance(value, int) and value < 1):
        raise ValueError(f"must be an epoch count >= 1, a time such as 90s, 10min or 1h, or null; got {value!r}")
    if isinstance(value, int):
        return value, None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|min|h)\s*", str(value))
    if not match or float(match[1]) <= 0:
        raise ValueError(f"must be an epoch count >= 1, a time such as 90s, 10min or 1h, or null; got {value!r}")
    return None, float(match[1]) * _SECONDS[match[2]]


class EvalConfig(_Strict):
    """Evaluation of each trained run on the test split."""

    mask_seed: Seed = 0  # seed of the evaluation masks: the same masks for every run
    batch_size: int = Field(512, ge=1, le=MAX_COUNT)
    # measured for every run, so that runs with different maskers can be compared
    reference_masker: ComponentSpec | None = None
    # downstream evaluations of the frozen encoder, on pooled features of unmasked images
    probes: list[ComponentSpec] = Field(default_factory=lambda: [ComponentSpec(name="linear"),
                                                                 ComponentSpec(name="knn")])
    # the same probes on an untrained encoder (same architecture and seed) and on raw pixels
    baselines: list[Literal["random-init", "pixels"]] = Field(default_factory=lambda: ["random-init", "pixels"])
    # labelled data for the probes; null: the suite's dataset (needed when it has no labels)
    dataset: ComponentSpec | None = None
    # null: every label of the labelled train split; k: a fixed class-balanced subset of k images
    # per class (drawn from the seed, the same for every run and baseline of that seed) that the
    # probes fit on; scores are always on the whole test split. Sweepable; not part of the
    # pre-training: changing it re-evaluates the saved encoders
    labels_per_class: int | None = Field(None, ge=1, le=MAX_COUNT)

    @field_validator("probes")
    @classmethod
    def _one_probe_per_name(cls, probes: list[ComponentSpec]) -> list[ComponentSpec]:
        names = [p.name for p in probes]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"probe {twice[0]!r} is listed twice; each probe writes its own columns "
                             f"(use its layer: all param for several blocks)")
        return probes

    @field_validator("baselines")
    @classmethod
    def _no_repeats(cls, baselines: list[str]) -> list[str]:
        return list(dict.fromkeys(baselines))


class DataConfig(_Strict):
    """How splits are held: on the device when they fit, else streamed through a DataLoader."""

    # uint8 size above which a split streams; null: half the free memory of a CUDA device,
    # a quarter of the RAM on CPU
    in_memory_gb: float | None = Field(None, ge=0)
    workers: int = Field(4, ge=0, le=MAX_WORKERS)  # DataLoader worker processes when streaming


class ExecutionConfig(BaseModel):
    """Where the runs execute: an executor by name (``mimbench plugins --kind executor``) and its
    params, given beside it (``{executor: ray, gpus_per_run: 0.25}``). Not part of any run id."""

    model_config = ConfigDict(extra="allow")

    executor: str = "local"
    # torch CPU threads of every run, set by the worker under every executor (ray and submitit
    # ask for this many CPUs per run unless their cpus_per_run says otherwise): on the CPU a run's
    # numbers are bit-identical only at the same thread count. auto: the CPUs this machine gives
    # the driver, at most MAX_AUTO_THREADS. `threads`, the local executor's older param, is read as it
    threads_per_run: int | Literal["auto"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _older_threads_name(cls, value: Any) -> Any:
        if isinstance(value, dict) and "threads" in value:
            if "threads_per_run" in value:
                raise ValueError("give threads_per_run only (threads is its older name)")
            value = {k: v for k, v in value.items() if k != "threads"} | {"threads_per_run": value["threads"] or "auto"}
        return value

    @field_validator("threads_per_run")
    @classmethod
    def _thread_count(cls, value: int | str) -> int | str:
        if value != "auto" and not 1 <= value <= MAX_WORKERS:
            raise ValueError(f"must be auto or 1..{MAX_WORKERS}, got {value}")
        return value

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Grid(_Strict):
    """The components to cross; each axis takes one spec or a list of them."""

    encoder: list[ComponentSpec] = Field(min_length=1)
    decoder: list[ComponentSpec] = Field(min_length=1)
    masker: list[ComponentSpec] = Field(min_length=1)
    loss: list[ComponentSpec] = Field(min_length=1)
    # what the decoder predicts (``mimbench plugins --kind target``): SimMIM's pixels by default
    target: list[ComponentSpec] = Field(default_factory=lambda: [ComponentSpec(name="pixels")], min_length=1)

    @field_validator("encoder", "decoder", "masker", "loss", "target", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return value if isinstance(value, list) else [value]


#: What ``report.reference`` may name: a component axis by name, or a param by its column.
REFERENCE_AXES = ("dataset", *COMPONENT_AXES)


def reference_error(reference: Mapping[str, Any]) -> str | None:
    """Why ``reference`` (``{masker: patch}``, ``{masker.ratio: 0.6}``) cannot name configurations,
    or None when it can: each key an axis or ``<axis>.<param>`` / ``train.<param>``, each value a scalar."""
    for key, value in reference.items():
        head = str(key).split(".", 1)[0]
        if key not in REFERENCE_AXES and not ("." in str(key) and head in (*REFERENCE_AXES, "train")):
            return (f"unknown key {shown(key)} (allowed: {', '.join(REFERENCE_AXES)}, or <axis>.<param> / "
                    f"train.<param>, e.g. masker.ratio)")
        if isinstance(value, (dict, list)) or value is None:
            got = "nothing" if value is None else shown(value)
            return f"{key}: expected a name or a number, got {got}"
    return None


class ReportConfig(_Strict):
    """How the report compares configurations (not part of any run id)."""

    # a configuration the others are compared with, paired by seed: {masker: patch}, or a
    # param's value ({masker.ratio: 0.6}); null: only the comparison with random-init
    reference: dict[str, Any] | None = None

    @field_validator("reference")
    @classmethod
    def _reference(cls, reference: dict[str, Any] | None) -> dict[str, Any] | None:
        if reference is not None:
            if not reference:
                raise ValueError("reference is empty: name at least one value, e.g. {masker: patch}")
            error = reference_error(reference)
            if error:
                raise ValueError(error)
        return reference


class Suite(_Strict):
    """A comparison suite, as written in YAML."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=MAX_NAME)  # results go to <out>/<name>/
    description: str = ""
    dataset: ComponentSpec
    image_size: int = Field(32, ge=4, le=MAX_IMAGE_SIZE)
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    # experiment trackers (``mimbench plugins --kind tracker``), each run's events go to every one;
    # like execution, not part of any run id
    trackers: list[ComponentSpec] = Field(default_factory=list)
    grid: Grid | list[Grid]  # one grid, or a list of grids whose runs are joined
    report: ReportConfig = Field(default_factory=ReportConfig)  # how the report compares; no run id

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        twice = next((seed for seed in seeds if seeds.count(seed) > 1), None)
        if twice is not None:
            raise ValueError(f"seed {twice} is listed twice: the same runs would be planned twice")
        return seeds

    @field_validator("trackers", mode="before")
    @classmethod
    def _tracker_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, dict)) else value

    @field_validator("trackers")
    @classmethod
    def _distinct_trackers(cls, trackers: list[ComponentSpec]) -> list[ComponentSpec]:
        names = [t.name for t in trackers]
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None:
            raise ValueError(f"tracker {twice!r} is listed twice")
        return trackers

    @field_validator("grid")
    @classmethod
    def _grids(cls, grid: Grid | list[Grid]) -> Grid | list[Grid]:
        if isinstance(grid, list) and not grid:
            raise ValueError("grid: the list of grids is empty")
        return grid

    def grids(self) -> list[Grid]:
        return self.grid if isinstance(self.grid, list) else [self.grid]
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    # a suite expanding to more runs than this is refused (a slip in a sweep can ask for millions)
    max_runs: int = Field(DEFAULT_MAX_RUNS, ge=1)

    @field_validator("sweep")
    @classmethod
    def _sweep_paths(cls, sweep: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in sweep.items():
            head, _, param = path.partition(".")
            if path == "eval.labels_per_class":
                bad = [v for v in values if v is not None
                       and (not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_COUNT)]
                if bad:
                    raise ValueError(f"sweep eval.labels_per_class: {shown(bad[0])} is not null or an int "
                                     f"in 1..{MAX_COUNT}")
            elif head not in (*COMPONENT_AXES, "train") or not param or "." in param:
                raise ValueError(f"sweep key {shown(path)} must be <encoder|decoder|masker|loss|target|train>.<param> "
                                 f"or eval.labels_per_class")
            if not values:
                raise ValueError(f"sweep {shown(path)} has no values")
        return sweep


def validation_message(exc: ValidationError) -> str:
    errors = exc.errors()
    # `grid` is "one grid or a list of grids": pydantic reports each union branch; keep the
    # first error's branch and drop the branch names from the path.
    branch = next((p for p in errors[0]["loc"] if p in _UNION_BRANCHES), None)
    errors = [e for e in errors if not any(p in _UNION_BRANCHES and p != branch for p in e["loc"])]
    first = errors[0]
    loc = ".".join(cut(str(p), 40) for p in first["loc"] if p not in _UNION_BRANCHES) or "(top level)"
    msg = cut(first["msg"].removeprefix("Value error, "), 200)  # pydantic's prefix for a validator's own message
    if first["type"] == "extra_forbidden":
        msg = "unknown key" + _key_hint(first["loc"])
    elif "input" in first and first["type"] not in ("missing",):
        msg += f" (got {shown(first['input'])})"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {msg}{more}"


_UNION_BRANCHES = {"Grid", "list[Grid]"}


def _key_hint(loc: tuple) -> str:
    """'; did you mean ...? (allowed: ...)' for an unknown key at ``loc`` in the suite schema."""
    model: Any = Suite
    for part in loc[:-1]:
        if part in _UNION_BRANCHES or isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return ""
        model = next((t for t in (field.annotation, *typing.get_args(field.annotation))
                      if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if model is None:
            inner = [a for t in typing.get_args(field.annotation) for a in typing.get_args(t)]
            model = next((t for t in inner if isinstance(t, type) and issubclass(t, BaseModel)), None)
    if model is None:
        return ""
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1])[:100], allowed, n=1)
    return (f"; did you mean {close[0]!r}?" if close else "") + f" (allowed: {', '.join(allowed)})"


def suite_to_yaml(suite: Suite) -> str:
    """The suite with every default written out, as saved next to its results."""
    return yaml.safe_dump(copy.deepcopy(suite.model_dump()), sort_keys=False)
