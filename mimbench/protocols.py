"""The contract of each kind of component, one class per kind: what a factory registered with
``mimbench_register_<kind>s`` must return.

The classes are :class:`typing.Protocol`\\ s: a component conforms by having what its class lists,
without inheriting from it; a class that does inherit gets the optional capabilities' defaults
(``deterministic = False``...). Every optional capability is an attribute of the class with its
default, so that what the core may ask of a component is written here, once. Shapes: B batch, C
image channels, H x W pixels, D feature or target channels.

Import them from the plugin door: ``from mimbench.plugin import Masker, Encoder, Decoder, Loss,
Target, Probe, Dataset, Executor, Tracker``. :func:`missing` says what an object lacks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    import torch

# MetricColumn (mimbench.columns), Task and Outcome (mimbench.jobs) and ProbeContext (mimbench.probing)
# are named in the annotations below, not imported, not even for type checking: the core modules that
# define them read these contracts (mimbench.protocols.capability), and the contracts must not depend
# on them in turn. All four are exported by mimbench.plugin.


class Masker(Protocol):
    """A mask strategy: ``masker(images: Tensor[B, C, H, W], generator: torch.Generator | None = None)
    -> BoolTensor[B, H, W]``, True where a pixel is *hidden*.

    The mask must be made on ``images.device``, for the whole batch at once (no per-sample Python
    loop), and be reproducible for a given generator. The images are already normalised; most
    maskers only use their shape and device.

    Optional: ``deterministic = True`` declares a masker that ignores the generator (e.g. MAE's
    regular grid), so the conformance checks do not expect another mask for another seed.
    """

    deterministic: ClassVar[bool] = False

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...


class Encoder(Protocol):
    """An encoder: an ``nn.Module`` built by ``factory(in_channels: int, image_size: int, **params)``,
    with int attributes ``out_dim`` and ``stride`` and ``forward(images: Tensor[B, C, H, W],
    mask: BoolTensor[B, H, W] | None = None) -> Tensor[B, out_dim, H / stride, W / stride]``.

    The core zeroes hidden pixels before calling ``forward``; ``mask`` tells the encoder what was
    hidden (e.g. to put a mask token on fully hidden patches, or to drop them, MAE style, as long as
    the full feature grid is returned). ``mask=None`` means nothing is hidden (probing).

    Optional:

    - ``same_hidden_count = True``: the encoder drops the ``stride`` x ``stride`` cells a mask hides
      whole (MAE) and needs every image of a batch to hide as many of them; a run whose masker does
      not is refused before training (its masker is tried on a large batch);
    - ``blocks(images) -> list[Tensor[B, D_i, H_i, W_i]]``: the feature grid after each block or
      stage (unmasked), for layer-wise probing; the last one should equal ``forward(images)``;
    - ``attention_maps(images) -> list[Tensor[B, heads, T, T]]``: each block's attention
      probabilities over the T = (H / stride) x (W / stride) patch tokens of unmasked images (row
      major, each row summing to 1, no class token), recomputed from queries and keys where the
      forward pass uses a fused kernel; for the diagnostics (attention distance, entropy, head
      diversity);
    - ``param_depths() -> (dict[param name, depth], num_blocks)``: for layer-wise lr decay when
      fine-tuning (0 = embeddings, i + 1 = block i); without it every encoder parameter gets the
      same decayed lr;
    - ``backbone() -> mimbench.plugin.Backbone``: for ``mimbench export``, the encoder's weights as
      the state_dict of a plain model of another library (timm, torchvision, torch), without what
      only masked pre-training needs (the mask token), and the Python that builds that model. An
      encoder built with a ``pretrained`` param gets ``pretrained=False`` when rebuilt for export
      (its weights come from ``encoder.pt``).
    """

    out_dim: int
    stride: int
    same_hidden_count: ClassVar[bool] = False
    blocks: ClassVar[Callable[..., Any] | None] = None
    attention_maps: ClassVar[Callable[..., Any] | None] = None
    param_depths: ClassVar[Callable[..., Any] | None] = None
    backbone: ClassVar[Callable[..., Any] | None] = None

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor: ...


class Decoder(Protocol):
    """A decoder: an ``nn.Module`` built by ``factory(in_dim: int, stride: int, out_channels: int,
    image_size: int, **params)`` with ``forward(features: Tensor[B, in_dim, H / stride, W / stride],
    mask: BoolTensor[B, H, W] | None = None) -> Tensor[B, out_channels, H, W]``: a prediction of the
    run's :class:`Target` on its grid.

    For the default target (``pixels``) that is the normalised image: ``out_channels`` = C,
    ``stride`` = the encoder's, ``image_size`` = the image's. For a target of D channels at stride
    s, the decoder is built with ``out_channels`` = D, ``stride`` = encoder stride / s and
    ``image_size`` = image size / s, and its ``mask`` is the mask on that grid.
    """

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor: ...


class Loss(Protocol):
    """A reconstruction loss: ``loss(pred: Tensor[B, D, h, w], target: Tensor[B, D, h, w],
    mask: BoolTensor[B, h, w]) -> Tensor[]`` (a scalar to minimise): the prediction and the run's
    target on the target's grid (the image's for ``pixels``), ``mask`` True at hidden cells.
    Built-ins take ``masked_only: bool = True``.

    Optional: a loss that trains the decoder on a transformed target (the built-ins' ``norm_pix``
    param, the same as ``target: norm_pix``, kept so that suites written before targets keep their
    run ids; refused with any other target) sets ``prediction_to_image(pred, target) -> Tensor``,
    which maps a prediction back to the normalised image, so that reconstruction metrics stay in
    pixel space. If it needs the target's statistics (norm_pix does: each hidden patch's mean and
    std), the summary marks the run with ``recon_uses_target_stats`` true: its reconstruction
    numbers were given information the model did not have and are not comparable with other runs'.
    """

    prediction_to_image: ClassVar[Callable[..., Any] | None] = None

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...


class Target(Protocol):
    """A prediction target, what the decoder must predict at hidden positions: built by
    ``factory(in_channels: int, image_size: int, **params)`` (and ``encoder: nn.Module`` if declared:
    the run's encoder as built before training, e.g. to copy it as a teacher), with int attributes
    ``channels`` (D) and ``stride`` (s, dividing the encoder's stride) and ``__call__(images:
    Tensor[B, C, H, W]) -> Tensor[B, D, H / s, W / s]``: the images are the normalised, augmented
    batch before masking, the call is made under ``torch.no_grad()``.

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

    channels: int
    stride: int
    predicts_image: ClassVar[bool] = False
    uses_target_stats: ClassVar[bool] = False
    to_image: ClassVar[Callable[..., Any] | None] = None
    update: ClassVar[Callable[..., Any] | None] = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class Dataset(Protocol):
    """A dataset split, built by ``factory(split: str, **params)`` with ``split`` in ``{"train",
    "test"}``: a ``torch.utils.data.Dataset`` of ``(image, label)`` pairs, image a float
    Tensor[C, H, W] in [0, 1], label an int, that exposes ``num_classes``. If the factory declares
    an ``image_size`` parameter the core passes the suite's ``image_size``; whatever comes back is
    resized to it. Returning a ``mimbench.plugin.TensorImageDataset`` (uint8 tensors in memory)
    lets the core move the data to the device once and batch it by indexing.

    Optional: ``masks`` (uint8 Tensor[N, H, W], a class per pixel, 255 = no label) and
    ``mask_classes`` declare segmentation masks for dense probes
    (``TensorImageDataset(..., masks=..., mask_classes=...)``); masks are resized with the images
    (nearest). ``boxes`` (float Tensor[N, M, 5], each image's objects as (class, x0, y0, x1, y1) rows in
    pixels, class -1 padding) and ``box_classes`` declare objects for detection probes
    (``TensorImageDataset(..., boxes=..., box_classes=...)``); boxes are scaled with the images.
    Its int ``label`` per image still feeds the classification probes.
    """

    num_classes: int
    masks: ClassVar[Any] = None
    mask_classes: ClassVar[int | None] = None
    boxes: ClassVar[Any] = None
    box_classes: ClassVar[int | None] = None

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]: ...


class Probe(Protocol):
    """A downstream evaluation: ``probe(context: mimbench.plugin.ProbeContext) -> dict[str, float]``,
    whose keys become summary columns (e.g. ``{"linear_acc": 0.87}``). What it returns is checked
    (:func:`mimbench.contract.check_probe_output`): numbers or None by column name, a declared
    ``accuracy`` a fraction in [0, 1], a declared ``count`` a whole number; a break fails its run.

    The context holds the frozen ``encoder`` (eval mode, on ``device``), the labelled ``train`` and
    ``test`` splits (uint8 batches on the device: ``batches(batch_size, generator=None)``),
    ``normalize`` (the pre-training normalisation), ``num_classes``, ``seed``, and
    ``features(layer)``: mean-pooled features of unmasked images, Tensor[N, D] per split, extracted
    once per run and shared by all its probes (``layer``: ``"last"`` or a block index;
    ``block_features()`` gives every block); ``token_features(layer)``: the feature grid's tokens,
    float16 [N, T, D] per split (``grids(split, layer)``: [N, D, h, w]), extracted once per run and
    shared with the dense probes; ``attention_maps(images)``: each block's attention over the
    patch tokens of normalised images (the encoder's ``attention_maps``), or None without attention.
    ``mimbench.plugin.layerwise`` turns a scoring function into the
    ``layer`` param's columns (``<name>_acc@<block>``...; ``tokens=True`` to score tokens). A probe
    chooses its hyper-parameters on held-out train data only (``mimbench.plugin.selection``), never
    on the test split, and reports them as ``<name>_hp_<param>`` columns. A probe must not change the
    encoder: train a copy (see ``finetune``). Baselines go through the same probes with an untrained
    encoder or ``RawPixels``. A classification probe keeps each test image's predicted class behind
    an accuracy column with ``context.keep_predictions(column, predicted [N_test])`` (a score
    function under ``layerwise`` does so by returning it third): the run's ``predictions.npz``,
    per-image outcomes for paired per-image tests.

    Optional:

    - ``layer``: the block it reads, an int block index (checked against every encoder's blocks
      before training), or ``"last"`` / ``"all"`` (default None: it says nothing);
    - ``needs_masks = True``: a dense probe (a suite whose probe datasets carry no masks exits 2
      before training); it reads ``context.dense(split, layer)``: the feature grids of unmasked
      images, float16 [N, D, h, w], with their masks [N, S, S], extracted once per run and shared (the pixels
      baseline's grid is each 4 px square's raw pixels);
    - ``needs_boxes = True``: a detection probe (a suite whose probe datasets carry no boxes exits 2
      before training); it reads ``context.boxes(split)`` (float [N, M, 5], see ``Dataset``) beside
      ``context.grids(split, layer)``, and may write files to the run folder with
      ``context.save_json(name, document)``;
    - ``metric_columns() -> list[mimbench.plugin.MetricColumn]``: the columns it returns, declared.
      The report's headline table (``table.md``, ``table.tex``), its figures and the console line
      show the declared columns (with ``headline=True``), by their ``name``, ``axis`` label and
      ``digits``; a column of ``kind="accuracy"`` also gets its gain over the random-init baseline
      (Δ) and the probe figures. ``mimbench.plugin.accuracy_columns(key, name, layer)`` declares a
      top-1 accuracy scored through ``layerwise`` (with ``layer: all``, its best block too).
      Columns returned but not declared (per-block ``<name>_acc@<block>``, diagnostics) are still
      in ``summary.csv`` and ``table.csv``, just not shown in the headline table, figures or
      console line.
    """

    needs_masks: ClassVar[bool] = False
    needs_boxes: ClassVar[bool] = False
    layer: ClassVar[int | str | None] = None
    metric_columns: ClassVar[Callable[[], list[MetricColumn]] | None] = None

    def __call__(self, context: ProbeContext) -> dict[str, float]: ...


class Executor(Protocol):
    """What runs a suite's tasks, built by ``factory(suite_dir: str, threads_per_run: int, **params)``
    (each only if declared: ``suite_dir`` the suite folder, e.g. for an engine's log files;
    ``threads_per_run`` the torch threads every task sets on its worker, ``execution.threads_per_run``
    resolved, e.g. to ask the engine for that many CPUs per run):

    - ``in_process: bool``: True when tasks run in the driver's own process;
    - ``threads: int | None``: informative only (each task carries its threads: ``task.threads``);
    - ``run(tasks: list[mimbench.plugin.Task]) -> Iterator[tuple[Task, Outcome]]``: start every
      task and yield each with its outcome as it finishes, in any order. A task is plain, picklable
      data; a worker anywhere executes it with ``mimbench.plugin.run_task(task) -> Outcome``, which
      builds the registry from the plugin sources the task carries, loads the data and writes only
      the task's run folder (``mimbench.plugin.Worker().run(task)`` does the same, keeping the
      runtime and its data for the next task); it catches every exception of its run. What
      escapes is a system failure (the worker died): retry it if the engine can, else yield
      ``Outcome.failed(message)``;
    - ``in_flight() -> int``: tasks started or queued and not finished;
    - ``cancel()``: stop what is queued or running (called on Ctrl-C);
    - optionally ``close()``: called once when the suite is over (``run`` may be called more than
      once per suite: runs that evaluate an encoder another run pre-trains come second);
    - optionally ``use_runtime(runtime)``, for an executor that runs tasks in the driver's process:
      called once before ``run`` with the driver's runtime (its plugins, device and the data its
      checks loaded), to execute the tasks with (``mimbench.plugin.Worker(runtime).run(task)``)
      instead of loading everything again.

    The params come from the suite's ``execution`` mapping (``{executor: ray, gpus_per_run: 0.25}``)
    and ``--set execution.<param>=...``; they are checked against the factory's signature like any
    component's. An executor whose engine is not installed raises ``mimbench.plugin.ConfigError``
    with the pip command to run (exit 2).
    """

    in_process: bool
    threads: int | None

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, Outcome]]: ...

    def in_flight(self) -> int: ...

    def cancel(self) -> None: ...

    close: ClassVar[Callable[[], None] | None] = None
    use_runtime: ClassVar[Callable[[Any], None] | None] = None


class Tracker(Protocol):
    """An experiment tracker (``tensorboard``, ``mlflow``...), built by ``factory(suite_dir: str,
    **params)`` (``suite_dir`` only if declared: the suite folder, absolute). The worker that
    executes a run (in the driver's process with the ``local`` executor, else on a Ray or SLURM
    worker) builds one tracker object per run and calls, in this order:

    - ``run_started(run_dir: Path, config: dict)``: ``config`` is the run's ``config.json``
      (resolved config, ``run_id``, ``suite``, ``label``, normalisation, versions);
    - ``step_logged(run_dir: Path, step: int, values: dict)`` (optional) every ``train.log_every``
      steps, when the trainer reads the loss back anyway: ``step`` is the global optimizer step
      (from 1), ``values`` ``loss`` (the mean over the steps since the previous read of this epoch)
      and ``lr``;
    - ``epoch_finished(run_dir: Path, row: dict)`` after each pre-training epoch: the
      ``history.csv`` row (``epoch``, ``loss``, ``lr``, ``images_per_second``, ``seconds``). A run
      that evaluates an encoder another run pre-trained reports that run's history; baselines have
      no epochs;
    - ``run_finished(run_dir: Path, record: dict)``: the run's summary row (as in ``summary.csv``:
      ids, ``status``, metrics, ``<kind>.<param>`` params), after ``metrics.json`` (or
      ``error.txt``) is written. When probes are added to a run finished earlier, its tracker gets
      ``run_finished`` alone, with the new columns; so does a run that failed before its
      ``config.json`` was written (e.g. its data could not be loaded).

    Optional: ``prepare()``, called once per suite by the driver before the first run starts (e.g.
    to create a database that several workers then share).

    The factory is also built by the driver before anything runs, so that bad params or a missing
    dependency (raise ``mimbench.plugin.ConfigError`` with the pip command) exit 2. Import heavy
    libraries inside the methods, not at module import. A tracker that raises is a warning on the
    console (its other calls for that run are skipped), never a failed run. Trackers are not part
    of any run id.
    """

    step_logged: ClassVar[Callable[..., None] | None] = None
    prepare: ClassVar[Callable[[], None] | None] = None

    def run_started(self, run_dir: Path, config: dict[str, Any]) -> None: ...

    def epoch_finished(self, run_dir: Path, row: dict[str, Any]) -> None: ...

    def run_finished(self, run_dir: Path, record: dict[str, Any]) -> None: ...


#: The contract class of each kind, by the kind's name in the registry.
CONTRACTS: dict[str, type] = {"masker": Masker, "encoder": Encoder, "decoder": Decoder, "loss": Loss,
                              "target": Target, "dataset": Dataset, "probe": Probe, "executor": Executor,
                              "tracker": Tracker}

#: What each kind must have (the rest of its class is optional, with the default the class gives).
REQUIRED: dict[str, tuple[str, ...]] = {
    "masker": ("__call__",), "encoder": ("out_dim", "stride", "forward"), "decoder": ("forward",),
    "loss": ("__call__",), "target": ("channels", "stride", "__call__"), "dataset": ("__len__", "__getitem__"),
    "probe": ("__call__",), "executor": ("in_process", "run", "in_flight", "cancel"),
    "tracker": ("run_started", "epoch_finished", "run_finished"),
}


def missing(kind: str, component: object) -> list[str]:
    """What ``component`` lacks of its kind's contract (:data:`REQUIRED`): ``[]`` when nothing."""
    return [name for name in REQUIRED[kind]
            if not (callable(component) if name == "__call__" else hasattr(component, name))]


def _optional(kind: str) -> dict[str, Any]:
    contract = CONTRACTS[kind]
    return {name: value for name, value in vars(contract).items()
            if not name.startswith("_") and name not in REQUIRED[kind] and not callable(value)}


#: Each kind's optional capabilities, with the default its class declares (a component without one has it).
OPTIONAL: dict[str, dict[str, Any]] = {kind: _optional(kind) for kind in CONTRACTS}
#: The optional capabilities that are methods: a component's is callable, or None (it has none).
METHODS: dict[str, frozenset[str]] = {
    kind: frozenset(name for name in OPTIONAL[kind] if "Callable" in str(contract.__annotations__.get(name, "")))
    for kind, contract in CONTRACTS.items()}


def capability(kind: str, component: object, name: str) -> Any:
    """``component``'s optional capability ``name`` (one its kind's class declares, see
    :data:`OPTIONAL`), or the class's default when it has none: how the core asks a component what
    it can do. A name the contract does not declare is a KeyError (a mistake of the core, not the plugin)."""
    defaults = OPTIONAL[kind]
    if name not in defaults:
        raise KeyError(f"the {kind} contract (mimbench.protocols.{CONTRACTS[kind].__name__}) declares no "
                       f"optional {name!r}")
    return getattr(component, name, defaults[name])


def malformed(kind: str, component: object) -> list[str]:
    """What is wrong with the optional capabilities ``component`` has (checked once, when it is built):
    a method capability that is not callable, a flag that is not a bool. ``[]`` when nothing."""
    wrong = []
    for name, default in OPTIONAL[kind].items():
        value = getattr(component, name, default)
        if name in METHODS[kind] and value is not None and not callable(value):
            wrong.append(f"{name} must be a method (or absent), got {type(value).__name__}")
        elif isinstance(default, bool) and not isinstance(value, bool):
            wrong.append(f"{name} must be True or False, got {value!r}")
    return wrong
