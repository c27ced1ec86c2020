"""A whole suite: validate everything, then run each configuration, recording as it goes.

A run that raises is recorded as failed (``error.txt``) and the suite goes on;
``summary.csv`` is rewritten after every run so nothing computed is lost.
"""

from __future__ import annotations

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
from mimbench.data import DeviceImages, Normalizer, to_device_images
from mimbench.errors import ConfigError
from mimbench.evaluate import reconstruction_grid, reconstruction_metrics
from mimbench.plugins import PluginSet
from mimbench.registry import Registry
from mimbench.suite import RunSpec, Suite, run_labels, suite_to_yaml
from mimbench.train import build_components, pretrain


@dataclass
class SuiteData:
    """Both splits of the suite's dataset on the device, and the train split's normalisation."""

    train: DeviceImages
    test: DeviceImages
    normalize: Normalizer


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


def load_data(registry: Registry, suite: Suite, dataset: dict[str, Any], device: torch.device) -> SuiteData:
    """Load train and test splits once, resized to the suite's image size, onto ``device``."""
    splits = {}
    for split in ("train", "test"):
        raw = registry.build("dataset", dataset["name"], dataset["params"], split=split, image_size=suite.image_size)
        if len(raw) == 0:
            raise ConfigError(f"dataset {dataset['name']!r}: the {split} split is empty")
        splits[split] = to_device_images(raw, suite.image_size, device)
    return SuiteData(splits["train"], splits["test"], Normalizer.measure(splits["train"].images))


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
    probe = torch.zeros(2, data.train.channels, *data.train.images.shape[-2:], device=data.train.images.device)
    for run in runs:
        config = run.config
        key = repr([config[k] for k in ("image_size", "encoder", "decoder", "masker", "loss")])
        if key in seen:
            continue
        seen.add(key)
        parts = build_components(registry, config, data.train.channels)
        _try_masker(parts.masker, probe, f"masker {config['masker']['name']!r}")
    reference = runs[0].config["eval"]["reference_masker"] if runs else None
    if reference is not None:
        masker = registry.build("masker", reference["name"], reference["params"])
        _try_masker(masker, probe, f"eval.reference_masker {reference['name']!r}")


def _try_masker(masker, probe: torch.Tensor, what: str) -> None:
    try:
        masker(probe)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    except Exception:  # not a configuration problem: the runs that use it will fail and say why
        pass


def execute_run(registry: Registry, run: RunSpec, data: SuiteData, device: torch.device, folder: Path,
                label: str = "train") -> dict[str, Any]:
    """Pre-train and evaluate one run, writing its files; returns the metrics record."""
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
    store.write_json(folder / "metrics.json", record)  # last: marks the run as finished
    return record


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


def run_suite(
    suite: Suite,
    runs: list[RunSpec],
    registry: Registry,
    data: SuiteData,
    out: Path,
    device: torch.device,
    fresh: bool = False,
) -> pd.DataFrame:
    """Run every unfinished run of ``suite`` into ``out/<suite.name>``; returns the summary table."""
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
        if store.finished_record(folder) is not None:
            progress.write(f"{run.run_id}  {labels[run.run_id]:<{width}}  already finished, skipped")
            continue
        store.reset_run(folder)
        store.write_json(folder / "config.json", run_config_file(run, suite, data, device, registry.plugins))
        started = time.perf_counter()
        try:
            record = execute_run(registry, run, data, device, folder, labels[run.run_id])
            outcome = record["status"]
            if "recon_psnr" in record:
                outcome += f"  recon_psnr {record['recon_psnr']:.2f} dB  recon_mse {record['recon_mse']:.4f}"
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
