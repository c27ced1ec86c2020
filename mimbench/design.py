"""The plan written down once: ``design.json``, what a suite's runs are and how they relate.

The planner knows every configuration, the label of every run and which baselines each trained
run is compared with; :func:`design` writes that down (the driver saves it in the suite folder
as ``design.json`` when it takes the folder), so that nothing downstream has to work it out again::

    {"version": 1,
     "configurations": {"<configuration id>": {"label": "vit/linear/patch/l1", "kind": "run",
                                               "components": {"encoder": "vit", ...}, "seeds": [0, 1]}},
     "runs": {"<run_id>": {"label": "vit/linear/patch/l1 seed=0", "configuration": "<configuration id>",
                           "seed": 0, "kind": "run",
                           "partners": {"random-init": "<run_id>", "pixels": "<run_id>"}}}}

A configuration is a run's config but its seed (its id hashes it the way a run id hashes the whole
config); its label is the run's label without the seed. ``kind`` is ``run`` for a pre-trained run,
else the baseline's kind (``random-init``, ``pixels``). A trained run's ``partners`` are its
baselines by kind: built the same way from the same seed and evaluated with the same settings
(the ``random-init`` one from the same encoder config); a baseline has none. Run labels are
those of :func:`mimbench.specs.run_labels`, the ones ``config.json`` and the console use.
"""

from __future__ import annotations

from typing import Any

from mimbench.schema import COMPONENT_AXES
from mimbench.specs import BaselineSpec, Job, RunSpec, config_id

#: The layout of design.json (raised when a key changes meaning).
DESIGN_VERSION = 1


def configuration_id(job: Job) -> str:
    """The id of ``job``'s configuration: its config without the seed, hashed as a run id is."""
    return config_id({key: value for key, value in job.config().items() if key != "seed"})


def partners(run: RunSpec, baseline_ids: set[str]) -> dict[str, str]:
    """The baselines a trained run is compared with, by kind: those among ``baseline_ids`` built
    from its seed, dataset and evaluation (``random-init``: and its encoder config)."""
    found = {}
    for kind in ("random-init", "pixels"):
        encoder = run.encoder if kind == "random-init" else None
        candidate = BaselineSpec(kind, run.dataset, run.image_size, run.seed, run.eval, encoder, run.data)
        if candidate.run_id in baseline_ids:
            found[kind] = candidate.run_id
    return found


def design(jobs: list[Job], labels: dict[str, str]) -> dict[str, Any]:
    """``design.json``'s content for the plan's ``jobs`` (runs, then baselines) and their ``labels``."""
    baseline_ids = {job.run_id for job in jobs if isinstance(job, BaselineSpec)}
    configurations: dict[str, dict[str, Any]] = {}
    runs: dict[str, dict[str, Any]] = {}
    for job in jobs:
        kind = "run" if isinstance(job, RunSpec) else job.kind
        configuration = configuration_id(job)
        label = labels[job.run_id]
        entry = configurations.setdefault(configuration, {
            "label": label.rsplit(" seed=", 1)[0], "kind": kind, "components": _components(job), "seeds": []})
        entry["seeds"].append(job.seed)
        runs[job.run_id] = {"label": label, "configuration": configuration, "seed": job.seed, "kind": kind,
                            "partners": partners(job, baseline_ids) if isinstance(job, RunSpec) else {}}
    return {"version": DESIGN_VERSION, "configurations": configurations, "runs": runs}


def _components(job: Job) -> dict[str, str]:
    """Each component of ``job`` by axis, as ``name(param=value,...)`` (all params, resolved)."""
    parts = {"dataset": job.dataset}
    if isinstance(job, RunSpec):
        parts.update({axis: getattr(job, axis) for axis in COMPONENT_AXES})
    elif job.encoder is not None:
        parts["encoder"] = job.encoder
    return {axis: spec.text() for axis, spec in parts.items()}
