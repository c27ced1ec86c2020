"""Suites: the YAML schema (with every default visible here), loading, overrides and expansion.

A suite's ``grid`` is a cartesian product of components (or a list of such grids,
whose runs are joined: for comparing fixed pairings such as SimMIM's and MAE's
recipes); ``sweep`` crosses it with values of dotted parameter paths (``masker.ratio``, ``train.lr``). Each resulting
run is fully resolved (every component param filled in from its factory's
defaults) and named by a short hash of that resolved config.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import re
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mimbench.errors import ConfigError
from mimbench.jobs import BaselineJob, DataSpec, Job, RunJob, canonical_json, run_id
from mimbench.registry import Registry

COMPONENT_AXES = ("encoder", "decoder", "masker", "loss")


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats without a dot, such as ``1e-3``."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str):
    return yaml.load(text, Loader=_YamlLoader)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    """Pre-training: AdamW with linear warm-up then cosine decay to zero, per step."""

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1.0e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)  # not applied to biases and norm weights
    warmup_epochs: float = Field(1.0, ge=0)
    grad_clip: float | None = Field(5.0, gt=0)  # max global grad norm; null turns clipping off
    log_every: int = Field(50, ge=1)  # steps between loss read-outs (the only host syncs)
    augment: AugmentConfig | None = None  # null: none; {} : crop + flip with the defaults above
    # torch.compile the step's model (encoder + decoder + loss): false, true (mode "default") or
    # a mode; its compile time is reported apart from images/s. Pays off on long runs only
    compile: bool | Literal["default", "reduce-overhead", "max-autotune"] = False
    # processes training one run together with DistributedDataParallel: gloo on CPU, NCCL on
    # GPUs (one GPU per process); each takes batch_size / devices of every batch
    devices: int = Field(1, ge=1, le=64)

    @model_validator(mode="after")
    def _batch_splits(self) -> "TrainConfig":
        if self.batch_size % self.devices:
            raise ValueError(f"batch_size {self.batch_size} must be divisible by devices {self.devices}: "
                             "every process takes an equal share of each batch")
        return self


class EvalConfig(_Strict):
    """Evaluation of each trained run on the test split."""

    mask_seed: int = 0  # seed of the evaluation masks: the same masks for every run
    batch_size: int = Field(512, ge=1)
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
    labels_per_class: int | None = Field(None, ge=1)

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
    workers: int = Field(4, ge=0)  # DataLoader worker processes when streaming


class ExecutionConfig(BaseModel):
    """Where the runs execute: an executor by name (``mimbench plugins --kind executor``) and its
    params, given beside it (``{executor: ray, gpus_per_run: 0.25}``). Not part of any run id."""

    model_config = ConfigDict(extra="allow")

    executor: str = "local"

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Grid(_Strict):
    """The components to cross; each axis takes one spec or a list of them."""

    encoder: list[ComponentSpec] = Field(min_length=1)
    decoder: list[ComponentSpec] = Field(min_length=1)
    masker: list[ComponentSpec] = Field(min_length=1)
    loss: list[ComponentSpec] = Field(min_length=1)

    @field_validator("encoder", "decoder", "masker", "loss", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return value if isinstance(value, list) else [value]


class Suite(_Strict):
    """A comparison suite, as written in YAML."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # results go to <out>/<name>/
    description: str = ""
    dataset: ComponentSpec
    image_size: int = Field(32, ge=4)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    # experiment trackers (``mimbench plugins --kind tracker``), each run's events go to every one;
    # like execution, not part of any run id
    trackers: list[ComponentSpec] = Field(default_factory=list)
    grid: Grid | list[Grid]  # one grid, or a list of grids whose runs are joined

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

    @field_validator("sweep")
    @classmethod
    def _sweep_paths(cls, sweep: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in sweep.items():
            head, _, param = path.partition(".")
            if path == "eval.labels_per_class":
                bad = [v for v in values if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1)]
                if bad:
                    raise ValueError(f"sweep eval.labels_per_class: {bad[0]!r} is not null or an int >= 1")
            elif head not in (*COMPONENT_AXES, "train") or not param or "." in param:
                raise ValueError(f"sweep key {path!r} must be <encoder|decoder|masker|loss|train>.<param> "
                                 f"or eval.labels_per_class")
            if not values:
                raise ValueError(f"sweep {path!r} has no values")
        return sweep


def run_labels(runs: list[Job]) -> dict[str, str]:
    """run_id -> a short readable name, e.g. ``cnn/linear/patch(ratio=0.4)/l1 seed=0``, or
    ``baseline random-init cnn seed=0`` for a baseline.

    A component's params are shown only where they differ between runs that use that
    component, so every variant of a sweep can be told apart without the constants.
    """
    def shown_params(axis: str, run: Job) -> list[str]:
        spec = run.config[axis]
        same_name = [r.config[axis]["params"] for r in runs if axis in r.config and r.config[axis]["name"] == spec["name"]]
        return [f"{key}={value}" for key, value in spec["params"].items()
                if len({json.dumps(p.get(key), sort_keys=True) for p in same_name}) > 1]

    trained = [r for r in runs if isinstance(r, RunJob)]
    label_counts = {r.config["eval"].get("labels_per_class") for r in runs}

    def labels_text(run: Job) -> str:
        if len(label_counts) < 2:
            return ""
        count = run.config["eval"].get("labels_per_class")
        return f" labels={'all' if count is None else count}"

    train_keys = [key for key in trained[0].config["train"]
                  if len({json.dumps(r.config["train"][key]) for r in trained}) > 1] if trained else []
    labels = {}
    for run in runs:
        if isinstance(run, BaselineJob):
            encoder = ""
            if run.kind == "random-init":
                shown = shown_params("encoder", run)
                encoder = " " + run.config["encoder"]["name"] + (f"({','.join(shown)})" if shown else "")
            labels[run.run_id] = f"baseline {run.kind}{encoder}{labels_text(run)} seed={run.seed}"
            continue
        parts = []
        for axis in COMPONENT_AXES:
            shown = shown_params(axis, run)
            parts.append(run.config[axis]["name"] + (f"({','.join(shown)})" if shown else ""))
        train = "".join(f" {key}={run.config['train'][key]}" for key in train_keys)
        labels[run.run_id] = f"{'/'.join(parts)}{train}{labels_text(run)} seed={run.config['seed']}"
    return labels


def packaged_suites() -> dict[str, Path]:
    """Name -> path of the suites shipped with mimbench."""
    folder = resources.files("mimbench") / "suites"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def load_suite(source: str | Path | Mapping[str, Any] | None = None, overrides: list[str] | tuple[str, ...] = (),
               executor: str | None = None, trackers: list[str] | tuple[str, ...] = ()) -> Suite:
    """Read a suite from a YAML path, a packaged name (default ``quick``) or a mapping (as YAML
    would give it), apply ``--set`` overrides.

    ``executor`` (``--executor``) names where the runs execute; the suite's own execution
    params are dropped when it names another executor than the suite's. ``trackers``
    (``--tracker``) are added to the suite's ``trackers`` unless it already lists them."""
    if isinstance(source, Mapping):
        where, raw = "suite", copy.deepcopy(dict(source))
    else:
        path = _suite_path(str(source or "quick"))
        where, raw = str(path), _read_yaml(path)
    if executor is not None:
        execution = raw.get("execution")
        if not isinstance(execution, dict) or execution.get("executor", "local") != executor:
            raw["execution"] = {"executor": executor}
    for override in overrides:
        _apply_override(raw, override)
    _add_trackers(raw, trackers)
    try:
        return Suite.model_validate(raw)
    except ValidationError as exc:
        where = f"{where} (with --set {' '.join(overrides)})" if overrides else where
        raise ConfigError(f"{where}: {_validation_message(exc)}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = parse_yaml(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read suite {path}: {exc.strerror}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a suite must be a YAML mapping, got {type(raw).__name__}")
    return raw


def _add_trackers(raw: dict[str, Any], names: list[str] | tuple[str, ...]) -> None:
    """``--tracker NAME``: append ``NAME`` to the suite's trackers unless it lists it already."""
    if not names:
        return
    listed = raw.get("trackers") or []
    listed = [listed] if isinstance(listed, (str, dict)) else list(listed)
    present = {t if isinstance(t, str) else t.get("name") for t in listed if isinstance(t, (str, dict))}
    raw["trackers"] = listed + [name for name in dict.fromkeys(names) if name not in present]


def _suite_path(source: str) -> Path:
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"suite file not found: {source}")
        return path
    suites = packaged_suites()
    if source not in suites:
        raise ConfigError(f"unknown suite {source!r}: not a file and not a packaged suite "
                          f"(packaged: {', '.join(sorted(suites))})")
    return suites[source]


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. train.epochs=1")
    try:
        value = parse_yaml(text)
    except yaml.YAMLError:
        raise ConfigError(f"--set {override!r}: the value is not valid YAML") from None
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if isinstance(child, str) and parts[i + 1] in ("name", "params"):
            child = node[part] = {"name": child}  # a component given by name: dataset=x, then dataset.params.y=z
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: {part!r} is not a mapping")
        node = child
    node[parts[-1]] = value


def _validation_message(exc: ValidationError) -> str:
    errors = exc.errors()
    # `grid` is "one grid or a list of grids": pydantic reports each union branch; keep the
    # first error's branch and drop the branch names from the path.
    branch = next((p for p in errors[0]["loc"] if p in _UNION_BRANCHES), None)
    errors = [e for e in errors if not any(p in _UNION_BRANCHES and p != branch for p in e["loc"])]
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"] if p not in _UNION_BRANCHES) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key" + _key_hint(first["loc"])
    elif "input" in first and first["type"] not in ("missing",):
        msg += f" (got {first['input']!r})"
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
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    return (f"; did you mean {close[0]!r}?" if close else "") + f" (allowed: {', '.join(allowed)})"


def expand(suite: Suite, registry: Registry) -> list[RunJob]:
    """All runs of a suite, seed by seed, in grid order, each resolved and validated."""
    combos = [combo for grid in suite.grids()
              for combo in itertools.product(*(getattr(grid, axis) for axis in COMPONENT_AXES))]
    sweep_keys = list(suite.sweep)
    sweep_values = list(itertools.product(*suite.sweep.values()))
    dataset = _resolved(registry, "dataset", suite.dataset)
    eval_config = resolved_eval(suite, registry)
    data = data_spec(suite, dataset, eval_config["dataset"])

    runs: dict[str, RunJob] = {}
    for seed in suite.seeds:
        for combo in combos:
            for values in sweep_values:
                specs = {axis: spec.model_dump() for axis, spec in zip(COMPONENT_AXES, combo)}
                train = suite.train.model_dump()
                evaluation = dict(eval_config)
                for key, value in zip(sweep_keys, values):
                    head, param = key.split(".", 1)
                    if head == "train":
                        train[param] = value
                    elif head == "eval":
                        evaluation[param] = value
                    else:
                        specs[head]["params"][param] = value
                try:
                    train = TrainConfig.model_validate(train).model_dump()
                except ValidationError as exc:
                    raise ConfigError(f"sweep: train.{_validation_message(exc)}") from None
                config = {
                    "dataset": dataset,
                    "image_size": suite.image_size,
                    "seed": seed,
                    "train": train,
                    "eval": evaluation,
                    **{axis: _resolved(registry, axis, ComponentSpec(**spec)) for axis, spec in specs.items()},
                }
                run = RunJob(run_id(config), config, data)
                runs.setdefault(run.run_id, run)
    return list(runs.values())


def resolved_eval(suite: Suite, registry: Registry) -> dict[str, Any]:
    """The suite's eval section with every component's params filled in (baselines left out:
    they are runs of their own, and adding one must not change the pre-trained runs' ids)."""
    evaluation = suite.eval.model_dump(exclude={"baselines"})
    if suite.eval.reference_masker is not None:
        evaluation["reference_masker"] = _resolved(registry, "masker", suite.eval.reference_masker)
    if suite.eval.dataset is not None:
        evaluation["dataset"] = _resolved(registry, "dataset", suite.eval.dataset)
    evaluation["probes"] = [_resolved(registry, "probe", probe) for probe in suite.eval.probes]
    return evaluation


def data_spec(suite: Suite, dataset: dict[str, Any], eval_dataset: dict[str, Any] | None) -> DataSpec:
    """Where the suite's jobs read their images from (resolved dataset specs) and how they hold them."""
    return DataSpec(canonical_json(dataset), None if eval_dataset is None else canonical_json(eval_dataset),
                    suite.image_size, suite.data.in_memory_gb, suite.data.workers, bool(suite.eval.probes))


def expand_baselines(suite: Suite, runs: list[RunJob]) -> list[BaselineJob]:
    """The baseline runs: ``random-init`` once per (encoder config, seed) among ``runs``,
    ``pixels`` once per seed. Their configs hold what their probes depend on, and no more."""
    if not runs or not suite.eval.probes:
        return []
    baselines: dict[str, BaselineJob] = {}
    for run in runs:
        evaluation = {key: run.config["eval"][key] for key in ("batch_size", "probes", "dataset")}
        if run.config["eval"].get("labels_per_class") is not None:  # absent when null: older ids stay
            evaluation["labels_per_class"] = run.config["eval"]["labels_per_class"]
        common = {"dataset": run.config["dataset"], "image_size": run.config["image_size"], "eval": evaluation}
        configs = []
        if "random-init" in suite.eval.baselines:
            configs.append({"baseline": "random-init", **common, "seed": run.seed, "encoder": run.config["encoder"]})
        if "pixels" in suite.eval.baselines:
            configs.append({"baseline": "pixels", **common, "seed": run.seed})
        for config in configs:
            job = BaselineJob(run_id(config), config["baseline"], config, run.data)
            baselines.setdefault(job.run_id, job)
    return list(baselines.values())


def _resolved(registry: Registry, kind: str, spec: ComponentSpec) -> dict[str, Any]:
    return {"name": spec.name, "params": registry.resolve_params(kind, spec.name, spec.params)}




def suite_to_yaml(suite: Suite) -> str:
    """The suite with every default written out, as saved next to its results."""
    return yaml.safe_dump(copy.deepcopy(suite.model_dump()), sort_keys=False)
