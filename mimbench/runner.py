"""A whole suite: validate everything, then run each configuration, recording as it goes.

A run that raises is recorded as failed (``error.txt``) and the suite goes on;
``summary.csv`` is rewritten after every run so nothing computed is lost.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

import mimbench
from mimbench import store
from mimbench.data import Images, Normalizer, load_images
from mimbench.errors import ConfigError
from mimbench.evaluate import reconstruction_grid, reconstruction_metrics
from mimbench.plugins import PluginSet
from mimbench.probing import ProbeContext, RawPixels, check_block_index
from mimbench.registry import Registry
from mimbench.suite import RunSpec, Suite, expand_baselines, run_labels, suite_to_yaml
from mimbench.train import build_components, pretrain


@dataclass
class SuiteData:
    """Both splits of the suite's dataset on the device, the train split's normalisation, and
    the labelled splits the probes use (``eval.dataset``, or the suite's dataset again)."""

    train: Images
    test: Images
    normalize: Normalizer
    probe_train: Images
    probe_test: Images


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


def load_data(registry: Registry, suite: Suite, dataset: dict[str, Any], device: torch.device,
              eval_dataset: dict[str, Any] | None = None) -> SuiteData:
    """Load train and test splits once, resized to the suite's image size, onto ``device``;
    and ``eval_dataset``'s splits for the probes when the suite names one."""
    limit = in_memory_limit(suite.data.in_memory_gb, device)
    train, test = _load_splits(registry, dataset, suite.image_size, device, limit, suite.data.workers)
    probe_train, probe_test = train, test
    if eval_dataset is not None:
        probe_train, probe_test = _load_splits(registry, eval_dataset, suite.image_size, device, limit,
                                               suite.data.workers)
        if probe_train.channels != train.channels:
            raise ConfigError(f"eval.dataset {eval_dataset['name']!r} has {probe_train.channels} channels, but the "
                              f"encoders are pre-trained on {train.channels}-channel images of {dataset['name']!r}")
    if suite.eval.probes and probe_train.num_classes < 2:
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


def validate(registry: Registry, runs: list[RunSpec], data: SuiteData) -> None:
    """Build every distinct component once, so bad params fail now (exit 2), not mid-suite.

    Maskers are also called once on a small batch: a ValueError there is a bad
    configuration (e.g. an image size the mask grid does not divide). Anything else a
    masker does wrong (another exception, a mask of the wrong shape) fails its own runs
    later, with error.txt, and not the whole suite.
    """
    if runs and runs[0].config["train"]["batch_size"] > len(data.train):
        raise ConfigError(f"train.batch_size {runs[0].config['train']['batch_size']} is larger than the "
                          f"train split ({len(data.train)} images)")
    seen: set[str] = set()
    size = data.train.image_size
    probe = torch.zeros(2, data.train.channels, size, size, device=data.normalize.mean.device)
    for run in runs:
        config = run.config
        key = repr([config[k] for k in ("image_size", "encoder", "decoder", "masker", "loss")])
        if key in seen:
            continue
        seen.add(key)
        parts = build_components(registry, config, data.train.channels)
        _try_masker(parts.masker, probe, f"masker {config['masker']['name']!r}")
        _check_probe_layers(parts.encoder, config, probe)
    reference = runs[0].config["eval"]["reference_masker"] if runs else None
    if reference is not None:
        masker = registry.build("masker", reference["name"], reference["params"])
        _try_masker(masker, probe, f"eval.reference_masker {reference['name']!r}")
    for spec in runs[0].config["eval"]["probes"] if runs else []:
        registry.build("probe", spec["name"], spec["params"])


def _check_probe_layers(encoder: torch.nn.Module, config: dict[str, Any], images: torch.Tensor) -> None:
    """A probe's block index must exist in every encoder it will read (checked before training)."""
    indices = [(spec["name"], spec["params"]["layer"]) for spec in config["eval"]["probes"]
               if isinstance(spec["params"].get("layer"), int)]
    if not indices or not callable(getattr(encoder, "blocks", None)):
        return
    with torch.no_grad():
        count = len(encoder.to(images.device).eval().blocks(images))
    for name, layer in indices:
        try:
            check_block_index(layer, count, f"encoder {config['encoder']['name']!r}")
        except ValueError as exc:
            raise ConfigError(f"probe {name!r}: {exc}") from None


def _try_masker(masker, probe: torch.Tensor, what: str) -> None:
    try:
        masker(probe)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    except Exception:  # not a configuration problem: the runs that use it will fail and say why
        pass


def execute_run(registry: Registry, run: RunSpec, data: SuiteData, device: torch.device, folder: Path,
                label: str = "train") -> dict[str, Any]:
    """Pre-train and evaluate one run, writing its files but metrics.json; returns the metrics record."""
    config = run.config
    torch.manual_seed(config["seed"])
    parts = build_components(registry, config, data.train.channels)
    result = pretrain(
        parts, data.train, data.normalize, config["train"], config["seed"], device,
        on_epoch=lambda history: store.write_csv(folder / "history.csv", history),
        desc=label,
    )
    record: dict[str, Any] = {
        "status": result.status,
        "train_seconds": round(result.seconds, 3),
        "images_per_second": round(result.images_per_second, 1),
        "epochs_completed": len(result.history),
        "final_loss": result.history[-1]["loss"] if result.history else None,
    }
    store.save_state_dict(folder / "encoder.pt", parts.encoder)
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
        store.save_png(folder / "reconstructions.png", grid)
        record.update(run_probes(registry, config, parts.encoder, data, device))
    return record


def run_probes(registry: Registry, config: dict[str, Any], encoder: torch.nn.Module, data: SuiteData,
               device: torch.device) -> dict[str, Any]:
    """Every probe of ``config["eval"]`` on the frozen ``encoder``; features are extracted once."""
    started = time.perf_counter()
    context = ProbeContext(encoder.to(device).eval(), data.probe_train, data.probe_test, data.normalize.to(device),
                           device, config["seed"], config["eval"]["batch_size"])
    columns: dict[str, Any] = {}
    for spec in config["eval"]["probes"]:
        probe = registry.build("probe", spec["name"], spec["params"])
        columns.update(probe(context))
    return {**columns, "probe_seconds": round(time.perf_counter() - started, 3)}


def execute_baseline(registry: Registry, run: RunSpec, data: SuiteData, device: torch.device,
                     folder: Path) -> dict[str, Any]:
    """The probes on an untrained encoder (``random-init``: built exactly as its pre-trained runs'
    encoder is before training, from the same seed) or on raw pixels; returns the metrics record."""
    encoder = _baseline_encoder(registry, run.config, data)
    return {"status": "done", **run_probes(registry, run.config, encoder, data, device)}


def _baseline_encoder(registry: Registry, config: dict[str, Any], data: SuiteData) -> torch.nn.Module:
    torch.manual_seed(config["seed"])
    if config["baseline"] == "random-init":
        return _build_encoder(registry, config, data)
    return RawPixels(data.train.channels, config["image_size"])


def _build_encoder(registry: Registry, config: dict[str, Any], data: SuiteData) -> torch.nn.Module:
    return registry.build("encoder", config["encoder"]["name"], config["encoder"]["params"],
                          in_channels=data.train.channels, image_size=config["image_size"])


def run_config_file(run: RunSpec, suite: Suite, data: SuiteData, device: torch.device, plugins: PluginSet) -> dict[str, Any]:
    """config.json: the resolved run config plus what is needed to reproduce it."""
    return {
        "run_id": run.run_id,
        "suite": suite.name,
        **run.config,
        "normalization": {"mean": data.normalize.mean.tolist(), "std": data.normalize.std.tolist()},
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "versions": {
            "mimbench": mimbench.__version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "plugins": {name: f"{p.name} {p.version}".strip() for name, p in plugins.providers.items()},
        },
    }


def missing_probes(folder: Path, run: RunSpec, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The probes ``run`` asks for that its finished folder has not run (none if it did not end done)."""
    if record.get("status") != "done":
        return []
    done = store.read_json(folder / "config.json").get("eval", {}).get("probes", [])
    return [spec for spec in run.config["eval"]["probes"] if spec not in done]


def add_probes(registry: Registry, run: RunSpec, probes: list[dict[str, Any]], data: SuiteData,
               device: torch.device, folder: Path) -> None:
    """Run ``probes`` on a finished run's saved encoder (or a baseline's, rebuilt from its seed) and
    merge their columns into its metrics.json; config.json then lists them as run."""
    config = run.config
    if "baseline" in config:
        encoder = _baseline_encoder(registry, config, data)
    else:
        encoder = _build_encoder(registry, config, data)
        encoder.load_state_dict(torch.load(folder / "encoder.pt", map_location="cpu"))
    columns = run_probes(registry, {**config, "eval": {**config["eval"], "probes": probes}}, encoder, data, device)
    record = store.read_json(folder / "metrics.json")
    columns["probe_seconds"] = round(record.get("probe_seconds", 0.0) + columns["probe_seconds"], 3)
    store.write_json(folder / "metrics.json", {**record, **columns})
    saved = store.read_json(folder / "config.json")  # after the metrics: a crash in between reruns them
    saved["eval"]["probes"] = saved["eval"].get("probes", []) + probes
    store.write_json(folder / "config.json", saved)


def _outcome_text(record: dict[str, Any]) -> str:
    shown = [("recon_psnr", "recon_psnr {:.2f} dB"), ("linear_acc", "linear {:.3f}"), ("knn_acc", "knn {:.3f}"),
             ("finetune_acc", "finetune {:.3f}")]
    return "".join(f"  {text.format(record[key])}" for key, text in shown if record.get(key) is not None)


def run_suite(
    suite: Suite,
    runs: list[RunSpec],
    registry: Registry,
    data: SuiteData,
    out: Path,
    device: torch.device,
    fresh: bool = False,
) -> pd.DataFrame:
    """Run every unfinished run of ``suite`` into ``out/<suite.name>``, then its baselines;
    returns the summary table."""
    runs = runs + expand_baselines(suite, runs)
    suite_dir = out / suite.name
    if fresh and suite_dir.exists():
        shutil.rmtree(suite_dir)
    previous = suite_dir / "suite.yaml"
    if previous.exists() and previous.read_text() != suite_to_yaml(suite):
        tqdm.write(f"note: {previous} held another version of suite {suite.name!r}; summary.csv will list "
                   f"this version's {len(runs)} runs (earlier runs stay in {suite_dir / 'runs'}; "
                   f"use --set name=... to keep versions apart)")
    store.write_atomic(previous, suite_to_yaml(suite))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # On a terminal: a bar for the suite and one per run; in logs: one line per run.
    progress = tqdm(runs, desc=f"suite {suite.name}", unit="run", dynamic_ncols=True, disable=None)
    labels = run_labels(runs)
    width = max(len(label) for label in labels.values())
    for run in progress:
        folder = store.run_dir(suite_dir, run)
        finished = store.finished_record(folder)
        if finished is not None:
            missing = missing_probes(folder, run, finished)
            if not missing:
                progress.write(f"{run.run_id}  {labels[run.run_id]:<{width}}  already finished, skipped")
                continue
            try:
                add_probes(registry, run, missing, data, device, folder)
                outcome = "finished earlier; added probes " + ", ".join(spec["name"] for spec in missing)
            except Exception as exc:  # the run's earlier results stay as they were
                outcome = f"finished earlier; adding probes FAILED: {type(exc).__name__}: {exc}"
            progress.write(f"{run.run_id}  {labels[run.run_id]:<{width}}  {outcome}")
            store.write_summary(suite_dir, runs)
            continue
        store.reset_run(folder)
        store.write_json(folder / "config.json", run_config_file(run, suite, data, device, registry.plugins))
        started = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            if "baseline" in run.config:
                record = execute_baseline(registry, run, data, device, folder)
            else:
                record = execute_run(registry, run, data, device, folder, labels[run.run_id])
            record["wall_seconds"] = round(time.perf_counter() - started, 3)
            if device.type == "cuda":
                record["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            store.write_json(folder / "metrics.json", record)  # last: marks the run as finished
            outcome = record["status"] + _outcome_text(record)
        except Exception as exc:  # the run fails; the suite goes on
            store.write_atomic(folder / "error.txt", traceback.format_exc())
            outcome = f"FAILED: {type(exc).__name__}: {exc}"
        progress.write(f"{run.run_id}  {labels[run.run_id]:<{width}}  {time.perf_counter() - started:6.1f}s  {outcome}")
        table = store.write_summary(suite_dir, runs)
        row = table[table.run_id == run.run_id].iloc[0].to_dict()
        try:
            registry.plugins.hook.mimbench_run_finished(run_dir=folder, record=row)
        except Exception as exc:
            progress.write(f"warning: a mimbench_run_finished hook failed: {type(exc).__name__}: {exc}")
    progress.close()
    return store.write_summary(suite_dir, runs)
