"""A suite expanded into jobs: every run, resolved and named by its id, and the baselines.

A suite's ``grid`` is a cartesian product of components (or a list of such grids, whose runs
are joined); ``sweep`` crosses it with values of dotted parameter paths. Each run is fully
resolved (every component param filled in from its factory's defaults) and named by a short
hash of that resolved config (:func:`mimbench.jobs.run_id`).
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

from pydantic import ValidationError

from mimbench.errors import ConfigError
from mimbench.jobs import BaselineJob, DataSpec, Job, RunJob, canonical_json, run_id
from mimbench.registry import Registry
from mimbench.suite import COMPONENT_AXES, ComponentSpec, Suite, TrainConfig, validation_message


def run_labels(runs: list[Job]) -> dict[str, str]:
    """run_id -> a short readable name, e.g. ``cnn/linear/patch(ratio=0.4)/l1 seed=0``, or
    ``baseline random-init cnn seed=0`` for a baseline.

    A component's params are shown only where they differ between runs that use that
    component, so every variant of a sweep can be told apart without the constants.
    """
    # (axis, component name) -> the params whose values differ between the runs using it
    values: dict[tuple[str, str], dict[str, set[str]]] = {}
    users: dict[tuple[str, str], int] = {}  # runs using each component
    given: dict[tuple[str, str, str], int] = {}  # runs giving each of its params
    for run in runs:
        for axis in (axis for axis in COMPONENT_AXES if axis in run.config):
            spec = run.config[axis]
            component = (axis, spec["name"])
            users[component] = users.get(component, 0) + 1
            seen = values.setdefault(component, {})
            for key, value in spec["params"].items():
                seen.setdefault(key, set()).add(json.dumps(value, sort_keys=True))
                given[(*component, key)] = given.get((*component, key), 0) + 1
    # a param some runs of a component lack differs between them (missing reads as null)
    varying = {component: {key for key, seen in params.items()
                           if len(seen | ({"null"} if given[(*component, key)] < users[component] else set())) > 1}
               for component, params in values.items()}

    def shown_params(axis: str, run: Job) -> list[str]:
        spec = run.config[axis]
        differ = varying[(axis, spec["name"])]
        return [f"{key}={value}" for key, value in spec["params"].items() if key in differ]

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
        train = "".join(f" {key}={_value_text(run.config['train'][key])}" for key in train_keys)
        labels[run.run_id] = f"{'/'.join(parts)}{train}{labels_text(run)} seed={run.config['seed']}"
    return labels


def _value_text(value: Any) -> str:
    """A param's value in a label: floats in their shortest form (``1.2132e+12``, not ``1213202694144.0``)."""
    return f"{value:g}" if isinstance(value, float) and abs(value) >= 1e6 else str(value)


def run_count(suite: Suite) -> tuple[int, str]:
    """How many runs the suite expands to (before identical ones are merged), counted without
    building any, and how: ``(count, "2 seeds x 3 grid combinations x 4 sweep values")``."""
    combos = sum(math.prod(len(getattr(grid, axis)) for axis in COMPONENT_AXES) for grid in suite.grids())
    sweeps = math.prod(len(values) for values in suite.sweep.values())
    count = len(suite.seeds) * combos * sweeps
    how = f"{len(suite.seeds)} seed{'s' * (len(suite.seeds) != 1)} x {combos} grid combination{'s' * (combos != 1)}"
    return count, how + (f" x {sweeps} sweep value combination{'s' * (sweeps != 1)}" if suite.sweep else "")


def check_run_count(suite: Suite) -> int:
    """The suite's run count; a ConfigError when it is above ``suite.max_runs``."""
    count, how = run_count(suite)
    if count > suite.max_runs:
        raise ConfigError(f"suite {suite.name!r} expands to {count:,} runs ({how}), more than max_runs "
                          f"{suite.max_runs:,}; if you mean it, raise max_runs in the suite or with "
                          f"--set max_runs={count}")
    return count


def expand(suite: Suite, registry: Registry) -> list[RunJob]:
    """All runs of a suite, seed by seed, in grid order, each resolved and validated. A suite that
    would expand to more than its ``max_runs`` is refused before any run is built."""
    check_run_count(suite)
    combos = [combo for grid in suite.grids()
              for combo in itertools.product(*(getattr(grid, axis) for axis in COMPONENT_AXES))]
    sweep_keys = list(suite.sweep)
    sweep_values = list(itertools.product(*suite.sweep.values()))
    resolve = _Resolver(registry)
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
                    raise ConfigError(f"sweep: train.{validation_message(exc)}") from None
                config = {
                    "dataset": dataset,
                    "image_size": suite.image_size,
                    "seed": seed,
                    "train": train,
                    "eval": evaluation,
                    **{axis: resolve(axis, spec["name"], spec["params"]) for axis, spec in specs.items()},
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


class _Resolver:
    """``registry.resolve_params`` once per distinct component spec: a sweep of thousands of
    runs repeats the same few specs, and checking a signature is the slow part of expanding."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.resolved: dict[tuple[str, str, str], dict[str, Any]] = {}

    def __call__(self, kind: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
        key = (kind, name, json.dumps(params, sort_keys=True, default=repr))
        if key not in self.resolved:
            self.resolved[key] = self.registry.resolve_params(kind, name, params)
        return {"name": name, "params": dict(self.resolved[key])}
