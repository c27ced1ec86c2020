"""The plugin contract: every hook a mimbench plugin may implement.

A plugin is any module or object with functions decorated by ``mimbench.plugin.hookimpl``
whose names are listed here. The ``register_*`` hooks receive a ``register``
callback::

    register(name: str, factory: Callable, description: str | None = None)

``description`` defaults to the first line of the factory's docstring. A name
registered twice (by any two plugins) is an error that names both providers.

Factories are classes or functions with type-annotated keyword parameters; a
suite's ``params`` are validated against that signature before anything runs.
A param that sizes memory or time declares its range on its annotation, with
``Interval`` from ``mimbench.plugin`` (annotated-types)::

    bins: Annotated[int, Interval(ge=2, le=360)] = 9

and a value outside it is refused by ``--dry-run`` and ``run`` (one line, exit 2).
Encoders and decoders are also built once on the meta device before they are built
for real, and refused when their training state cannot fit the device's memory
(see ``mimbench.preflight``).
Parameters that the core supplies (``in_channels``, ``image_size``, ``split``...)
are listed per kind below and cannot be set from a suite.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    import click

hookspec = pluggy.HookspecMarker("mimbench")
#: Decorator for plugin hook implementations (``from mimbench.plugin import hookimpl``).
hookimpl = pluggy.HookimplMarker("mimbench")

Register = Callable[..., None]


@hookspec
def mimbench_register_maskers(register: Register) -> None:
    """Register mask strategies.

    ``register(name, factory)``: ``factory(**params)`` returns a
    :class:`mimbench.plugin.Masker`, whose class documents the contract (what is required, every
    optional capability and its default); a component lacking what is required is refused when
    it is built (exit 2 before anything runs).
    """


@hookspec
def mimbench_register_encoders(register: Register) -> None:
    """Register encoders.

    ``register(name, factory)``: ``factory(in_channels: int, image_size: int, **params)`` returns a
    :class:`mimbench.plugin.Encoder`, whose class documents the contract (what is required, every
    optional capability and its default); a component lacking what is required is refused when
    it is built (exit 2 before anything runs).
    """


@hookspec
def mimbench_register_decoders(register: Register) -> None:
    """Register decoders.

    ``register(name, factory)``: ``factory(in_dim: int, stride: int, out_channels: int, image_size: int, **params)`` returns a
    :class:`mimbench.plugin.Decoder`, whose class documents the contract (what is required, every
    optional capability and its default); a component lacking what is required is refused when
    it is built (exit 2 before anything runs).
    """


@hookspec
def mimbench_register_losses(register: Register) -> None:
    """Register reconstruction losses.

    ``register(name, factory)``: ``factory(**params)`` returns a
    :class:`mimbench.plugin.Loss`, whose class documents the contract (what is required, every
    optional capability and its default); a component lacking what is required is refused when
    it is built (exit 2 before anything runs).
    """


@hookspec
def mimbench_register_targets(register: Register) -> None:
    """Register prediction targets (what the decoder must predict at hidden positions).

    ``register(name, factory)``: ``factory(in_channels: int, image_size: int, **params)`` returns a
    :class:`mimbench.plugin.Target`, whose class documents the contract (what is required, every
    optional capability and its default); a component lacking what is required is refused when
    it is built (exit 2 before anything runs).
    """


@hookspec
def mimbench_register_datasets(register: Register) -> None:
    """Register datasets.

    ``register(name, factory)``: ``factory(split: str, **params)`` returns a
    :class:`mimbench.plugin.Dataset`, whose class documents the contract (what is required, every
    optional capability and its default); a component lacking what is required is refused when
    it is built (exit 2 before anything runs).
    """


@hookspec
def mimbench_register_probes(register: Register) -> None:
    """Register downstream evaluations.

    ``register(name, factory)``: ``factory(**params)`` returns a
    :class:`mimbench.plugin.Probe`, whose class documents the contract (what is required, every
    optional capability and its default); a component lacking what is required is refused when
    it is built (exit 2 before anything runs).
    """


@hookspec
def mimbench_register_executors(register: Register) -> None:
    """Register executors, what runs a suite's tasks (``local``, ``ray``, ``submitit``...).

    ``register(name, factory)``: ``factory(suite_dir: str, threads_per_run: int, **params)`` returns a
    :class:`mimbench.plugin.Executor`, whose class documents the contract (what is required, every
    optional capability and its default); a component lacking what is required is refused when
    it is built (exit 2 before anything runs).
    """


@hookspec
def mimbench_register_trackers(register: Register) -> None:
    """Register experiment trackers (``tensorboard``, ``mlflow``...), enabled per suite with ``trackers: [NAME, {name: NAME, params: {...}}]`` or ``mimbench run --tracker NAME``.

    ``register(name, factory)``: ``factory(suite_dir: str, **params)`` returns a
    :class:`mimbench.plugin.Tracker`, whose class documents the contract (what is required, every
    optional capability and its default); a component lacking what is required is refused when
    it is built (exit 2 before anything runs).
    """


@hookspec
def mimbench_register_commands(cli: "click.Group") -> None:
    """Add commands to the ``mimbench`` command line (``cli.add_command(...)``).

    Called on the plugins of other distributions and those of ``$MIMBENCH_PLUGINS``, not on
    mimbench's built-ins (which add none), when ``mimbench --help`` lists the commands or a name is
    not a built-in command: so that help stays fast, a plugin that adds a command should import
    only ``hookimpl`` (and click) at module level and anything heavy (torch) inside the command."""


@hookspec
def mimbench_run_started(run_dir: Path, config: dict[str, Any]) -> None:
    """Called when a run starts executing, after its ``config.json`` is written, with its folder
    and that config (see ``mimbench_register_trackers``). Baselines and runs that only evaluate
    an encoder another run pre-trained start too.

    Like ``mimbench_step_logged``, ``mimbench_epoch_finished`` and ``mimbench_run_finished``, it is
    called by the worker that executes the run (:func:`mimbench.worker.execute`): in the driver's process with the
    ``local`` executor, in a Ray task or a SLURM job otherwise, so a plugin that implements it
    must be installed (or passed with ``--plugin``) where the runs execute. An exception in any
    of the four is a warning that names the plugin (its other calls for that run are skipped)
    and does not change the run's result.
    """


@hookspec
def mimbench_epoch_finished(run_dir: Path, row: dict[str, Any]) -> None:
    """Called after each pre-training epoch with the run's folder and the epoch's ``history.csv``
    row: ``epoch`` (from 1), ``loss`` (mean over the epoch), ``lr`` (at its end),
    ``images_per_second``, ``seconds``. A run that evaluates an encoder another run pre-trained
    (same pre-training, other ``eval.labels_per_class``) reports that run's history, copied with
    it. Called where the run executes (see ``mimbench_run_started``)."""


@hookspec
def mimbench_step_logged(run_dir: Path, step: int, values: dict[str, float]) -> None:
    """Called every ``train.log_every`` optimizer steps of a pre-training, with the run's folder,
    the global step (from 1, counted across epochs) and ``values``: ``loss`` (the mean loss of
    the steps since the previous call in the same epoch, or since the epoch began) and ``lr``
    (after the step). The loss is the one the trainer reads back to the host at that step anyway:
    no other synchronisation is made for it. Under ``train.devices`` > 1 the loss is the mean
    over the ranks, and only rank 0's values are sent, through the run's process. A run that
    evaluates an encoder another run pre-trained, and a baseline, have no steps.
    Called where the run executes (see ``mimbench_run_started``), before the epoch's
    ``mimbench_epoch_finished``."""


@hookspec
def mimbench_run_finished(run_dir: Path, record: dict[str, Any]) -> None:
    """Called after each run is written to disk (``metrics.json``, or ``error.txt`` for a failed
    run), with its folder and its summary row (as in ``summary.csv``: ``run_id``, ``status``,
    the metrics, ``<kind>.<param>`` params).

    Called where the run executes (see ``mimbench_run_started``), by the worker, once per
    executed task: also when probes were added to a run finished earlier (with the new
    columns). Not called for a run skipped as already finished, nor when the worker process
    itself died (the driver then records the run as failed).
    """
