"""The worker side: execute one :class:`~mimbench.jobs.Task`, in this process or any other.

:func:`execute` rebuilds the registry from the task's plugin sources, loads the data (both
cached once per process), trains and evaluates (or runs the probes of a baseline), and writes
the run folder: ``config.json`` first, ``metrics.json`` last and atomically (the run is
finished), ``error.txt`` when the run raised. It writes nothing outside that folder.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

import mimbench
from mimbench import store
from mimbench.compute import run_flops_per_image
from mimbench.distributed import is_distributed, pretrain_distributed
from mimbench.data import Images, Normalizer, class_balanced_indices, load_images
from mimbench.errors import ConfigError
from mimbench.evaluate import reconstruction_grid, reconstruction_metrics
from mimbench.jobs import BaselineJob, DataSpec, Outcome, PluginSources, RunJob, Task
from mimbench.memory import PeakMemory
from mimbench.plugins import load_plugins
from mimbench.probing import ProbeContext, RawPixels
from mimbench.registry import Registry
from mimbench.tracking import RunEvents
from mimbench.train import Components, build_components, pretrain, train_batch_size


@dataclass
class SuiteData:
    """Both splits of the suite's dataset on the device, the train split's normalisation, and
    the labelled splits the probes use (``eval.dataset``, or the suite's dataset again)."""

    train: Images
    test: Images
    normalize: Normalizer
    probe_train: Images
    probe_test: Images


@functools.lru_cache(maxsize=4)
def registry_for(plugins: PluginSources) -> Registry:
    """The registry of the built-ins, installed plugins and ``plugins.specs``; once per process."""
    return Registry(load_plugins(plugins.specs, use_env=False))


@functools.lru_cache(maxsize=1)
def _cached_data(plugins: PluginSources, spec: DataSpec, device: torch.device) -> SuiteData:
    return load_data(registry_for(plugins), spec, device)


def suite_data(plugins: PluginSources, spec: DataSpec, device: torch.device) -> SuiteData:
    """:func:`load_data`, once per process for the same data, plugins and device (the last one kept)."""
    return _cached_data(plugins, spec, device)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu``, ``cuda`` and ``cuda:N`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name!r}: CUDA is not available on this machine (use auto or cpu)")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    return device


def load_data(registry: Registry, spec: DataSpec, device: torch.device) -> SuiteData:
    """Load train and test splits once, resized to the suite's image size, onto ``device``;
    and the eval dataset's splits for the probes when the suite names one."""
    limit = in_memory_limit(spec.in_memory_gb, device)
    dataset, eval_dataset = spec.dataset, spec.eval_dataset
    train, test = _load_splits(registry, dataset, spec.image_size, device, limit, spec.workers)
    probe_train, probe_test = train, test
    if eval_dataset is not None:
        probe_train, probe_test = _load_splits(registry, eval_dataset, spec.image_size, device, limit, spec.workers)
        if probe_train.channels != train.channels:
            raise ConfigError(f"eval.dataset {eval_dataset['name']!r} has {probe_train.channels} channels, but the "
                              f"encoders are pre-trained on {train.channels}-channel images of {dataset['name']!r}")
    if spec.needs_labels and probe_train.num_classes < 2:
        where = "eval.dataset" if eval_dataset is not None else "dataset"
        name = (eval_dataset or dataset)["name"]
        raise ConfigError(f"{where} {name!r} has no class labels, so eval.probes cannot run on it: name a "
                          f"labelled eval.dataset (e.g. {{name: imagefolder, params: {{root: ...}}}}) "
                          f"or set eval.probes: []")
    return SuiteData(train, test, Normalizer.measure(train), probe_train, probe_test)


def in_memory_limit(gigabytes: float | None, device: torch.device) -> int:
    """Bytes of uint8 images a split may take on ``device`` before it streams instead."""
    if gigabytes is not None:
        return int(gigabytes * 2**30)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def _load_splits(registry: Registry, dataset: dict[str, Any], image_size: int, device: torch.device,
                 limit: int, workers: int) -> tuple[Images, Images]:
    splits = []
    for split in ("train", "test"):
        raw = registry.build("dataset", dataset["name"], dataset["params"], split=split, image_size=image_size)
        if len(raw) == 0:
            raise ConfigError(f"dataset {dataset['name']!r}: the {split} split is empty")
        splits.append(load_images(raw, image_size, device, limit, workers))
    return splits[0], splits[1]


def execute(task: Task) -> Outcome:
    """Run ``task`` and write its run folder; every exception of the run is caught and recorded
    (``error.txt``, a failed outcome). Only the death of the process itself escapes.

    This is the one place where a run's events are sent (:class:`~mimbench.tracking.RunEvents`:
    the ``mimbench_run_started``, ``mimbench_epoch_finished`` and ``mimbench_run_finished`` hooks
    and the suite's trackers), so they happen wherever the run executes."""
    suite_dir = Path(task.suite_dir)
    if not suite_dir.is_dir():
        return Outcome.failed(f"the worker on {socket.gethostname()} cannot see the suite folder {suite_dir}: "
                              f"the results folder must be on storage every node sees")
    if task.threads is not None:
        torch.set_num_threads(task.threads)
    folder = store.run_path(suite_dir, task.job.run_id)
    if task.probes_to_add:
        return _add_probes(task, folder)
    store.reset_run(folder)
    started = time.perf_counter()
    events: RunEvents | None = None
    try:
        registry = registry_for(task.plugins)
        events = RunEvents(registry, task.tracker_specs, suite_dir)
        device = resolve_device(task.device)
        data = suite_data(task.plugins, task.job.data, device)
        config = run_config_file(task, data, device, registry)
        store.write_json(folder / store.CONFIG_FILE, config)
        events.started(folder, config)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        with PeakMemory(device) as peak:
            if isinstance(task.job, BaselineJob):
                record = execute_baseline(registry, task.job, data, device)
            elif task.pretrained_in is not None:
                record = execute_evaluation(registry, task.job, data, device, folder,
                                            store.run_path(suite_dir, task.pretrained_in),
                                            on_epoch=lambda row: events.epoch(folder, row))
            else:
                record = execute_run(registry, task.job, data, device, folder, task.label, task.show_progress,
                                     on_epoch=lambda row: events.epoch(folder, row), plugins=task.plugins)
        record["wall_seconds"] = round(time.perf_counter() - started, 3)
        peaks = [mb for mb in (peak.mb, record.get("peak_memory_mb")) if mb is not None]  # DDP: the ranks' too
        if peaks:
            record["peak_memory_mb"] = max(peaks)
        store.write_json(folder / store.METRICS_FILE, record)  # last: marks the run as finished
        outcome = Outcome(record)
    except Exception as exc:  # the run fails; the suite goes on
        store.write_atomic(folder / store.ERROR_FILE, traceback.format_exc())
        outcome = Outcome.failed(f"{type(exc).__name__}: {exc}")
    if events is None:
        return outcome
    events.finished(folder, store.summary_row(task.job, folder))
    return Outcome(outcome.record, outcome.note, tuple(events.warnings))


def execute_run(registry: Registry, job: RunJob, data: SuiteData, device: torch.device, folder: Path,
                label: str = "train", show_progress: bool = True,
                on_epoch: Callable[[dict[str, float]], None] = lambda row: None,
                plugins: PluginSources | None = None) -> dict[str, Any]:
    """Pre-train and evaluate one run, writing its files but metrics.json; returns the metrics record.
    ``on_epoch`` gets each epoch's history row, after ``history.csv`` is rewritten with it.
    With ``train.devices`` > 1 the pre-training runs on that many DDP processes, which rebuild
    the registry from ``plugins``."""
    config = job.config
    torch.manual_seed(job.seed)
    parts = build_components(registry, config, data.train.channels)
    flops_per_image = counted_flops(parts, config, data.train.channels, device)

    def epoch_finished(history: list[dict[str, float]]) -> None:
        store.write_csv(folder / store.HISTORY_FILE, history)
        on_epoch(history[-1])

    if is_distributed(config):
        result = pretrain_distributed(job, plugins or PluginSources(), parts, device, epoch_finished,
                                      desc=label or "train", show_progress=show_progress,
                                      flops_per_image=flops_per_image)
    else:
        result = pretrain(parts, data.train, data.normalize, config["train"], job.seed, device,
                          on_epoch=epoch_finished, desc=label or "train", show_progress=show_progress,
                          flops_per_image=flops_per_image)
    # The epoch whose loss turned non-finite did not complete; its loss is kept as text
    # ("nan", "inf"), since JSON has no such number.
    completed = result.history if result.status == "done" else result.history[:-1]
    record: dict[str, Any] = {
        "status": result.status,
        "train_seconds": round(result.seconds, 3),
        "images_per_second": round(result.images_per_second, 1),
        "epochs_completed": len(completed),
        "final_loss": completed[-1]["loss"] if completed else None,
        "train_steps": result.steps,
        "epochs": round(result.epochs, 4),  # fractional when train.budget_flops ends inside an epoch
    }
    if flops_per_image is not None:
        record["flops_per_image"] = flops_per_image  # forward + backward of one training image
        record["train_flops"] = flops_per_image * train_batch_size(config["train"], len(data.train)) * result.steps
    if result.peak_memory_mb is not None:
        record["peak_memory_mb"] = result.peak_memory_mb
    if result.compile_seconds:  # train.compile: the first compiled step, left out of images_per_second
        record["compile_seconds"] = round(result.compile_seconds, 3)
    if result.status == "diverged":
        record["diverged_loss"] = str(result.history[-1]["loss"])
    store.save_state_dict(folder / store.ENCODER_FILE, parts.encoder)
    if result.status == "done":
        evaluation = config["eval"]
        # A loss that trains on another target (norm_pix) says how to map predictions back.
        to_image = getattr(parts.loss, "prediction_to_image", None)
        own = reconstruction_metrics(parts.encoder, parts.decoder, parts.masker, data.test, data.normalize,
                                     evaluation["mask_seed"], evaluation["batch_size"], device, to_image)
        record.update(recon_mse=own["mse"], recon_psnr=own["psnr"], mask_ratio_actual=own["mask_ratio"],
                      mask_avgdist_px=own["mask_avgdist"], recon_uses_target_stats=to_image is not None)
        reference = evaluation["reference_masker"]
        if reference is not None:
            masker = registry.build("masker", reference["name"], reference["params"])
            ref = reconstruction_metrics(parts.encoder, parts.decoder, masker, data.test, data.normalize,
                                         evaluation["mask_seed"], evaluation["batch_size"], device, to_image)
            record.update(ref_mse=ref["mse"], ref_psnr=ref["psnr"])
        grid = reconstruction_grid(parts.encoder, parts.decoder, parts.masker, data.test, data.normalize,
                                   evaluation["mask_seed"], device, to_image=to_image)
        store.save_png(folder / store.RECONSTRUCTIONS_FILE, grid)
        record.update(run_probes(registry, config, config["eval"]["probes"], parts.encoder, data, device))
    return record


def counted_flops(parts: Components, config: dict[str, Any], channels: int, device: torch.device) -> float | None:
    """The run's FLOPs per training image (:func:`~mimbench.compute.run_flops_per_image`; training is
    unchanged by it). None where they cannot be counted (a component that cannot be deep-copied)
    and the run does not need them; with ``train.budget_flops`` it does, and the error is raised."""
    try:
        return run_flops_per_image(parts, config, channels, device)
    except Exception:
        if config["train"].get("budget_flops") is not None:
            raise
        return None


#: Columns of a pre-training run's record that describe the pre-training and the reconstruction,
#: not the probes: what a run evaluating the same encoder with other labels carries over.
PRETRAINING_COLUMNS = ("status", "train_seconds", "images_per_second", "compile_seconds", "epochs_completed",
                       "final_loss", "recon_mse", "recon_psnr", "ref_mse", "ref_psnr", "mask_ratio_actual",
                       "mask_avgdist_px", "recon_uses_target_stats", "flops_per_image", "train_flops", "train_steps",
                       "epochs")


def execute_evaluation(registry: Registry, job: RunJob, data: SuiteData, device: torch.device, folder: Path,
                       source: Path, on_epoch: Callable[[dict[str, float]], None] = lambda row: None
                       ) -> dict[str, Any]:
    """Evaluate the encoder another run of the suite pre-trained the same way (``source``, a run
    folder with another ``labels_per_class``): its pre-training and reconstruction columns are
    carried over (with its history and picture, whose rows go to ``on_epoch``), the probes run
    with this job's labels."""
    pretrained = store.read_json(source / store.METRICS_FILE)
    record = {key: pretrained[key] for key in PRETRAINING_COLUMNS if key in pretrained}
    record["pretrained_in"] = source.name
    for name in (store.HISTORY_FILE, store.RECONSTRUCTIONS_FILE):
        if (source / name).exists():
            store.write_atomic(folder / name, (source / name).read_bytes())
    for row in store.read_history(folder / store.HISTORY_FILE):
        on_epoch(row)
    if record.get("status") == "done":
        encoder = build_encoder(registry, job.config, data)
        encoder.load_state_dict(torch.load(source / store.ENCODER_FILE, map_location="cpu"))
        record.update(run_probes(registry, job.config, job.config["eval"]["probes"], encoder, data, device))
    return record


def execute_baseline(registry: Registry, job: BaselineJob, data: SuiteData, device: torch.device) -> dict[str, Any]:
    """The probes on an untrained encoder or on raw pixels; returns the metrics record."""
    encoder = baseline_encoder(registry, job, data)
    return {"status": "done", **run_probes(registry, job.config, job.config["eval"]["probes"], encoder, data, device)}


def baseline_encoder(registry: Registry, job: BaselineJob, data: SuiteData) -> torch.nn.Module:
    """``random-init``: built exactly as its pre-trained runs' encoder is before training, from
    the same seed, first; ``pixels``: :class:`~mimbench.probing.RawPixels`."""
    torch.manual_seed(job.seed)
    if job.kind == "random-init":
        return build_encoder(registry, job.config, data)
    return RawPixels(data.train.channels, job.config["image_size"])


def build_encoder(registry: Registry, config: dict[str, Any], data: SuiteData) -> torch.nn.Module:
    return registry.build("encoder", config["encoder"]["name"], config["encoder"]["params"],
                          in_channels=data.train.channels, image_size=config["image_size"])


def run_probes(registry: Registry, config: dict[str, Any], probes: list[dict[str, Any]], encoder: torch.nn.Module,
               data: SuiteData, device: torch.device) -> dict[str, Any]:
    """Each of ``probes`` on the frozen ``encoder``, fit on the labelled train split (or its
    ``eval.labels_per_class`` subset) and scored on the whole test split; features are extracted once."""
    started = time.perf_counter()
    # Probes that draw from torch's global generator (a fine-tuning head's init) must not depend
    # on what this process ran before: the same run gives the same numbers in any order, anywhere.
    torch.manual_seed(config["seed"])
    train = probe_train_split(data, config["seed"], config["eval"].get("labels_per_class"))
    context = ProbeContext(encoder.to(device).eval(), train, data.probe_test, data.normalize.to(device),
                           device, config["seed"], config["eval"]["batch_size"])
    columns: dict[str, Any] = {}
    for spec in probes:
        probe = registry.build("probe", spec["name"], spec["params"])
        columns.update(probe(context))
    classes = max(1, len(train.all_labels().unique()))
    return {**columns, "probe_train_images": len(train), "probe_labels_per_class": round(len(train) / classes),
            "probe_seconds": round(time.perf_counter() - started, 3)}


def probe_train_split(data: SuiteData, seed: int, labels_per_class: int | None) -> Images:
    """What the probes fit on: the labelled train split, or its class-balanced subset of
    ``labels_per_class`` images per class drawn from ``seed`` (the same for every run and baseline)."""
    if labels_per_class is None:
        return data.probe_train
    indices = class_balanced_indices(data.probe_train.all_labels(), labels_per_class, seed)
    return data.probe_train.subset(indices)


def _add_probes(task: Task, folder: Path) -> Outcome:
    """Run the task's probes on a finished run's saved encoder (or a baseline's, rebuilt from its
    seed) and merge their columns into its metrics.json; config.json then lists them as run.
    A failure leaves the run's earlier results as they were."""
    import json

    probes = [json.loads(text) for text in task.probes_to_add]
    names = ", ".join(spec["name"] for spec in probes)
    job = task.job
    events: RunEvents | None = None
    try:
        registry = registry_for(task.plugins)
        events = RunEvents(registry, task.tracker_specs, task.suite_dir)
        device = resolve_device(task.device)
        data = suite_data(task.plugins, job.data, device)
        if isinstance(job, BaselineJob):
            encoder = baseline_encoder(registry, job, data)
        else:
            record = store.read_json(folder / store.METRICS_FILE)
            source = store.run_path(Path(task.suite_dir), record.get("pretrained_in") or job.run_id)
            encoder = build_encoder(registry, job.config, data)
            encoder.load_state_dict(torch.load(source / store.ENCODER_FILE, map_location="cpu"))
        columns = run_probes(registry, job.config, probes, encoder, data, device)
        record = store.read_json(folder / store.METRICS_FILE)
        columns["probe_seconds"] = round(record.get("probe_seconds", 0.0) + columns["probe_seconds"], 3)
        record = {**record, **columns}
        store.write_json(folder / store.METRICS_FILE, record)
        saved = store.read_json(folder / store.CONFIG_FILE)  # after the metrics: a crash in between reruns them
        saved["eval"]["probes"] = saved["eval"].get("probes", []) + probes
        store.write_json(folder / store.CONFIG_FILE, saved)
    except Exception as exc:
        record = store.finished_record(folder) or {"status": "done"}
        outcome = Outcome(record, f"finished earlier; adding probes FAILED: {type(exc).__name__}: {exc}")
    else:
        outcome = Outcome(record, f"finished earlier; added probes {names}")
    if events is None:
        return outcome
    events.finished(folder, store.summary_row(job, folder))
    return Outcome(outcome.record, outcome.note, tuple(events.warnings))


def run_config_file(task: Task, data: SuiteData, device: torch.device, registry: Registry) -> dict[str, Any]:
    """config.json: the resolved run config plus what is needed to reproduce it."""
    return {
        "run_id": task.job.run_id,
        "suite": Path(task.suite_dir).name,
        "label": task.label,
        **task.job.config,
        "normalization": {"mean": data.normalize.mean.tolist(), "std": data.normalize.std.tolist()},
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "host": socket.gethostname(),
        "versions": {
            "mimbench": mimbench.__version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "plugins": {name: f"{p.name} {p.version}".strip() for name, p in registry.plugins.providers.items()},
        },
    }
