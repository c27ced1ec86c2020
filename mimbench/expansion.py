"""A suite expanded into specs: every run, resolved and named by its id, and the baselines.

A suite's ``grid`` is a cartesian product of components (or a list of such grids, whose runs
are joined); ``sweep`` crosses it with values of dotted parameter paths. Each component's params
are checked against its factory's signature and filled in from its defaults once, here; the
specs (:mod:`mimbench.specs`) carry them resolved, and nothing validates them again.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

from pydantic import ValidationError

from mimbench.errors import ConfigError, cut, shown
from mimbench.registry import Registry
from mimbench.specs import BASELINE_KINDS, BaselineSpec, Component, DataSpec, EvalSpec, RunSpec, baseline_of
from mimbench.schema import COMPONENT_AXES, ComponentSpec, Suite, TrainConfig, validation_message


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


def expand(suite: Suite, registry: Registry) -> list[RunSpec]:
    """All runs of a suite, seed by seed, in grid order, each resolved and validated. A suite that
    would expand to more than its ``max_runs`` is refused before any run is built."""
    check_run_count(suite)
    combos = [combo for grid in suite.grids()
              for combo in itertools.product(*(getattr(grid, axis) for axis in COMPONENT_AXES))]
    sweep_values = list(itertools.product(*suite.sweep.values()))
    resolve = _Resolver(registry)
    check_duplicates(suite, resolve)
    evaluation = resolved_eval(suite, resolve)
    data = data_spec(suite, resolve("dataset", suite.dataset), evaluation.dataset)
    runs: dict[str, RunSpec] = {}
    for seed in suite.seeds:
        for combo in combos:
            for values in sweep_values:
                run = _run(suite, seed, dict(zip(COMPONENT_AXES, combo)), dict(zip(suite.sweep, values)), resolve,
                           evaluation, data)
                runs.setdefault(run.run_id, run)
    return list(runs.values())


def check_duplicates(suite: Suite, resolve: "_Resolver") -> None:
    """A ConfigError naming the first component listed twice on one axis of one grid (the same
    once its defaults are filled in: ``pixel`` and ``{name: pixel, params: {ratio: 0.6}}``), or
    the first sweep value listed twice: the same runs would be planned twice."""
    grids = suite.grids()
    for index, grid in enumerate(grids):
        where = f"grid[{index}]" if len(grids) > 1 else "grid"
        for axis in COMPONENT_AXES:
            seen: dict[Component, ComponentSpec] = {}
            for spec in getattr(grid, axis):
                component = resolve(axis, spec)
                if component in seen:
                    first, again = _written(seen[component]), _written(spec)
                    what = f"{first} is listed twice" if first == again else \
                        f"{first} and {again} are the same {axis} once its defaults are filled in ({component.text()})"
                    raise ConfigError(f"{where}.{axis}: {what}: the same runs would be planned twice")
                seen[component] = spec
    for path, values in suite.sweep.items():
        twice = next((i for i, v in enumerate(values) if any(_same(v, w) for w in values[:i])), None)
        if twice is not None:
            value = "null" if values[twice] is None else shown(values[twice])
            raise ConfigError(f"sweep {path}: {value} is listed twice: the same runs would be planned twice")


def _written(spec: ComponentSpec) -> str:
    """A component spec as the suite wrote it: ``pixel``, or ``{name: pixel, params: {ratio: 0.6}}``."""
    if not spec.params:
        return spec.name
    params = ", ".join(f"{k}: {json.dumps(v, default=repr)}" for k, v in spec.params.items())
    return cut(f"{{name: {spec.name}, params: {{{params}}}}}", 120)


def _same(a: Any, b: Any) -> bool:
    """Equal sweep values (1 and 1.0 are; True and 1 are not)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _run(suite: Suite, seed: int, combo: dict[str, ComponentSpec], swept: dict[str, Any], resolve: "_Resolver",
         evaluation: EvalSpec, data: DataSpec) -> RunSpec:
    """One run: the grid combination ``combo`` with the sweep's ``swept`` values set."""
    specs = {axis: spec.model_dump() for axis, spec in combo.items()}
    train = suite.train.model_dump()
    labels = evaluation.labels_per_class
    for key, value in swept.items():
        head, param = key.split(".", 1)
        if head == "train":
            train[param] = value
        elif head == "eval":  # eval.labels_per_class, the one eval key a sweep may set
            labels = value
        else:
            specs[head]["params"][param] = value
    try:
        train_config = TrainConfig.model_validate(train)
    except ValidationError as exc:
        raise ConfigError(f"sweep: train.{validation_message(exc)}") from None
    components = {axis: resolve(axis, ComponentSpec.model_validate(spec)) for axis, spec in specs.items()}
    evaluation = EvalSpec(evaluation.mask_seed, evaluation.batch_size, evaluation.reference_masker,
                          evaluation.probes, evaluation.dataset, labels, evaluation.classical_reference)
    return RunSpec(data.dataset, suite.image_size, seed, train_config, evaluation, data=data, **components)


def resolved_eval(suite: Suite, resolve: "_Resolver") -> EvalSpec:
    """The suite's eval section with every component resolved (baselines left out: they are runs
    of their own, and adding one must not change the pre-trained runs' ids)."""
    settings = suite.eval
    return EvalSpec(settings.mask_seed, settings.batch_size,
                    None if settings.reference_masker is None else resolve("masker", settings.reference_masker),
                    tuple(resolve("probe", probe) for probe in settings.probes),
                    None if settings.dataset is None else resolve("dataset", settings.dataset),
                    settings.labels_per_class, settings.classical_reference)


def data_spec(suite: Suite, dataset: Component, eval_dataset: Component | None) -> DataSpec:
    """Where the suite's jobs read their images from and how they hold them."""
    return DataSpec(dataset, eval_dataset, suite.image_size, suite.data.in_memory_gb, suite.data.workers,
                    bool(suite.eval.probes))


def expand_baselines(suite: Suite, runs: list[RunSpec]) -> list[BaselineSpec]:
    """The baseline runs: ``random-init`` once per (encoder config, seed) among ``runs``,
    ``pixels`` once per seed, ``supervised`` once per (encoder config, train settings, seed). They
    hold what their probes depend on, and no more."""
    if not runs or not suite.eval.probes:
        return []
    baselines: dict[str, BaselineSpec] = {}
    for run in runs:
        for kind in (kind for kind in BASELINE_KINDS if kind in suite.eval.baselines):
            job = baseline_of(run, kind)
            baselines.setdefault(job.run_id, job)
    return list(baselines.values())


class _Resolver:
    """``registry.resolve_params`` once per distinct component spec: a sweep of thousands of
    runs repeats the same few specs, and checking a signature is the slow part of expanding."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.resolved: dict[tuple[str, str, str], Component] = {}

    def __call__(self, kind: str, spec: ComponentSpec) -> Component:
        key = (kind, spec.name, json.dumps(spec.params, sort_keys=True, default=repr))
        if key not in self.resolved:
            self.resolved[key] = Component(spec.name, self.registry.resolve_params(kind, spec.name, spec.params))
        return self.resolved[key]
