"""A run's events (started, epoch finished, finished), delivered where the run executes.

:class:`RunEvents` is what :func:`mimbench.worker.execute` calls, in whatever process runs the
task (the driver's with the ``local`` executor, a Ray or SLURM worker otherwise). Each event is
one call of its hook (``mimbench_run_started``, ``mimbench_step_logged``, ``mimbench_epoch_finished``,
``mimbench_run_finished``), made through pluggy for every observer on its own: each plugin that
implements the hook, and each of the suite's trackers (``trackers:`` in the suite, ``--tracker
NAME``), which is attached as a hook implementation (:class:`TrackerHooks`) built once per run.
An observer that raises becomes one warning and is skipped for the rest of that run: a tracker
never fails a run. A warning is one line, its error cut short (:data:`WARNING_ERROR`).

:func:`build_trackers` and :func:`prepare_trackers` are what the driver calls once per suite (the
first to fail on bad input before anything runs, the second before the first run starts).
:func:`run_params` and :func:`final_metrics` flatten a run's config and summary row the same way
for every tracker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import pluggy

from mimbench import columns, hookspecs
from mimbench.errors import ConfigError, cut, one_line
from mimbench.hookspecs import hookimpl
from mimbench.protocols import capability
from mimbench.registry import Registry
from mimbench.specs import Component

#: The run's events: the hook each one calls, and the tracker method that hook reaches.
EVENT_HOOKS = {"mimbench_run_started": "run_started", "mimbench_step_logged": "step_logged",
               "mimbench_epoch_finished": "epoch_finished", "mimbench_run_finished": "run_finished"}
#: The methods every tracker object has (``step_logged`` is optional).
TRACKER_METHODS = ("run_started", "epoch_finished", "run_finished")
#: The most characters of an observer's error a warning quotes (the whole line stays well under
#: :data:`mimbench.errors.MAX_LINE`).
WARNING_ERROR = 200


def check_tracker(name: str, tracker: Any) -> None:
    """Raise ValueError when ``tracker`` lacks one of the three tracker methods."""
    missing = [m for m in TRACKER_METHODS if not callable(getattr(tracker, m, None))]
    if missing:
        raise ValueError(f"tracker {name!r} has no {', '.join(missing)} method "
                         f"(a tracker needs {', '.join(TRACKER_METHODS)})")


def build_trackers(registry: Registry, specs: Sequence[Component], suite_dir: str | Path) -> list[tuple[str, Any]]:
    """Each tracker of ``specs`` (resolved), built once, with its name: a bad param, a missing
    extra or a tracker without the three methods is a ConfigError (exit 2)."""
    built = []
    for spec in specs:
        tracker = registry.construct("tracker", spec.name, dict(spec.params), suite_dir=str(suite_dir))
        try:
            check_tracker(spec.name, tracker)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        built.append((spec.name, tracker))
    return built


def prepare_trackers(registry: Registry, specs: Sequence[Component], suite_dir: str | Path) -> list[str]:
    """Call each tracker's optional ``prepare()`` once (the driver does, before the first run);
    returns a warning per failure: the runs still run, and say so again if the tracker is broken."""
    warnings = []
    for name, tracker in build_trackers(registry, specs, suite_dir):
        prepare = capability("tracker", tracker, "prepare")
        if prepare is not None:
            try:
                prepare()
            except Exception as exc:
                warnings.append(f"tracker {name!r} failed to prepare: {cut(one_line(exc), WARNING_ERROR)}")
    return warnings


class TrackerHooks:
    """A tracker as an implementation of the run's event hooks."""

    def __init__(self, tracker: Any):
        self.tracker = tracker

    @hookimpl
    def mimbench_run_started(self, run_dir: Path, config: dict[str, Any]) -> None:
        self.tracker.run_started(Path(run_dir), config)

    @hookimpl
    def mimbench_step_logged(self, run_dir: Path, step: int, values: dict[str, float]) -> None:
        step_logged = capability("tracker", self.tracker, "step_logged")
        if step_logged is not None:
            step_logged(Path(run_dir), step, values)

    @hookimpl
    def mimbench_epoch_finished(self, run_dir: Path, row: dict[str, Any]) -> None:
        self.tracker.epoch_finished(Path(run_dir), row)

    @hookimpl
    def mimbench_run_finished(self, run_dir: Path, record: dict[str, Any]) -> None:
        self.tracker.run_finished(Path(run_dir), record)


def _tracker_hooks(tracker: Any) -> pluggy.HookRelay:
    """A plugin manager holding ``tracker`` alone (as :class:`TrackerHooks`): its hooks reach it only."""
    manager = pluggy.PluginManager("mimbench")
    manager.add_hookspecs(hookspecs)
    manager.register(TrackerHooks(tracker))
    return manager.hook


class RunEvents:
    """One run's observers: the plugins' hook implementations and the suite's trackers.

    ``trackers`` are resolved specs; each is built here, with ``suite_dir``. Every failure,
    building a tracker included, is collected in ``warnings``.
    """

    def __init__(self, registry: Registry, trackers: Sequence[Component], suite_dir: str | Path):
        self.warnings: list[str] = []
        self._skipped: set[str] = set()
        #: who -> for each event hook, a caller that reaches that observer alone
        self._observers: dict[str, dict[str, Any]] = {}
        for hook_name in EVENT_HOOKS:
            for plugin_name, caller in registry.plugins.each(hook_name):
                self._observers.setdefault(f"plugin {plugin_name!r}", {})[hook_name] = caller
        for spec in trackers:
            who = f"tracker {spec.name!r}"
            try:
                tracker = registry.construct("tracker", spec.name, dict(spec.params), suite_dir=str(suite_dir))
                check_tracker(spec.name, tracker)
            except Exception as exc:
                self._fail(who, "its factory", exc, run="")
                continue
            hooks = _tracker_hooks(tracker)
            self._observers[who] = {hook_name: getattr(hooks, hook_name) for hook_name in EVENT_HOOKS}

    def started(self, run_dir: Path, config: dict[str, Any]) -> None:
        """The run's ``config.json`` is written and the run begins."""
        self._emit("mimbench_run_started", run_dir, config=config)

    def step(self, run_dir: Path, step: int, values: dict[str, float]) -> None:
        """The trainer read the loss back at global ``step`` (every ``train.log_every`` steps)."""
        self._emit("mimbench_step_logged", run_dir, step=step, values=values)

    def epoch(self, run_dir: Path, row: dict[str, Any]) -> None:
        """A pre-training epoch ended; ``row`` is its ``history.csv`` row."""
        self._emit("mimbench_epoch_finished", run_dir, row=row)

    def finished(self, run_dir: Path, record: dict[str, Any]) -> None:
        """The run is on disk; ``record`` is its summary row."""
        self._emit("mimbench_run_finished", run_dir, record=record)

    def _emit(self, hook_name: str, run_dir: Path, **value: Any) -> None:
        for who, callers in self._observers.items():
            caller = callers.get(hook_name)
            if caller is None or who in self._skipped:
                continue
            try:
                caller(run_dir=Path(run_dir), **value)
            except Exception as exc:  # an observer never fails the run
                what = EVENT_HOOKS[hook_name] if who.startswith("tracker") else hook_name
                self._fail(who, what, exc, run=Path(run_dir).name)

    def _fail(self, who: str, what: str, exc: Exception, run: str) -> None:
        self._skipped.add(who)
        where = f" for run {run}" if run else ""
        self.warnings.append(f"{who} failed in {what}{where} ({cut(one_line(exc), WARNING_ERROR)}); its other calls for this run are skipped")


def run_params(config: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """A run's ``config.json`` as flat ``key -> scalar``: ``run_id``, ``suite``, ``label``,
    ``seed``, ``image_size``, ``baseline`` and ``pretrained_in`` when set, each component's name
    (``encoder``...) and params (``encoder.dim``...), ``train.<key>`` and ``eval.<key>``; lists and
    mappings as canonical JSON, nulls left out."""
    flat: dict[str, Any] = {}
    for key in ("run_id", "suite", "label", "seed", "image_size", "baseline", "pretrained_in"):
        flat[key] = config.get(key)
    for kind in ("dataset", "encoder", "decoder", "masker", "loss", "target"):
        spec = config.get(kind)
        if isinstance(spec, dict):
            flat[kind] = spec.get("name")
            flat.update({f"{kind}.{k}": v for k, v in (spec.get("params") or {}).items()})
    for section in ("train", "eval"):
        flat.update({f"{section}.{k}": v for k, v in (config.get(section) or {}).items()})
    return {key: _scalar(value) for key, value in flat.items() if value is not None}


def _scalar(value: Any) -> str | int | float | bool:
    if isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def final_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The numbers a summary row measures (:func:`mimbench.columns.measured`): every numeric value
    but the ids and the ``<kind>.<param>`` params; NaN and missing values left out."""
    return columns.measured(record)
