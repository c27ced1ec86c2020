"""The suite schema: every key a suite's YAML may hold, with its default visible here (the
top-level keys) or in :mod:`mimbench.schema.sections` (``train``, ``eval``, ``data``,
``execution``, ``grid``, ``report``), and how a mistake in it becomes one line
(:func:`validation_message`).

A suite's ``grid`` is a cartesian product of components (or a list of such grids, whose runs
are joined: for comparing fixed pairings such as SimMIM's and MAE's recipes); ``sweep`` crosses
it with values of dotted parameter paths (``masker.ratio``, ``train.lr``). Reading a suite from
YAML, with ``--set`` overrides, is :mod:`mimbench.suite`; its expansion into runs
:mod:`mimbench.expansion`.
"""

from __future__ import annotations

import copy
import difflib
import typing
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from mimbench.errors import cut, shown
from mimbench.schema.sections import (COMPONENT_AXES, DEFAULT_MAX_RUNS, MAX_AUTO_THREADS, MAX_COUNT, MAX_IMAGE_SIZE,
                                      MAX_NAME, MAX_SEED, MAX_WORKERS, REFERENCE_AXES, AugmentConfig, ComponentSpec,
                                      DataConfig, EvalConfig, ExecutionConfig, Grid, ReportConfig, Seed, TrainConfig,
                                      Strict, checkpoint_interval, reference_error)

__all__ = ["COMPONENT_AXES", "DEFAULT_MAX_RUNS", "MAX_AUTO_THREADS", "MAX_COUNT", "MAX_IMAGE_SIZE", "MAX_NAME",
           "MAX_SEED", "MAX_WORKERS", "REFERENCE_AXES", "AugmentConfig", "ComponentSpec", "DataConfig", "EvalConfig",
           "ExecutionConfig", "Grid", "ReportConfig", "Seed", "Suite", "TrainConfig", "checkpoint_interval",
           "reference_error", "suite_to_yaml", "validation_message"]


class Suite(Strict):
    """A comparison suite, as written in YAML."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=MAX_NAME)
    """Letters, digits, `.`, `_`, `-`, at most 100 characters; results go to `<out>/<name>/`."""
    description: str = ""
    """Shown by `mimbench suites`."""
    dataset: ComponentSpec
    """A dataset name or `{name, params}`."""
    image_size: int = Field(32, ge=4, le=MAX_IMAGE_SIZE)
    """Every image is resized (bilinear, antialiased) to this square size once; 4 to 1024."""
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    """Each configuration runs once per seed (model init, data order, masks); distinct, each 0 to
    2^63−1 (what torch's generators take and the summary's int64 column holds)."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """How every configuration is pre-trained: the optimizer and its schedule, the budget, checkpoints."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """What is measured on each trained run, and how: the evaluation masks, the probes and their
    labelled data, the baselines."""
    data: DataConfig = Field(default_factory=DataConfig)
    """Where the images live while a run trains: the size above which a split streams, and the
    DataLoader workers that stream it."""
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    """The executor and its params, in one mapping (`{executor: ray, gpus_per_run: 0.25}`). Like
    `trackers`, not part of any run id."""
    trackers: list[ComponentSpec] = Field(default_factory=list)
    """Experiment trackers every run is sent to: `[tensorboard, {name: mlflow, params: {experiment:
    mine}}]` (see Trackers); `--tracker NAME` adds one. Not part of any run id."""
    grid: Grid | list[Grid]
    """The components to cross: one spec or a list per axis; the runs are their cartesian product.
    `grid` may also be a list of such grids: their runs are joined (for fixed pairings)."""
    report: ReportConfig = Field(default_factory=ReportConfig)
    """The report's comparisons: which configuration the others are compared with. Not part of
    any run id."""

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
    """`<encoder|decoder|masker|loss|target|train>.<param>: [values]`, or
    `eval.labels_per_class: [values]`, crossed with the grid; a component param is set on every
    component of that kind, so each must accept it."""
    max_runs: int = Field(DEFAULT_MAX_RUNS, ge=1)
    """The most runs the suite may expand to (seeds × grid combinations × sweep values, counted
    before any run is built): a suite above it is refused with its count, so that a slip in a sweep
    cannot ask for a million runs. Raise it to mean it (`max_runs: 20000`, or
    `--set max_runs=20000`). Not part of any run id."""

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

    @model_validator(mode="after")
    def _supervised_trains_for_epochs(self) -> "Suite":
        if "supervised" in self.eval.baselines and (self.train.budget_flops is not None
                                                    or "train.budget_flops" in self.sweep):
            raise ValueError("eval.baselines: supervised trains for train.epochs, and this suite sets "
                             "train.budget_flops; drop supervised or the FLOP budget")
        return self


def validation_message(exc: ValidationError) -> str:
    errors = exc.errors()
    # `grid` is "one grid or a list of grids": pydantic reports each union branch; keep the
    # first error's branch and drop the branch names from the path.
    branch = next((p for p in errors[0]["loc"] if p in _UNION_BRANCHES), None)
    errors = [e for e in errors if not any(p in _UNION_BRANCHES and p != branch for p in e["loc"])]
    # a misspelled key (`sedes`) also leaves a required one missing: the misspelling is the news
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
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
