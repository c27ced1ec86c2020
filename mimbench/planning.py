"""A suite planned and checked, before anything trains: its jobs, and everything that would fail
them for bad input (exit 2) found now, not mid-suite::

    plan = plan_suite(suite, registry, origin)     # jobs: runs, then baselines, with their labels
    check_trackers(plan, registry, suite_dir)      # each tracker built once
    data = check_plan(plan, runtime)               # the data loaded, each distinct component built once
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from mimbench import columns
from mimbench.columns import MetricColumn
from mimbench.contract import mask_on_grid
from mimbench.design import design, run_labels
from mimbench.data import IGNORE_INDEX, StreamedImages
from mimbench.errors import ConfigError
from mimbench.executors import Executor
from mimbench.expansion import expand, expand_baselines
from mimbench.folder import SuiteIdentity
from mimbench.preflight import check_fits
from mimbench.probing import check_block_index
from mimbench.protocols import capability
from mimbench.registry import Registry
from mimbench.reuse import selected
from mimbench.runtime import Runtime, SuiteData
from mimbench.specs import BaselineSpec, Component, Job, RunSpec, canonical_json
from mimbench.schema import MAX_AUTO_THREADS, Suite, suite_to_yaml
from mimbench.suite import MAPPING_ORIGIN
from mimbench.tracking import build_trackers


@dataclass(frozen=True)
class Plan:
    """A suite expanded into jobs: its runs, then its baselines, with a readable label each, and
    the suite's trackers (resolved)."""

    suite: Suite
    runs: list[RunSpec]
    baselines: list[BaselineSpec]
    design: dict[str, Any]  # what design.json holds (mimbench.design): labels, configurations, partners
    trackers: tuple[Component, ...] = ()
    origin: str = MAPPING_ORIGIN  # where the suite came from (see mimbench.folder.ownership)

    @property
    def jobs(self) -> list[Job]:
        return [*self.runs, *self.baselines]

    def identity(self) -> SuiteIdentity:
        """What the plan's suite folder must belong to (see :mod:`mimbench.folder.ownership`)."""
        return SuiteIdentity(self.suite.name, self.origin, suite_to_yaml(self.suite))

    @property
    def labels(self) -> dict[str, str]:
        """run_id -> the run's label, as ``design.json`` names it."""
        return run_labels(self.design)

    @property
    def threads(self) -> int:
        """The torch threads of every run (``execution.threads_per_run``, ``auto`` resolved here)."""
        return threads_per_run(self.suite.execution.threads_per_run)


def threads_per_run(setting: int | str) -> int:
    """``execution.threads_per_run``: the count given, or for ``auto`` the CPUs this process may
    use, at most :data:`~mimbench.schema.MAX_AUTO_THREADS`."""
    if setting != "auto":
        return int(setting)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(usable, MAX_AUTO_THREADS))


def plan_suite(suite: Suite, registry: Registry, origin: str = MAPPING_ORIGIN) -> Plan:
    """``origin``: where the suite came from (:func:`mimbench.suite.origin_of`), recorded in
    the suite folder's marker."""
    runs = expand(suite, registry)
    baselines = expand_baselines(suite, runs)
    trackers = tuple(Component(t.name, registry.resolve_params("tracker", t.name, t.params)) for t in suite.trackers)
    return Plan(suite, runs, baselines, design([*runs, *baselines], suite.sweep), trackers, origin)


def check_trackers(plan: Plan, registry: Registry, suite_dir: Path) -> None:
    """Build each of the suite's trackers once, so that bad input fails now (exit 2), not in the workers."""
    build_trackers(registry, plan.trackers, suite_dir)


def build_executor(registry: Registry, suite: Suite, suite_dir: Path) -> Executor:
    """The suite's ``execution.executor`` with its params (a missing extra is a ConfigError)."""
    spec = suite.execution
    return registry.build("executor", spec.executor, spec.params(), suite_dir=str(suite_dir),
                          threads_per_run=threads_per_run(spec.threads_per_run))


def declared_columns(runtime: Runtime, probes: tuple[Component, ...]) -> list[MetricColumn]:
    """The core's reconstruction columns, then each probe's declared ``metric_columns()``."""
    declared = [list(columns.RECONSTRUCTION_COLUMNS)]
    declared += [columns.declared_by(runtime.build("probe", spec)) for spec in probes]
    return columns.merge(*declared)


def param_types(plan: Plan, registry: Registry) -> dict[str, columns.ColumnType]:
    """The declared type of each ``<kind>.<param>`` column of the plan's summary: a component's from
    its factory's signature (the registry's params schema), ``train.*`` and ``eval.*`` from the
    suite schema. Two components of one kind that declare a param differently leave it out (its
    column keeps the type its values are written with)."""
    found: dict[str, columns.ColumnType | None] = {}

    def add(column: str, annotation: Any) -> None:
        kind = columns.column_type(annotation)
        if column in found and found[column] != kind:
            kind = "float" if {found[column], kind} == {"int", "float"} else None
        found[column] = kind

    for job in plan.jobs:
        parts = {"dataset": job.dataset, **({"encoder": job.encoder} if isinstance(job, BaselineSpec)
                                           else job.components())}
        for kind, spec in parts.items():
            if spec is not None:
                hints = registry.get(kind, spec.name).hints
                for key in spec.params:
                    add(f"{kind}.{key}", hints.get(key, Any))
        if isinstance(job, RunSpec):
            for key, field in type(job.train).model_fields.items():
                add(f"train.{key}", field.annotation)
        add("eval.labels_per_class", typing.get_type_hints(type(job.eval))["labels_per_class"])
    return {column: kind for column, kind in found.items() if kind is not None}


def check_plan(plan: Plan, runtime: Runtime) -> SuiteData:
    """Load the data and build every distinct component once with ``runtime`` (this machine's, on
    the CPU when the runs execute elsewhere), so that bad input fails now (ConfigError, exit 2),
    not mid-suite."""
    data = runtime.data(plan.runs[0].data)
    validate(runtime, plan.runs, data)
    _check_label_counts(plan, data)
    check_reference(plan)
    return data


def check_device(device: str, executor: Executor) -> str:
    """The device the checks run on: ``device`` with an in-process executor, else this machine's
    CPU (the device is resolved on each worker; a malformed name is still refused here)."""
    if executor.in_process:
        return device
    if device != "auto":
        try:
            torch.device(device)
        except RuntimeError:
            raise ConfigError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    return "cpu"


def check_reference(plan: Plan) -> None:
    """The suite's ``report.reference`` must name the values of at least one of its runs."""
    reference = plan.suite.report.reference
    if not reference or any(selected(job, reference) for job in plan.runs):
        return
    named = ", ".join(f"{k}: {v}" for k, v in reference.items())
    raise ConfigError(f"report.reference {{{named}}}: no run of this suite has it (the report compares every "
                      f"configuration with the one that does)")


def _check_label_counts(plan: Plan, data: SuiteData) -> None:
    """Every ``eval.labels_per_class`` must fit in each class of the labelled train split."""
    counts = sorted({job.eval.labels_per_class for job in plan.jobs} - {None})
    if not counts or not plan.runs[0].eval.probes:
        return
    labels = data.probe_train.all_labels().cpu()
    smallest = int(labels.bincount()[labels.unique()].min())
    if counts[-1] > smallest:
        raise ConfigError(f"eval.labels_per_class {counts[-1]}: the labelled train split has only {smallest} "
                          f"images in its smallest class (allowed: 1..{smallest}, or null for every label)")


def validate(runtime: Runtime, runs: list[RunSpec], data: SuiteData) -> None:
    """Build every distinct component once, so bad params fail now (exit 2), not mid-suite.

    Maskers are also called once on a small batch: a ValueError there is a bad
    configuration (e.g. an image size the mask grid does not divide). Anything else a
    masker does wrong (another exception, a mask of the wrong shape) fails its own runs
    later, with error.txt, and not the whole suite.
    """
    largest = max((run.train.batch_size for run in runs), default=0)  # a sweep may set it per run
    if largest > len(data.train):
        raise ConfigError(f"train.batch_size {largest} is larger than the train split ({len(data.train)} images)")
    channels = data.train.channels
    images = torch.zeros(2, channels, data.train.image_size, data.train.image_size, device=data.normalize.mean.device)
    # Each distinct component once (a sweep of thousands of runs has few of each); a target may
    # depend on its encoder (a teacher copies it), a decoder on both (the target's grid).
    encoders: dict[str, torch.nn.Module] = {}
    targets: dict[str, SimpleNamespace] = {}
    built: set[str] = set()
    for run in runs:
        encoder_key = canonical_json([run.image_size, run.encoder.to_json()])
        if encoder_key not in encoders:
            check_fits(f"encoder {run.encoder.text()}", lambda: runtime.encoder(run, channels), images.device)
            encoders[encoder_key] = runtime.encoder(run, channels)
            _check_probe_layers(encoders[encoder_key], run, images, runtime)
        encoder = encoders[encoder_key]
        target_key = canonical_json([encoder_key, run.target.to_json(), run.loss.to_json()])
        if target_key not in targets:
            target = runtime.target(run, encoder, channels)
            targets[target_key] = SimpleNamespace(channels=target.channels, stride=target.stride)
        target = targets[target_key]
        decoder_key = canonical_json(["decoder", run.decoder.to_json(), encoder_key, vars(target)])
        if decoder_key not in built:
            check_fits(f"decoder {run.decoder.text()}", lambda: runtime.decoder(run, encoder, target, channels),
                       images.device)
            runtime.decoder(run, encoder, target, channels)
            built.add(decoder_key)
        for kind, spec in (("masker", run.masker), ("loss", run.loss)):
            key = canonical_json([kind, spec.to_json()])
            if key not in built:
                component = runtime.build(kind, spec)
                if kind == "masker":
                    _try_masker(component, images, f"masker {spec.name!r}")
                built.add(key)
        counts_key = canonical_json(["counts", run.masker.to_json(), encoder_key])
        if capability("encoder", encoder, "same_hidden_count") and counts_key not in built:
            _check_hidden_counts(runtime.build("masker", run.masker), run, encoder.stride, channels, images.device)
            built.add(counts_key)
        cells_key = canonical_json(["cells", run.masker.to_json(), run.target.to_json(), target.stride])
        if target.stride > 1 and cells_key not in built:
            _check_hidden_cells(runtime.build("masker", run.masker), images, run, target.stride)
            built.add(cells_key)
    reference = runs[0].eval.reference_masker if runs else None
    if reference is not None:
        _try_masker(runtime.build("masker", reference), images, f"eval.reference_masker {reference.name!r}")
    for spec in runs[0].eval.probes if runs else ():
        probe = runtime.build("probe", spec)
        if capability("probe", probe, "needs_masks"):
            _check_masks(spec.name, runs[0], data)
        if capability("probe", probe, "needs_boxes"):
            _check_boxes(spec.name, runs[0], data)


def _check_probe_layers(encoder: torch.nn.Module, run: RunSpec, images: torch.Tensor, runtime: Runtime) -> None:
    """The block a probe declares it reads (its ``layer`` attribute, see :class:`mimbench.protocols.Probe`)
    must exist in every encoder it will read (checked before training)."""
    layers = [(spec.name, capability("probe", runtime.build("probe", spec), "layer")) for spec in run.eval.probes]
    indices = [(name, layer) for name, layer in layers if isinstance(layer, int) and not isinstance(layer, bool)]
    if not indices or capability("encoder", encoder, "blocks") is None:
        return
    with torch.no_grad():
        count = len(encoder.to(images.device).eval().blocks(images))
    for name, layer in indices:
        try:
            check_block_index(layer, count, f"encoder {run.encoder.name!r}")
        except ValueError as exc:
            raise ConfigError(f"probe {name!r}: {exc}") from None


def _check_masks(probe: str, run: RunSpec, data: SuiteData) -> None:
    """A dense probe needs a labelled split with segmentation masks, held on the device."""
    where, name = _probe_dataset(run)
    if data.probe_train.masks is not None and data.probe_test.masks is not None:
        for part, labelled in (("train", data.probe_train), ("test", data.probe_test)):
            if not bool((labelled.masks != IGNORE_INDEX).any()):
                raise ConfigError(f"probe {probe!r}: the {part} split of {where} {name!r} has no labelled pixel (every "
                                  f"mask pixel is {IGNORE_INDEX}, no label): "
                                  + ("there is nothing to fit" if part == "train" else "its mIoU would be undefined")
                                  + "; check the label maps and the dataset's ignore_index")
        return
    raise ConfigError(f"probe {probe!r} is a dense probe, and {where} {name!r}: "
                      f"{_why_missing(data, 'masks', 'segmentation masks')}; use a dataset with masks "
                      f"(fashion-mosaic) as {where}, or drop {probe!r} from eval.probes")


def _check_boxes(probe: str, run: RunSpec, data: SuiteData) -> None:
    """A detection probe needs labelled splits with boxes, held on the device, and a train box."""
    where, name = _probe_dataset(run)
    if data.probe_train.boxes is not None and data.probe_test.boxes is not None:
        if not bool((data.probe_train.boxes[..., 0] >= 0).any()):
            raise ConfigError(f"probe {probe!r}: the train split of {where} {name!r} has no box: there is nothing to fit")
        return
    raise ConfigError(f"probe {probe!r} is a detection probe, and {where} {name!r}: {_why_missing(data, 'boxes', 'boxes')}; "
                      f"use a dataset with boxes (fashion-mosaic, detection-folder) as {where}, or drop {probe!r} from "
                      f"eval.probes")


def _probe_dataset(run: RunSpec) -> tuple[str, str]:
    """Which key names the probes' dataset (``eval.dataset`` or ``dataset``), and its name."""
    return "eval.dataset" if run.eval.dataset is not None else "dataset", (run.eval.dataset or run.dataset).name


def _why_missing(data: SuiteData, capability_name: str, what: str) -> str:
    """Why the probes' splits lack ``capability_name`` (masks, boxes): streamed, or the dataset has none."""
    split = data.probe_train
    if isinstance(split, StreamedImages) and capability("dataset", split.dataset, capability_name) is not None:
        return "its splits stream from the host (raise data.in_memory_gb to hold them on the device)"
    return f"it has no {what}"


def _check_hidden_cells(masker: Any, images: torch.Tensor, run: RunSpec, stride: int) -> None:
    """A target of stride > 1 learns only from cells whose pixels are all hidden: a masker that
    hides none (pixel masking at a 4-px cell) would train on nothing."""
    try:
        mask = masker(images, torch.Generator(device=images.device).manual_seed(run.seed))
    except Exception:  # the masker's own failure is _try_masker's or its runs' to report
        return
    if isinstance(mask, torch.Tensor) and mask.shape == images[:, 0].shape and not mask_on_grid(mask, stride).any():
        raise ConfigError(f"target {run.target.name!r} predicts {stride}x{stride} cells, and a cell counts as hidden "
                          f"only when all its pixels are; masker {run.masker.text()} hid no whole cell: use a "
                          f"masker that hides whole {stride}x{stride} squares (patch with mask_patch_size, or block or "
                          f"random_token with patch_size, a multiple of {stride})")


def _check_hidden_counts(masker: Any, run: RunSpec, stride: int, channels: int, device: torch.device) -> None:
    """An encoder that drops whole hidden cells (``same_hidden_count``, MAE) needs every image of a
    batch to hide as many: the run's masker is tried on a batch large enough (up to 1,024 images) to
    show it does not, rather than the run failing at its first such batch."""
    size = run.image_size
    batch = max(2, min(1024, 2 ** 24 // (channels * size * size)))
    images = torch.zeros(batch, channels, size, size, device=device)
    try:
        mask = masker(images, torch.Generator(device=device).manual_seed(run.seed))
    except Exception:  # the masker's own failure is _try_masker's or its runs' to report
        return
    if not isinstance(mask, torch.Tensor) or mask.shape != images[:, 0].shape:
        return
    counts = mask_on_grid(mask, stride).flatten(1).sum(dim=1)
    low, high = int(counts.min()), int(counts.max())
    if low != high:
        raise ConfigError(f"encoder {run.encoder.name!r} drops the {stride}x{stride} patches a mask hides whole and "
                          f"needs as many in every image of a batch; masker {run.masker.text()} hid {low} to {high} "
                          f"of them across {batch} images: use masker random_token with patch_size {stride}, or "
                          f"patch with mask_patch_size a multiple of {stride}")


def _try_masker(masker, images: torch.Tensor, what: str) -> None:
    try:
        masker(images)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    except Exception:  # not a configuration problem: the runs that use it will fail and say why
        pass
