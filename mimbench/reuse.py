"""Whether a finished run is reused or run again: the code that made it, the runs the user asked
to re-run, and the thread count it ran with.

A finished run is reused when its recorded code (:mod:`mimbench.provenance`) is the code loaded
now. When a component's code changed, the run is kept with a one-line note naming the component,
or run again with ``--rerun-changed``; ``--rerun KEY=VALUE`` runs again the runs that match. A run
run again has its old folder moved to ``superseded/`` (nothing is deleted).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from mimbench.errors import ConfigError, shown
from mimbench.provenance import CodeCache, changed_components, job_code
from mimbench.registry import Registry
from mimbench.schema import REFERENCE_AXES, TrainConfig
from mimbench.specs import Component, Job

#: What ``--rerun`` may select on, besides the axes and their params (``masker.ratio``, ``train.lr``).
SELECTOR_KEYS = (*REFERENCE_AXES, "seed", "run_id", "eval.labels_per_class")


@dataclass(frozen=True)
class ReusePolicy:
    """``rerun_changed``: run again the finished runs whose components' code changed (else keep
    them, saying so); ``rerun``: selectors (``{"masker": "diagonal"}``): a finished run matching
    every item of one of them runs again."""

    rerun_changed: bool = False
    rerun: tuple[Mapping[str, Any], ...] = ()


@dataclass
class Verdict:
    """What to do with one finished run: run it again or not, and the note that says why."""

    again: bool
    note: str = ""


@dataclass
class ReuseCheck:
    """Decides, for each finished run of a suite, whether it is run again (one cache of the code
    loaded now for the whole suite)."""

    registry: Registry
    policy: ReusePolicy = ReusePolicy()
    cache: CodeCache = field(default_factory=dict)

    def verdict(self, job: Job, recorded: Any) -> Verdict:
        """For a finished ``job`` whose ``config.json`` recorded ``code`` as ``recorded``."""
        if any(selected(job, selector) for selector in self.policy.rerun):
            return Verdict(True, "selected by --rerun")
        changes = changed_components(recorded, job_code(self.registry, job, self.cache))
        if not changes:
            return Verdict(False)
        what = "; ".join(changes)
        if self.policy.rerun_changed:
            return Verdict(True, f"code changed since it ran: {what}")
        return Verdict(False, f"kept, but its code changed since it ran: {what}; --rerun-changed runs it again")


def selected(job: Job, selector: Mapping[str, Any]) -> bool:
    """Whether ``job`` has every value of ``selector`` (``{"masker": "patch", "masker.ratio": 0.6,
    "seed": 1}``); a param not set explicitly is compared at its resolved default."""
    for key, value in selector.items():
        if key == "run_id":
            actual: Any = job.run_id
        elif key == "seed":
            actual = job.seed
        elif key == "eval.labels_per_class":
            actual = job.eval.labels_per_class
        else:
            axis, _, param = key.partition(".")
            owner = getattr(job, axis, None)
            if axis == "train":
                actual = getattr(owner, param, None)
            elif isinstance(owner, Component):
                if param and param not in owner.params:
                    return False  # a run whose component has no such param is not selected by it
                actual = owner.params.get(param) if param else owner.name
            else:
                return False
        if actual != value:
            return False
    return True


def parse_selectors(items: Sequence[str], option: str = "--rerun") -> tuple[dict[str, Any], ...]:
    """``["masker=diagonal", "masker=patch,seed=1"]`` -> one selector per item (its comma-separated
    ``KEY=VALUE`` pairs must all match), values read as YAML the way ``--set`` reads them
    (``2e-3`` is a number; a run id stays text); a malformed item, or a key given twice in one
    item, is a ConfigError."""
    import yaml

    from mimbench.suite import parse_yaml

    selectors = []
    for item in items:
        selector: dict[str, Any] = {}
        for pair in item.split(","):
            key, sep, text = pair.partition("=")
            key = key.strip()
            head = key.split(".", 1)[0]
            if not sep or not key or (key not in SELECTOR_KEYS and not ("." in key and head in (*REFERENCE_AXES, "train"))):
                raise ConfigError(f"{option} {shown(item)}: expected KEY=VALUE pairs (comma-separated), KEY one of "
                                  f"{', '.join(SELECTOR_KEYS)} or <axis>.<param>, e.g. masker=diagonal or "
                                  f"masker.ratio=0.6,seed=1")
            if key in selector:
                raise ConfigError(f"{option} {shown(item)}: {key} is given twice (a run has one value of it; "
                                  f"give another --rerun to select either)")
            try:
                selector[key] = text.strip() if key == "run_id" else parse_yaml(text)
            except yaml.YAMLError:
                raise ConfigError(f"{option} {shown(item)}: the value of {key} is not valid YAML") from None
        selectors.append(selector)
    return tuple(selectors)


def check_selectors(selectors: Sequence[Mapping[str, Any]], jobs: Sequence[Job], option: str = "--rerun") -> None:
    """A ConfigError for a selector key that no run of the suite has: a misspelled ``<axis>.<param>``
    (never a param of that axis's components) or ``train.<param>``, with the closest known key."""
    known = {f"train.{name}" for name in TrainConfig.model_fields}
    for job in jobs:
        for axis in REFERENCE_AXES:
            owner = getattr(job, axis, None)
            if isinstance(owner, Component):
                known.update(f"{axis}.{param}" for param in owner.params)
    for selector in selectors:
        for key in selector:
            if "." in key and key != "eval.labels_per_class" and key not in known:
                axis, _, param = key.partition(".")
                same_axis = sorted(k for k in known if k.startswith(f"{axis}."))
                close = difflib.get_close_matches(param, [k.partition(".")[2] for k in same_axis], n=1)
                raise ConfigError(f"{option} {shown(key)}: no run of this suite has that param"
                                  + (f"; did you mean {axis}.{close[0]}?" if close else "")
                                  + f" (known: {', '.join(same_axis) or 'none'})")
