"""The sections of a suite's schema: the limits stated in it, a component spec, and the models of
``train``, ``eval``, ``data``, ``execution``, ``grid`` and ``report``, each key with its default
and, under it, what it means (the documentation's suite reference is generated from these). The
suite itself, and how a mistake becomes one line, are in :mod:`mimbench.schema`.
"""

from __future__ import annotations

import re
import typing
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from mimbench.errors import shown

#: The grid's axes, in the order of a run's label; ``target`` is optional (default ``pixels``).
COMPONENT_AXES = ("encoder", "decoder", "masker", "loss", "target")

#: Limits stated in the schema. Images are resized to ``image_size`` and held as uint8 on the
#: device: 1024 px is already 1 MiB per greyscale image.
MAX_IMAGE_SIZE = 1024
#: The longest suite name: it is a folder's name (most file systems allow 255 bytes), in labels and paths.
MAX_NAME = 100
#: Seeds (``seeds``, ``eval.mask_seed``) are what torch's generators take and a summary's int64
#: column holds: 0 .. 2**63 - 1.
MAX_SEED = 2**63 - 1
#: Counts (epochs, batch sizes, steps, images per class) fit torch's int32 sizes.
MAX_COUNT = 2**31 - 1
#: DataLoader worker processes: each is a process.
MAX_WORKERS = 256
#: ``execution.threads_per_run: auto`` gives each run the driver's CPUs, at most this many.
MAX_AUTO_THREADS = 8
#: A suite expanding to more runs than this is refused unless its ``max_runs`` is raised.
DEFAULT_MAX_RUNS = 10_000



def _takes_bool(annotation: Any) -> bool:
    """Whether a field of type ``annotation`` may hold true/false (``bool``, ``Any``, a union or a
    Literal with one), so that a boolean is never read as the number 1 or 0 elsewhere."""
    if annotation is bool or annotation is Any:
        return True
    return any(arg is True or arg is False or _takes_bool(arg) for arg in typing.get_args(annotation))


def _not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("true/false is not allowed here: it would be read as the number 1 or 0")
    return value


class _NoBoolAsNumber:
    """Refuses true/false for a field that does not take a boolean: pydantic would read it as 1 or 0."""

    @field_validator("*", mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")  # type: ignore[attr-defined]
        return value if field is None or _takes_bool(field.annotation) else _not_a_bool(value)


Seed = Annotated[int, BeforeValidator(_not_a_bool), Field(ge=0, le=MAX_SEED)]


class Strict(_NoBoolAsNumber, BaseModel):
    # use_attribute_docstrings: the string under each field is its description, which the
    # documentation's suite reference shows (scripts/docs_reference.py)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True)


class ComponentSpec(Strict):
    """A component by name, with params; a bare string means ``{name: <string>}``."""

    name: str
    """The component's name, as registered by a plugin (`mimbench plugins` lists them)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the component's factory, checked against its signature (`mimbench plugins
    --params`); everything left out takes the component's own default, written out in each run's
    `config.json`."""

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class AugmentConfig(Strict):
    """Random-resized-crop and flip on the device (``mimbench.augment``); SimMIM's defaults."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, use_attribute_docstrings=True)

    crop_scale: tuple[float, float] = (0.67, 1.0)
    """Range of the fraction of the image area a crop covers (SimMIM's)."""
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    """Range of a crop's aspect ratio w/h, drawn log-uniformly."""
    flip: bool = True
    """Mirror left-right with probability 1/2."""

    @model_validator(mode="after")
    def _ranges(self) -> "AugmentConfig":
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {list(self.crop_scale)}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {list(self.crop_ratio)}")
        return self


class TrainConfig(Strict):
    """Pre-training: AdamW with linear warm-up then cosine decay to zero, stepped per batch."""

    # frozen: a run's spec holds one
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, use_attribute_docstrings=True)

    epochs: int = Field(20, ge=1, le=MAX_COUNT)
    """Passes over the train split."""
    batch_size: int = Field(256, ge=1, le=MAX_COUNT)
    """Images per step (the ragged last batch of an epoch is dropped)."""
    lr: float = Field(1.0e-3, gt=0)
    """AdamW peak learning rate."""
    weight_decay: float = Field(0.05, ge=0)
    """AdamW weight decay, not applied to biases and norm weights."""
    warmup_epochs: float = Field(1.0, ge=0)
    """Linear warm-up, then cosine decay to 0, stepped per batch."""
    grad_clip: float | None = Field(5.0, gt=0)
    """Max global gradient norm; `null` turns clipping off."""
    log_every: int = Field(50, ge=1, le=MAX_COUNT)
    """Steps between loss read-outs (the only host syncs in an epoch)."""
    augment: AugmentConfig | None = None
    """`null`: none; `{}` or a mapping: random-resized-crop + flip on the device, for the whole batch,
    before masking."""
    compile: bool | Literal["default", "reduce-overhead", "max-autotune"] = False
    """`true` (or a mode: `default`, `reduce-overhead`, `max-autotune`) runs encoder + decoder + loss
    through `torch.compile`; the first compiled step (compilation included) is reported as
    `compile_seconds` and left out of `images_per_second`. Needs a C++ compiler on CPU; pays off on
    long runs only (see `benchmarks/README.md`); changes float rounding slightly, so compiled runs
    have run ids of their own."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """The training step's arithmetic: `bf16` runs its forward pass under bf16 autocast (matrix
    products and convolutions in bfloat16, on CUDA or on the CPU); `fp32` in full precision (on a GPU
    with TF32 matrix products); `auto`: bf16 on CUDA, fp32 on the CPU, what every run did before this
    key existed. Masks, targets, the loss, evaluation, probes and statistics are the same under all
    three. On a CPU with native bf16 matrix products (AVX-512 BF16, AMX) `bf16` trains a 128-d ViT
    1.24× and a 256-d one 2.09× faster, but `quick`'s 64-d one slower (benchmarks/README.md), with
    no conclusion of `quick` changed; the default stays fp32 there so that a CPU result is reproduced
    on any CPU: `--set train.precision=bf16` to choose speed. Part of the run id when not
    `auto`; the precision a run used is its `precision` column."""
    devices: int = Field(1, ge=1, le=64)
    """Processes training one run together with DistributedDataParallel on this machine: gloo on CPU
    (the run's CPU threads split between them), NCCL on GPUs (one per process: give the run that
    many, e.g. `execution.gpus_per_run`). Every process draws the same batches and masks from the
    seed and trains on its `batch_size / devices` share, so the global batch and the lr stay as set;
    metrics and files are written once. `batch_size` must be divisible by it."""
    budget_flops: float | None = Field(None, gt=0)
    """FLOPs of each run's whole pre-training (`mimbench.compute`): the run takes
    `round(budget / (flops_per_image × batch_size))` optimizer steps (at least 1), so its
    `train_flops` is the budget to within half a step; warm-up and cosine follow those steps, the
    last epoch may be partial, and `train.epochs` is unused (but stays in the run id). A positive
    number; `null`: train for `train.epochs`. Part of the run id only when set. `--dry-run` prints
    each run's steps and FLOPs (see Compute)."""
    checkpoint_every: int | str | None = "10min"
    """How often a run saves its whole training state to `checkpoint.pt` in its folder, at an epoch
    end: an epoch count (`1`: every epoch) or a time (`90s`, `10min`, `1h`: at the first epoch end
    after it); `null`: never. A run killed, preempted or requeued continues from its last checkpoint
    with the numbers of an uninterrupted run (see Long runs and provenance). Not part of the run id:
    it changes when a run saves, not what it computes."""
    keep_checkpoint: bool = False
    """Keep `checkpoint.pt` once the run is finished (by default it is removed then). Not part of the
    run id."""

    @field_validator("checkpoint_every")
    @classmethod
    def _interval(cls, value: int | str | None) -> int | str | None:
        checkpoint_interval(value)
        return value

    @model_validator(mode="after")
    def _batch_splits(self) -> "TrainConfig":
        if self.batch_size % self.devices:
            raise ValueError(f"batch_size {self.batch_size} must be divisible by devices {self.devices}: "
                             "every process takes an equal share of each batch")
        return self


_SECONDS = {"s": 1, "min": 60, "h": 3600}


def checkpoint_interval(value: int | str | None) -> tuple[int | None, float | None]:
    """``train.checkpoint_every`` as (epochs, seconds), one of them set, or (None, None) for never:
    ``3`` -> (3, None), ``"10min"`` -> (None, 600.0). A ValueError says what is allowed."""
    if value is None:
        return None, None
    if isinstance(value, bool) or (isinstance(value, int) and value < 1):
        raise ValueError(f"must be an epoch count >= 1, a time such as 90s, 10min or 1h, or null; got {value!r}")
    if isinstance(value, int):
        return value, None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|min|h)\s*", str(value))
    if not match or float(match[1]) <= 0:
        raise ValueError(f"must be an epoch count >= 1, a time such as 90s, 10min or 1h, or null; got {value!r}")
    return None, float(match[1]) * _SECONDS[match[2]]


class EvalConfig(Strict):
    """Evaluation of each trained run on the test split."""

    mask_seed: Seed = 0
    """Seed of the evaluation masks: every run is scored on the same masks; 0 to 2^63−1."""
    batch_size: int = Field(512, ge=1, le=MAX_COUNT)
    """Images per evaluation batch."""
    reference_masker: ComponentSpec | None = None
    """A masker every run is also scored under (`ref_mse`, `ref_psnr`, `ref_ssim`), so runs trained
    with different maskers are compared on equal terms."""
    classical_reference: bool = True
    """Also reconstruct each run's evaluation masks with biharmonic inpainting and mean-fill
    (`inpaint_psnr`, `inpaint_ssim`, `meanfill_psnr`, `meanfill_ssim`, `inpaint_gain_psnr`), on the CPU:
    about 4 ms per 28 px image, 90 ms per 224 px image; `false` for large test splits of large
    images. It does not change the run ids."""
    probes: list[ComponentSpec] = Field(default_factory=lambda: [ComponentSpec(name="linear"),
                                                                 ComponentSpec(name="knn")])
    """Probes run on every trained encoder and every baseline (see Probes and baselines); `[]` for
    none. Add `finetune` to also fine-tune end to end (costly)."""
    diagnostics: bool = False
    """Also measure every run and baseline with the `diagnostics` probe (label-free: RankMe, α-ReQ,
    CKA of each block with the last, attention distance, entropy and head diversity per block; see
    Diagnostics), and write `predictors.csv` (does a label-free number rank the runs as the probes
    do?). The same as listing `diagnostics` in `probes` (with its params there); like any probe it
    changes no run id, so turning it on for a finished suite measures the saved encoders."""
    baselines: list[Literal["random-init", "pixels", "supervised"]] = Field(
        default_factory=lambda: ["random-init", "pixels"])
    """`random-init`: each encoder config, untrained, per seed; `pixels`: the normalised pixels,
    flattened, per seed; `supervised`: each encoder config trained on the labels of the probes' train
    split (a linear head on its pooled output, cross-entropy) with its runs' train settings, per seed
    (a control for the diagnostics; it costs a training each). Changing this list does not change the
    trained runs' ids."""
    dataset: ComponentSpec | None = None
    """A labelled dataset for the probes (its train split to fit them, its test split to score);
    `null`: the suite's dataset. Needed when pre-training on unlabelled images; must have the same
    number of channels."""
    labels_per_class: int | None = Field(None, ge=1, le=MAX_COUNT)
    """`null`: the probes fit on every label of the labelled train split; `k`: on a fixed
    class-balanced subset of `k` images per class, drawn from the seed (the same subset for every run
    and baseline of that seed). Scores are always on the whole test split. Sweepable
    (`sweep: {eval.labels_per_class: [10, 100, 1000]}`); it does not change the pre-training, so
    sweeping it, or changing it on a finished suite, evaluates the saved encoders without training
    again (see Probes and baselines)."""

    @field_validator("probes")
    @classmethod
    def _one_probe_per_name(cls, probes: list[ComponentSpec]) -> list[ComponentSpec]:
        names = [p.name for p in probes]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"probe {twice[0]!r} is listed twice; each probe writes its own columns "
                             f"(use its layer: all param for several blocks)")
        return probes

    @field_validator("baselines")
    @classmethod
    def _no_repeats(cls, baselines: list[str]) -> list[str]:
        return list(dict.fromkeys(baselines))

    @model_validator(mode="after")
    def _diagnostics_probe(self) -> "EvalConfig":
        if self.diagnostics and not any(p.name == "diagnostics" for p in self.probes):
            self.probes = [*self.probes, ComponentSpec(name="diagnostics")]
        return self


class DataConfig(Strict):
    """How splits are held: on the device when they fit, else streamed through a DataLoader."""

    in_memory_gb: float | None = Field(None, ge=0)
    """A split whose uint8 images take more than this streams through a DataLoader instead of living
    on the device; `null`: half the free GPU memory on CUDA, a quarter of the RAM on CPU."""
    workers: int = Field(4, ge=0, le=MAX_WORKERS)
    """DataLoader worker processes when a split streams. A streamed split is shuffled by the
    DataLoader, in another order than a split held on the device, so the same run gives slightly
    different numbers either way (its run id does not change); set `in_memory_gb` explicitly to pin
    it; at most 256."""


class ExecutionConfig(_NoBoolAsNumber, BaseModel):
    """Where the runs execute: an executor by name (``mimbench plugins --kind executor``) and its
    params. Not part of any run id.

    Every other key is one of the executor's params, given beside ``executor``
    (``{executor: ray, gpus_per_run: 0.25}``), checked against its signature like any component's
    (``mimbench plugins --kind executor --params``).
    """

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)

    executor: str = "local"
    """Where the runs execute: `local` (this process, one run after another), `ray`, `submitit`, or a
    plugin's (see Scaling out). Not part of any run id: the same suite may run anywhere and resume
    anywhere."""
    threads_per_run: int | Literal["auto"] = "auto"
    """Torch CPU threads of every run, set by the worker under every executor (`ray` and `submitit`
    ask for that many CPUs per run unless their `cpus_per_run` says otherwise); `auto`: the CPUs this
    machine gives the driver, at most 8 (`MAX_AUTO_THREADS`). On the CPU a run's numbers are
    bit-identical only at the same thread count (see Long runs and provenance). `threads`, the local
    executor's older param, is read as it. Not part of any run id."""

    @model_validator(mode="before")
    @classmethod
    def _older_threads_name(cls, value: Any) -> Any:
        if isinstance(value, dict) and "threads" in value:
            if "threads_per_run" in value:
                raise ValueError("give threads_per_run only (threads is its older name)")
            value = {k: v for k, v in value.items() if k != "threads"} | {"threads_per_run": value["threads"] or "auto"}
        return value

    @field_validator("threads_per_run")
    @classmethod
    def _thread_count(cls, value: int | str) -> int | str:
        if value != "auto" and not 1 <= value <= MAX_WORKERS:
            raise ValueError(f"must be auto or 1..{MAX_WORKERS}, got {value}")
        return value

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Grid(Strict):
    """The components to cross; each axis takes one spec or a list of them."""

    encoder: list[ComponentSpec] = Field(min_length=1)
    """The encoders: one spec or a list; the runs are the cartesian product of the axes."""
    decoder: list[ComponentSpec] = Field(min_length=1)
    """The decoders: one spec or a list; the runs are the cartesian product of the axes."""
    masker: list[ComponentSpec] = Field(min_length=1)
    """The maskers: one spec or a list; the runs are the cartesian product of the axes."""
    loss: list[ComponentSpec] = Field(min_length=1)
    """The losses: one spec or a list; the runs are the cartesian product of the axes."""
    target: list[ComponentSpec] = Field(default_factory=lambda: [ComponentSpec(name="pixels")], min_length=1)
    """What the decoder predicts (`mimbench plugins --kind target`): one spec or a list, crossed
    with the other axes; SimMIM's pixels by default."""

    @field_validator("encoder", "decoder", "masker", "loss", "target", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return value if isinstance(value, list) else [value]


#: What ``report.reference`` may name: a component axis by name, or a param by its column.
REFERENCE_AXES = ("dataset", *COMPONENT_AXES)


def reference_error(reference: Mapping[str, Any]) -> str | None:
    """Why ``reference`` (``{masker: patch}``, ``{masker.ratio: 0.6}``) cannot name configurations,
    or None when it can: each key an axis or ``<axis>.<param>`` / ``train.<param>``, each value a scalar."""
    for key, value in reference.items():
        head = str(key).split(".", 1)[0]
        if key not in REFERENCE_AXES and not ("." in str(key) and head in (*REFERENCE_AXES, "train")):
            return (f"unknown key {shown(key)} (allowed: {', '.join(REFERENCE_AXES)}, or <axis>.<param> / "
                    f"train.<param>, e.g. masker.ratio)")
        if isinstance(value, (dict, list)) or value is None:
            got = "nothing" if value is None else shown(value)
            return f"{key}: expected a name or a number, got {got}"
    return None


class ReportConfig(Strict):
    """How the report compares configurations (not part of any run id)."""

    reference: dict[str, Any] | None = None
    """A configuration every other one is compared with, paired by seed, in the report:
    `{masker: patch}` (a component by name), `{masker.ratio: 0.6}` (a param's value), or both;
    `null`: only the comparison with random-init (see Reading results). Not part of any run id."""

    @field_validator("reference")
    @classmethod
    def _reference(cls, reference: dict[str, Any] | None) -> dict[str, Any] | None:
        if reference is not None:
            if not reference:
                raise ValueError("reference is empty: name at least one value, e.g. {masker: patch}")
            error = reference_error(reference)
            if error:
                raise ValueError(error)
        return reference
