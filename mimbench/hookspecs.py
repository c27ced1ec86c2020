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

    ``factory(**params)`` returns a callable
    ``masker(images: Tensor[B, C, H, W], generator: torch.Generator | None = None)
    -> BoolTensor[B, H, W]`` where True means *hidden*. The mask must be made on
    ``images.device``, for the whole batch at once (no per-sample Python loop),
    and be reproducible for a given generator. The images are already
    normalised; most maskers only use their shape and device.

    Optional: a class attribute ``deterministic = True`` declares a masker that
    ignores the generator (e.g. MAE's regular grid), so the conformance checks
    do not expect another mask for another seed.
    """


@hookspec
def mimbench_register_encoders(register: Register) -> None:
    """Register encoders.

    ``factory(in_channels: int, image_size: int, **params) -> nn.Module`` with
    int attributes ``out_dim`` and ``stride`` and
    ``forward(images: Tensor[B, C, H, W], mask: BoolTensor[B, H, W] | None = None)
    -> Tensor[B, out_dim, H / stride, W / stride]``.

    The core zeroes hidden pixels before calling ``forward``; ``mask`` tells the
    encoder what was hidden (e.g. to put a mask token on fully hidden patches, or
    to drop them, MAE style, as long as the full feature grid is returned).
    ``mask=None`` means nothing is hidden (probing).

    Optional: ``blocks(images) -> list[Tensor[B, D_i, H_i, W_i]]``, the feature
    grid after each block or stage (unmasked), for layer-wise probing; the last one
    should equal ``forward(images)``.

    Optional: ``param_depths() -> (dict[param name, depth], num_blocks)`` for layer-wise
    lr decay when fine-tuning (0 = embeddings, i + 1 = block i); without it every
    encoder parameter gets the same decayed lr.

    Optional: ``backbone() -> mimbench.plugin.Backbone`` for ``mimbench export``: the
    encoder's weights as the state_dict of a plain model of another library (timm,
    torchvision, torch), without what only masked pre-training needs (the mask token), and
    the Python that builds that model. An encoder built with a ``pretrained`` param gets
    ``pretrained=False`` when rebuilt for export (its weights come from ``encoder.pt``).
    """


@hookspec
def mimbench_register_decoders(register: Register) -> None:
    """Register decoders.

    ``factory(in_dim: int, stride: int, out_channels: int, image_size: int, **params)
    -> nn.Module`` with ``forward(features: Tensor[B, in_dim, H / stride, W / stride],
    mask: BoolTensor[B, H, W] | None = None) -> Tensor[B, out_channels, H, W]``:
    a prediction of the run's target (``mimbench_register_targets``) on its grid. For the
    default target (``pixels``) that is the normalised image: ``out_channels`` = C, ``stride`` =
    the encoder's, ``image_size`` = the image's. For a target of D channels at stride s, the
    decoder is built with ``out_channels`` = D, ``stride`` = encoder stride / s and
    ``image_size`` = image size / s, and its ``mask`` is the mask on that grid.
    """


@hookspec
def mimbench_register_losses(register: Register) -> None:
    """Register reconstruction losses.

    ``factory(**params)`` returns a callable
    ``loss(pred: Tensor[B, D, h, w], target: Tensor[B, D, h, w], mask: BoolTensor[B, h, w])
    -> Tensor[]`` (a scalar to minimise): the prediction and the run's target on the target's
    grid (the image's for ``pixels``), ``mask`` True at hidden cells. Built-ins take
    ``masked_only: bool = True``.

    Optional: a loss that trains the decoder on a transformed target (the built-ins' ``norm_pix``
    param, the same as ``target: norm_pix``, kept so that suites written before targets keep their
    run ids; refused with any other target) sets an attribute ``prediction_to_image(pred, target) -> Tensor``
    that maps a prediction back to the normalised image, so reconstruction metrics
    stay in pixel space. If it needs the target's statistics (norm_pix does: each
    hidden patch's mean and std), the summary marks the run with
    ``recon_uses_target_stats`` true: its reconstruction numbers were given
    information the model did not have and are not comparable with other runs'.
    """


@hookspec
def mimbench_register_targets(register: Register) -> None:
    """Register prediction targets: what the decoder must predict at hidden positions.

    ``factory(in_channels: int, image_size: int, **params)`` (and ``encoder: nn.Module`` if
    declared: the run's encoder as built before training, e.g. to copy it as a teacher) returns a
    target with int attributes ``channels`` (D) and ``stride`` (s, dividing the encoder's stride)
    and ``__call__(images: Tensor[B, C, H, W]) -> Tensor[B, D, H / s, W / s]``: the images are the
    normalised, augmented batch before masking, the call is made under ``torch.no_grad()``.

    The core builds the decoder for that grid (``out_channels`` D, ``stride`` = encoder stride / s,
    ``image_size`` = H / s), brings the mask to it (a cell is hidden when all its s x s pixels are:
    the loss never asks for a cell whose pixels the encoder partly saw), and calls
    ``loss(pred, target(images), mask_on_grid)``. A masker that hides no whole cell is refused
    before training.

    Optional:

    - ``predicts_image = True``: the target is the normalised image itself (``pixels``); no
      ``target_loss`` column is recorded (``recon_mse`` is that loss's measure);
    - ``to_image(pred, images) -> Tensor[B, C, H, W]``: the image a prediction stands for, so that
      ``recon_mse`` / ``recon_psnr`` are measured in pixel space; without it they are left empty and
      ``target_loss`` (the loss on hidden cells of the test split, under the evaluation masks) is
      the run's reconstruction measure. ``uses_target_stats = True`` when ``to_image`` needs the
      target's own statistics (``norm_pix``): the run is marked ``recon_uses_target_stats``;
    - a target that is an ``nn.Module`` moves to the run's device with the model, is saved with
      the run (``target.pt``, its ``state_dict``) and may define
      ``update(encoder: nn.Module, step: int, total_steps: int)``, called after every optimizer
      step (``step`` from 1) with the encoder being trained (``ema_teacher``). Its parameters
      must not require gradients: the core does not train them. Its forward pass is part of a
      training step's FLOPs.
    """


@hookspec
def mimbench_register_datasets(register: Register) -> None:
    """Register datasets.

    ``factory(split: str, **params)`` with ``split`` in ``{"train", "test"}``
    returns a ``torch.utils.data.Dataset`` of ``(image, label)`` pairs, image a
    float Tensor[C, H, W] in [0, 1], label an int, and exposes ``num_classes``.
    If the factory declares an ``image_size`` parameter the core passes the
    suite's ``image_size``; whatever comes back is resized to it. Returning a
    ``mimbench.plugin.TensorImageDataset`` (uint8 tensors in memory) lets the core
    move the data to the device once and batch it by indexing.

    A dataset declares that it carries segmentation masks (for dense probes) with the attributes
    ``masks`` (uint8 Tensor[N, H, W], a class per pixel, 255 = no label) and ``mask_classes``
    (``TensorImageDataset(..., masks=..., mask_classes=...)``); masks are resized with the images
    (nearest). Its int ``label`` per image still feeds the classification probes.
    """


@hookspec
def mimbench_register_probes(register: Register) -> None:
    """Register downstream evaluations.

    ``factory(**params)`` returns a callable
    ``probe(context: mimbench.plugin.ProbeContext) -> dict[str, float]``
    whose keys become summary columns (e.g. ``{"linear_acc": 0.87}``). The context holds
    the frozen ``encoder`` (eval mode, on ``device``), the labelled ``train`` and ``test``
    splits (uint8 batches on the device: ``batches(batch_size, generator=None)``),
    ``normalize`` (the pre-training normalisation), ``num_classes``, ``seed``, and
    ``features(layer)``: mean-pooled features of unmasked images, Tensor[N, D] per split,
    extracted once per run and shared by all its probes (``layer``: ``"last"`` or a block
    index; ``block_features()`` gives every block). ``mimbench.plugin.layerwise`` turns a
    scoring function into the ``layer`` param's columns (``<name>_acc@<block>``...).
    A probe must not change the encoder: train a copy (see ``finetune``). Baselines go
    through the same probes with an untrained encoder or ``RawPixels``.

    A dense probe sets ``needs_masks = True`` (a suite whose probe datasets carry no masks exits 2
    before training) and reads ``context.dense(split, layer)``: the feature grids of unmasked images
    [N, D, h, w] with their masks [N, S, S], extracted once per run and shared (the pixels
    baseline's grid is each 4 px square's raw pixels).

    The probe may declare the columns it returns with a method
    ``metric_columns() -> list[mimbench.plugin.MetricColumn]``: the report's headline table
    (``table.md``, ``table.tex``), its figures and the console line show the declared columns
    (with ``headline=True``), by their ``name``, ``axis`` label and ``digits``; a column of
    ``kind="accuracy"`` also gets its gain over the random-init baseline (Δ) and the probe
    figures. ``mimbench.plugin.accuracy_columns(key, name, layer)`` declares a top-1 accuracy
    scored through ``layerwise`` (with ``layer: all``, its best block too), e.g.
    ``accuracy_columns("linear_acc", "linear", self.layer)``. Columns returned but not declared
    (per-block ``<name>_acc@<block>``, diagnostics) are still in ``summary.csv`` and
    ``table.csv``, just not shown in the headline table, figures or console line.
    """


@hookspec
def mimbench_register_executors(register: Register) -> None:
    """Register executors: what runs a suite's tasks (``local``, ``ray``, ``submitit``...).

    ``factory(suite_dir: str, threads_per_run: int, **params)`` (each only if declared:
    ``suite_dir`` the suite folder, e.g. for an engine's log files; ``threads_per_run`` the torch
    threads every task sets on its worker, ``execution.threads_per_run`` resolved, e.g. to ask the
    engine for that many CPUs per run) returns an object with:

    - ``in_process: bool``: True when tasks run in the driver's own process;
    - ``threads: int | None``: informative only (each task carries its threads: ``task.threads``);
    - ``run(tasks: list[mimbench.plugin.Task]) -> Iterator[tuple[Task, Outcome]]``: start every
      task and yield each with its outcome as it finishes, in any order. A task is plain,
      picklable data; a worker anywhere executes it with ``mimbench.plugin.run_task(task) ->
      Outcome``, which rebuilds the registry from the plugin sources the task carries, loads
      the data (cached per process) and writes only the task's run folder; it catches every
      exception of its run. What escapes is a system failure (the worker died): retry it if the
      engine can, else yield ``Outcome.failed(message)``;
    - ``in_flight() -> int``: tasks started or queued and not finished;
    - ``cancel()``: stop what is queued or running (called on Ctrl-C);
    - optionally ``close()``: called once when the suite is over (``run`` may be called more
      than once per suite: runs that evaluate an encoder another run pre-trains come second).

    The params come from the suite's ``execution`` mapping (``{executor: ray, gpus_per_run:
    0.25}``) and ``--set execution.<param>=...``; they are checked against the factory's
    signature like any component's. An executor whose engine is not installed raises
    ``mimbench.plugin.ConfigError`` with the pip command to run (exit 2).
    """


@hookspec
def mimbench_register_trackers(register: Register) -> None:
    """Register experiment trackers (``tensorboard``, ``mlflow``...), enabled per suite with
    ``trackers: [NAME, {name: NAME, params: {...}}]`` or ``mimbench run --tracker NAME``.

    ``factory(suite_dir: str, **params)`` (``suite_dir`` only if declared: the suite folder,
    absolute) returns a tracker. The worker that executes a run (in the driver's process with
    the ``local`` executor, else on a Ray or SLURM worker) builds one tracker object per run
    and calls, in this order:

    - ``run_started(run_dir: Path, config: dict)``: ``config`` is the run's ``config.json``
      (resolved config, ``run_id``, ``suite``, ``label``, normalisation, versions);
    - ``step_logged(run_dir: Path, step: int, values: dict)`` (optional: a tracker without
      it gets no such calls) every ``train.log_every`` steps, when the trainer reads the loss
      back anyway: ``step`` is the global optimizer step (from 1), ``values`` ``loss`` (the mean
      over the steps since the previous read of this epoch) and ``lr`` (see
      ``mimbench_step_logged``);
    - ``epoch_finished(run_dir: Path, row: dict)`` after each pre-training epoch: the
      ``history.csv`` row (``epoch``, ``loss``, ``lr``, ``images_per_second``, ``seconds``).
      A run that evaluates an encoder another run pre-trained reports that run's history;
      baselines have no epochs;
    - ``run_finished(run_dir: Path, record: dict)``: the run's summary row (as in
      ``summary.csv``: ids, ``status``, metrics, ``<kind>.<param>`` params), after
      ``metrics.json`` (or ``error.txt``) is written. When probes are added to a run finished
      earlier, its tracker gets ``run_finished`` alone, with the new columns; so does a run that
      failed before its ``config.json`` was written (e.g. its data could not be loaded).

    Optional: ``prepare()``, called once per suite by the driver before the first run starts
    (e.g. to create a database that several workers then share).

    The factory is also built by the driver before anything runs, so that bad params or a
    missing dependency (raise ``mimbench.plugin.ConfigError`` with the pip command) exit 2.
    Import heavy libraries inside the methods, not at module import. A tracker that raises
    is a warning on the console (its other calls for that run are skipped), never a failed
    run. Trackers are not part of any run id.
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
