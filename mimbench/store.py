"""Results on disk: one folder per run, files written atomically, a summary table.

``metrics.json`` is written last: a run folder without it is unfinished and is
run again; one with ``error.txt`` failed and is retried. A run folder whose
``metrics.json`` or ``config.json`` cannot be read (:func:`damage`) is set aside under
``damaged/`` (:func:`set_aside`), never deleted, and the run starts again.

JSON files are strict JSON: a non-finite float (a diverged loss) is written as ``null``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mimbench import columns
from mimbench.columns import MetricColumn
from mimbench.errors import shown
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
                  "peak_memory_mb", "flops_per_image", "train_flops", "train_steps", "epochs", "epochs_completed",
                  "final_loss", "diverged_loss", "error"]


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    On failure (disk full, no permission) ``path`` is left as it was, and the ``OSError``
    names ``path`` (not the temporary file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results are meant to be shared
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as strict JSON: non-finite floats become ``null`` (``NaN`` is not JSON)."""
    write_atomic(path, json.dumps(finite(data), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n")


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (in dicts, lists and tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


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


#: The statuses of a finished run's ``metrics.json``.
FINISHED = ("done", "diverged")
#: Where damaged run folders are set aside, inside the suite folder.
DAMAGED_DIR = "damaged"


class DamagedFile(ValueError):
    """A results file that exists but cannot be read as what it must be; the message says which and why."""


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; FileNotFoundError when there is none, :class:`DamagedFile`
    when it cannot be read, is not UTF-8 JSON or is not an object."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise DamagedFile(f"{path.name} cannot be read ({exc.strerror})") from None
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DamagedFile(f"{path.name} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DamagedFile(f"{path.name} is not JSON ({exc})") from None
    except RecursionError:
        raise DamagedFile(f"{path.name} is nested too deeply to be a mimbench file") from None
    if not isinstance(value, dict):
        raise DamagedFile(f"{path.name} holds a JSON {type(value).__name__}, not an object")
    return value


def read_record(folder: Path) -> dict[str, Any]:
    """A run's ``metrics.json``: FileNotFoundError when the run has not finished, :class:`DamagedFile`
    when it is unreadable or not a finished run's record (an object with status done or diverged)."""
    record = read_json_object(Path(folder) / METRICS_FILE)
    if record.get("status") not in FINISHED:
        raise DamagedFile(f"{METRICS_FILE} has status {shown(record.get('status'))}, not "
                          f"{' or '.join(FINISHED)}")
    return record


def read_config(folder: Path) -> dict[str, Any]:
    """A run's ``config.json``: FileNotFoundError when absent, :class:`DamagedFile` when unreadable
    or not shaped like one (its ``eval.probes``, when present, must be a list of component specs)."""
    config = read_json_object(Path(folder) / CONFIG_FILE)
    evaluation = config.get("eval", {})
    probes = evaluation.get("probes", []) if isinstance(evaluation, dict) else None
    if not isinstance(probes, list) or not all(isinstance(p, dict) and "name" in p for p in probes):
        raise DamagedFile(f"{CONFIG_FILE} is not a run config (its eval.probes is not a list of components)")
    return config


def finished_record(folder: Path) -> dict[str, Any] | None:
    """The run's metrics if it finished (done or diverged), else None (also when its
    ``metrics.json`` is damaged: see :func:`damage`)."""
    try:
        return read_record(folder)
    except (FileNotFoundError, DamagedFile):
        return None


def unreadable(folder: Path) -> list[str]:
    """Why a run folder's ``metrics.json`` and ``config.json``, where present, cannot be read:
    one reason per damaged file, ``[]`` when both are fine."""
    reasons = []
    for read in (read_record, read_config):
        try:
            read(folder)
        except FileNotFoundError:
            pass
        except DamagedFile as exc:
            reasons.append(str(exc))
    return reasons


def damage(folder: Path) -> list[str]:
    """Why a run folder cannot be resumed as it is: its :func:`unreadable` files, or a finished
    run without ``config.json`` (which says which probes it ran); ``[]`` when it can."""
    reasons = unreadable(folder)
    if not reasons and finished_record(folder) is not None and not (Path(folder) / CONFIG_FILE).exists():
        reasons.append(f"{CONFIG_FILE} is missing")
    return reasons


def set_aside(suite_dir: Path, run_id: str) -> Path:
    """Move ``runs/<run_id>`` (a damaged run folder) to ``damaged/<run_id>`` (``.2``, ``.3``... when
    taken), keeping every file; returns where it went. The run then starts again."""
    target = Path(suite_dir) / DAMAGED_DIR / str(run_id)
    number = 1
    while target.exists() or target.is_symlink():
        number += 1
        target = target.with_name(f"{run_id}.{number}")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(run_path(suite_dir, run_id), target)
    return target


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
    elif (folder / ERROR_FILE).exists():
        row["status"] = "failed"
        row["error"] = _last_line(_read_error(folder / ERROR_FILE))
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
    for unused in ("eval.labels_per_class", "train.budget_flops"):  # params a suite that does not use them lacks
        if unused in table.columns and table[unused].isna().all():
            table = table.drop(columns=unused)
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


def _read_error(path: Path) -> str:
    """An ``error.txt``, whatever it holds; what went wrong when it cannot be read."""
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"({ERROR_FILE} cannot be read: {exc.strerror})"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def read_suite_yaml(suite_dir: Path) -> dict[str, Any]:
    """The suite as run (``<suite_dir>/suite.yaml``), or ``{}`` when it is missing or unreadable."""
    import yaml

    try:
        suite = yaml.safe_load((Path(suite_dir) / SUITE_FILE).read_text())
    except (OSError, ValueError, yaml.YAMLError):  # ValueError: not UTF-8
        return {}
    return suite if isinstance(suite, dict) else {}
