"""The plugin author's front door: everything a component may import from mimbench, and nothing
else (the built-in plugins import only this module too).

- ``hookimpl``: decorate the hooks of :mod:`mimbench.hookspecs` (``mimbench_register_maskers``...);
- the contract of each kind (:mod:`mimbench.protocols`): ``Masker``, ``Encoder``, ``Decoder``, ``Loss``,
  ``Target``, ``Dataset``, ``Probe``, ``Executor``, ``Tracker``, each with its optional capabilities
  and their defaults (a component conforms without inheriting; checked when it is built);
- ``Interval``: a param's declared range, ``Annotated[int, Interval(ge=2, le=360)]`` (annotated-types;
  its ``Ge``, ``Gt``, ``Le``, ``Lt`` work too): a suite value outside it is refused before anything runs;
- the contracts a component is checked against at run time: ``ConfigError`` (bad input, exit 2),
  ``ContractError``, ``missing_extra`` (the one-line error for a missing optional dependency),
  ``one_line`` and ``first_line`` (how an exception is named in one line);
- datasets: ``TensorImageDataset``;
- probes: ``ProbeContext``, ``Layer``, ``check_layer``, ``layerwise``, ``dense_grid`` (an encoder's
  feature grid of any images), ``MetricColumn``,
  ``accuracy_columns``, ``channel_stats``, ``selection`` (hyper-parameters chosen on held-out train data), and the training numerics ``autocast_for``, ``param_groups``, ``warmup_cosine``;
- ``diagnostics`` (RankMe, α-ReQ, attention distance and entropy, head diversity, linear CKA);
- losses: ``metrics`` (PSNR and the squared error of hidden pixels, as the core computes them);
- encoders: ``Backbone`` and ``renamed`` (for ``backbone()``, see ``mimbench export``);
- executors: ``Task``, ``Outcome``, ``run_task`` and ``Worker`` (what a task is and how a worker runs
  it; a ``Worker`` keeps one runtime, its plugins, device and loaded data, from task to task);
- trackers: ``RunFolder`` (a run's files), ``run_params`` and ``final_metrics`` (a run's config
  and summary row, flattened the same way for every tracker);
- ``testing``: the conformance checks to run on a component in its own tests.
"""

from typing import Any

from annotated_types import Interval

from mimbench.errors import ConfigError, ContractError, first_line, missing_extra, one_line
from mimbench.hookspecs import hookimpl
from mimbench.protocols import Dataset, Decoder, Encoder, Executor, Loss, Masker, Probe, Target, Tracker


def __getattr__(name: str) -> Any:
    """The rest of the door, imported on first use: a plugin that needs only ``hookimpl`` (one that
    adds a command, say) does not import torch, so ``mimbench --help`` stays fast."""
    if name not in __all__:
        raise AttributeError(f"module 'mimbench.plugin' has no attribute {name!r}")
    globals().update(_heavy())
    return globals()[name]


def _heavy() -> dict[str, Any]:
    from mimbench import diagnostics, metrics, selection, testing
    from mimbench.columns import MetricColumn, accuracy_columns
    from mimbench.data import TensorImageDataset
    from mimbench.export import Backbone, renamed
    from mimbench.folder import RunFolder
    from mimbench.jobs import Outcome, Task
    from mimbench.optim import autocast_for, param_groups, warmup_cosine
    from mimbench.probing import Layer, ProbeContext, channel_stats, check_layer, dense_grid, layerwise
    from mimbench.tracking import final_metrics, run_params
    from mimbench.worker import Worker, run_task

    return dict(locals())


__all__ = ["Backbone", "ConfigError", "ContractError", "Dataset", "Decoder", "Encoder", "Executor", "Interval", "Layer",
           "Loss", "Masker", "Probe", "Target", "Tracker", "MetricColumn", "Outcome", "ProbeContext", "RunFolder",
           "Task", "TensorImageDataset", "accuracy_columns", "autocast_for", "channel_stats", "check_layer", "dense_grid",
           "diagnostics", "final_metrics",
           "first_line", "hookimpl", "layerwise", "metrics", "missing_extra", "one_line", "param_groups", "renamed",
           "run_params", "run_task", "selection", "testing", "warmup_cosine", "Worker"]
