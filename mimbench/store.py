"""Results on disk: one folder per run, files written atomically, a summary table.

``metrics.json`` is written last: a run folder without it is unfinished and is
run again; one with ``error.txt`` failed and is retried.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mimbench import columns
from mimbench.columns import MetricColumn
from mimbench.jobs import BaselineJob, Job
from mimbench.suite import COMPONENT_AXES

if TYPE_CHECKING:
    import torch

#: The summary's leading columns, in this order: what was run, then the core's measurements;
#: the declared metric columns of the suite's probes come next, then the rest of each record
#: (undeclared columns, timing), then ``<kind>.<param>`` columns.
ID_COLUMNS = ["run_id", "status", "dataset", "encoder", "decoder", "masker", "loss", "seed", "pretrained", "baseline"]
CORE_COLUMNS = ["mask_ratio_actual", "mask_avgdist_px", "recon_mse", "recon_psnr", "ref_mse", "ref_psnr"]
TIMING_COLUMNS = ["recon_uses_target_stats", "train_seconds", "images_per_second", "probe_seconds", "wall_seconds",
                  "peak_memory_mb", "epochs_completed", "final_loss", "error"]


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue())


def read_history(path: Path) -> list[dict[str, float]]:
    """The rows of a ``history.csv`` (``epoch`` an int, the rest floats); ``[]`` when it is missing."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        rows.append({key: int(value) if key == "epoch" else float(value) for key, value in row.items()})
    return rows


def save_state_dict(path: Path, module: "torch.nn.Module") -> None:
    import torch  # here, so that reading results (mimbench report) does not import torch

    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, buffer)
    write_atomic(path, buffer.getvalue())


def save_png(path: Path, image: "torch.Tensor") -> None:
    from torchvision.utils import save_image

    buffer = io.BytesIO()
    save_image(image, buffer, format="png")
    write_atomic(path, buffer.getvalue())


#: File names inside a suite folder, and inside each run folder under ``runs/<run_id>/``.
SUITE_FILE, SUMMARY_FILE, COLUMNS_FILE, LOCK_FILE = "suite.yaml", "summary.csv", "columns.json", ".lock"
CONFIG_FILE, METRICS_FILE, HISTORY_FILE, ERROR_FILE = "config.json", "metrics.json", "history.csv", "error.txt"
ENCODER_FILE, RECONSTRUCTIONS_FILE = "encoder.pt", "reconstructions.png"


def run_dir(suite_dir: Path, run: Job) -> Path:
    return run_path(suite_dir, run.run_id)


def run_path(suite_dir: Path, run_id: str, name: str | None = None) -> Path:
    """``<suite_dir>/runs/<run_id>``, or the file ``name`` in it."""
    folder = Path(suite_dir) / "runs" / str(run_id)
    return folder if name is None else folder / name


def write_columns(suite_dir: Path, declared: list[MetricColumn]) -> None:
    write_atomic(Path(suite_dir) / COLUMNS_FILE, columns.dumps(declared))


def read_columns(suite_dir: Path, summary_columns: list[str]) -> list[MetricColumn]:
    """The suite's declared metric columns (``columns.json``), keeping those the summary has;
    inferred from the summary's column names for folders written before the file existed."""
    try:
        declared = columns.loads((Path(suite_dir) / COLUMNS_FILE).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return columns.inferred(summary_columns)
    present = set(summary_columns)
    return [c for c in declared if c.key in present]


def finished_record(folder: Path) -> dict[str, Any] | None:
    """The run's metrics if it finished (done or diverged), else None."""
    try:
        return json.loads((folder / "metrics.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def reset_run(folder: Path) -> None:
    """Empty a run folder that did not finish, so it starts clean."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def summary_row(run: Job, folder: Path) -> dict[str, Any]:
    """One summary row from a run's config and whatever its folder holds."""
    config = run.config
    row: dict[str, Any] = dict.fromkeys(ID_COLUMNS + CORE_COLUMNS)
    baseline = run.kind if isinstance(run, BaselineJob) else None
    row.update(run_id=run.run_id, dataset=config["dataset"]["name"], seed=config["seed"], pretrained=baseline is None,
               baseline=baseline)
    axes = [axis for axis in COMPONENT_AXES if axis in config]  # a baseline has an encoder at most
    for axis in axes:
        row[axis] = config[axis]["name"]
    if baseline == "pixels":
        row["encoder"] = "pixels"
    record = finished_record(folder)
    if record is not None:
        row.update(record)
    elif (folder / "error.txt").exists():
        row["status"] = "failed"
        row["error"] = _last_line((folder / "error.txt").read_text())
    else:
        row["status"] = "pending"
    for kind in ("dataset", *axes):
        for key, value in config[kind]["params"].items():
            row[f"{kind}.{key}"] = _cell(value)
    for key, value in config.get("train", {}).items():
        row[f"train.{key}"] = _cell(value)
    row["eval.labels_per_class"] = config.get("eval", {}).get("labels_per_class")  # null: every label
    return row


def write_summary(suite_dir: Path, runs: list[Job], declared: list[MetricColumn] | tuple = ()) -> pd.DataFrame:
    """Rebuild ``summary.csv`` from the run folders of ``runs``; returns it as a DataFrame.
    ``declared``: the suite's metric columns, placed after the core's in this order."""
    table = pd.DataFrame([summary_row(run, run_dir(suite_dir, run)) for run in runs])
    if "eval.labels_per_class" in table.columns and table["eval.labels_per_class"].isna().all():
        table = table.drop(columns="eval.labels_per_class")  # a suite that does not use it
    params = [c for c in table.columns if "." in c]
    order = ID_COLUMNS + CORE_COLUMNS + [c.key for c in declared]
    leading = list(dict.fromkeys(c for c in order if c in table.columns))
    rest = [c for c in table.columns if c not in leading and c not in params and c not in TIMING_COLUMNS]
    timing = [c for c in TIMING_COLUMNS if c in table.columns]
    table = table[leading + rest + timing + params].convert_dtypes()  # ints stay ints
    write_atomic(suite_dir / "summary.csv", table.to_csv(index=False))
    return table


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def read_suite_yaml(suite_dir: Path) -> dict[str, Any]:
    """The suite as run (``<suite_dir>/suite.yaml``), or ``{}`` when it is missing or unreadable."""
    import yaml

    try:
        suite = yaml.safe_load((Path(suite_dir) / SUITE_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return suite if isinstance(suite, dict) else {}
