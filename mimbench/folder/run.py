"""One run's folder, ``<suite>/runs/<run_id>/``, and every file in it.

``config.json`` is written first, ``metrics.json`` last: a folder without ``metrics.json`` holds an
unfinished run, which runs again; one with ``error.txt`` failed and is retried. A folder whose
``metrics.json`` or ``config.json`` cannot be read is :meth:`RunFolder.damage`-d and set aside by the
suite folder, never deleted.

A worker's folder carries its driver's :class:`~mimbench.folder.lock.LockToken`: every write checks it
first and raises :class:`~mimbench.folder.lock.LockLost` once the driver is gone.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimbench.errors import shown
from mimbench.folder.lock import LockToken
from mimbench.folder.files import (DamagedFile, read_csv_rows, read_json_object, read_text_lossy, write_atomic,
                                   write_csv, write_json)
from mimbench.specs import FINISHED

if TYPE_CHECKING:
    import torch

CONFIG_FILE, METRICS_FILE, HISTORY_FILE, ERROR_FILE = "config.json", "metrics.json", "history.csv", "error.txt"
ENCODER_FILE, RECONSTRUCTIONS_FILE, TARGET_FILE = "encoder.pt", "reconstructions.png", "target.pt"
CHECKPOINT_FILE = "checkpoint.pt"  # written and read by mimbench.folder.checkpoint
#: Per-image outcomes: the test labels and, per accuracy column, each test image's predicted class.
PREDICTIONS_FILE = "predictions.npz"


class RunFolder:
    """The files of one run (or baseline). Reading never raises for a missing file where "not
    there" is an answer (:meth:`finished_record`, :meth:`history`); a damaged file is a
    :class:`DamagedFile` naming it."""

    def __init__(self, path: Path, lock: LockToken | None = None):
        self.path = Path(path)
        self.lock = lock  # the driver's lock token, checked before each write

    def writable(self) -> None:
        """Raise :class:`~mimbench.folder.lock.LockLost` when the driver this folder was opened for
        no longer holds the suite folder (nothing to check without a token)."""
        if self.lock is not None:
            self.lock.check()

    @property
    def run_id(self) -> str:
        return self.path.name

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- config.json: the resolved config the run was made with --------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        self.writable()
        write_json(self.path / CONFIG_FILE, config)

    def read_config(self) -> dict[str, Any]:
        """``config.json``: FileNotFoundError when absent, :class:`DamagedFile` when unreadable or not
        shaped like one (its ``eval.probes``, when present, must be a list of component specs)."""
        config = read_json_object(self.path / CONFIG_FILE)
        evaluation = config.get("eval", {})
        probes = evaluation.get("probes", []) if isinstance(evaluation, dict) else None
        if not isinstance(probes, list) or not all(isinstance(p, dict) and "name" in p for p in probes):
            raise DamagedFile(f"{CONFIG_FILE} is not a run config (its eval.probes is not a list of components)")
        return config

    def has_config(self) -> bool:
        return (self.path / CONFIG_FILE).exists()

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    def probes_run(self) -> list[dict[str, Any]]:
        """The probe specs the finished run's ``config.json`` lists as run ([] when unreadable)."""
        try:
            return self.read_config().get("eval", {}).get("probes", [])
        except (OSError, ValueError):
            return []

    def add_probes_to_config(self, probes: list[dict[str, Any]]) -> None:
        """List ``probes`` as run in ``config.json`` (after their columns reached ``metrics.json``)."""
        config = self.read_config()
        config["eval"]["probes"] = config["eval"].get("probes", []) + probes
        self.write_config(config)

    # -- metrics.json: written last, the run is finished ---------------------------------------------
    def write_metrics(self, record: dict[str, Any]) -> None:
        self.writable()
        write_json(self.path / METRICS_FILE, record)

    def read_record(self) -> dict[str, Any]:
        """``metrics.json``: FileNotFoundError when the run has not finished, :class:`DamagedFile`
        when it is unreadable or not a finished run's record (an object with status done or diverged)."""
        record = read_json_object(self.path / METRICS_FILE)
        if record.get("status") not in FINISHED:
            raise DamagedFile(f"{METRICS_FILE} has status {shown(record.get('status'))}, not {' or '.join(FINISHED)}")
        return record

    def finished_record(self) -> dict[str, Any] | None:
        """The run's metrics if it finished (done or diverged), else None (also when damaged)."""
        try:
            return self.read_record()
        except (FileNotFoundError, DamagedFile):
            return None

    def has_metrics(self) -> bool:
        return (self.path / METRICS_FILE).exists()

    # -- history.csv: one row per pre-training epoch ---------------------------------------------------
    def write_history(self, rows: list[dict[str, float]]) -> None:
        self.writable()
        write_csv(self.path / HISTORY_FILE, rows)

    def history(self) -> list[dict[str, float]]:
        """The rows of ``history.csv`` (``epoch`` an int, the rest floats); ``[]`` when it is missing."""
        return read_csv_rows(self.path / HISTORY_FILE)

    # -- encoder.pt and reconstructions.png ------------------------------------------------------------
    def save_encoder(self, module: "torch.nn.Module") -> None:
        import torch  # here, so that reading results (mimbench report) does not import torch
        self.writable()

        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, buffer)
        write_atomic(self.path / ENCODER_FILE, buffer.getvalue())

    def save_target(self, state: dict[str, "torch.Tensor"]) -> None:
        """A target's state (ema_teacher's teacher, on the CPU) as ``target.pt``."""
        self.writable()
        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_atomic(self.path / TARGET_FILE, buffer.getvalue())

    def target_state(self) -> dict[str, "torch.Tensor"] | None:
        """``target.pt``'s state_dict on the CPU, or None for a run whose target has no state."""
        import torch

        if not (self.path / TARGET_FILE).is_file():
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(self.path / TARGET_FILE, map_location="cpu", weights_only=True)  # data, never code

    def has_encoder(self) -> bool:
        return (self.path / ENCODER_FILE).is_file()

    @property
    def encoder_path(self) -> Path:
        return self.path / ENCODER_FILE

    def encoder_state(self) -> dict[str, "torch.Tensor"]:
        """``encoder.pt``'s state_dict, on the CPU. A damaged file raises what torch raises."""
        import torch

        with warnings.catch_warnings():  # a garbled file's pickle-protocol warning would be a second line
            warnings.simplefilter("ignore")
            return torch.load(self.path / ENCODER_FILE, map_location="cpu", weights_only=True)  # data, never code

    def save_reconstructions(self, image: "torch.Tensor") -> None:
        """``image`` float [3, H, W] in [0, 1] as ``reconstructions.png``."""
        self.save_picture(RECONSTRUCTIONS_FILE.removesuffix(".png"), image)

    def save_picture(self, name: str, image: "torch.Tensor") -> None:
        """``image`` float [3, H, W] in [0, 1] as ``<name>.png`` (``name``: lower-case letters and _)."""
        self.writable()
        from torchvision.utils import save_image

        if not re.fullmatch(r"[a-z_]{1,40}", name):
            raise ValueError(f"a picture's name must be 1-40 lower-case letters or _, got {name!r}")
        buffer = io.BytesIO()
        save_image(image, buffer, format="png")
        write_atomic(self.path / f"{name}.png", buffer.getvalue())

    def save_json(self, name: str, document: Any) -> None:
        """A probe's ``document`` (JSON-serialisable) as ``<name>.json`` (``name``: lower-case letters
        and _, not one of the run's own files: config, metrics)."""
        self.writable()
        if not re.fullmatch(r"[a-z_]{1,40}", name) or f"{name}.json" in (CONFIG_FILE, METRICS_FILE):
            raise ValueError(f"a probe's file name must be 1-40 lower-case letters or _, and not config or metrics; "
                             f"got {name!r}")
        write_atomic(self.path / f"{name}.json", (json.dumps(document) + "\n").encode())

    def picture(self, name: str) -> Path:
        """Where ``<name>.png`` is (it may not exist)."""
        return self.path / f"{name}.png"

    # -- predictions.npz: per-image outcomes -------------------------------------------------------------
    def write_predictions(self, labels: "torch.Tensor", predictions: "dict[str, torch.Tensor]") -> None:
        """``predictions.npz``: ``labels`` (the test split's, [N]) and each column's predicted
        classes [N], as the smallest unsigned integers that hold them, merged with the columns the
        file already has (probes added later to a finished run)."""
        self.writable()
        import numpy as np

        arrays = self.read_predictions() or {}
        arrays["labels"] = labels.cpu().numpy()
        arrays.update({column: predicted.cpu().numpy() for column, predicted in predictions.items()})
        largest = max(int(array.max(initial=0)) for array in arrays.values())
        dtype = next(t for t in (np.uint8, np.uint16, np.uint32, np.int64) if largest <= np.iinfo(t).max)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{name: array.astype(dtype) for name, array in arrays.items()})
        write_atomic(self.path / PREDICTIONS_FILE, buffer.getvalue())

    def read_predictions(self) -> "dict[str, Any] | None":
        """The arrays of ``predictions.npz`` by name (``labels`` and one per accuracy column), or None
        without the file; a damaged file is a :class:`DamagedFile`."""
        import numpy as np

        path = self.path / PREDICTIONS_FILE
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError) as exc:
            raise DamagedFile(f"{path}: not a readable predictions file ({exc})") from None

    @property
    def reconstructions(self) -> Path:
        return self.path / RECONSTRUCTIONS_FILE

    def copy_pretraining_from(self, source: "RunFolder") -> None:
        """Copy the history and the picture of the run that pre-trained this run's encoder."""
        self.writable()
        for name in (HISTORY_FILE, RECONSTRUCTIONS_FILE):
            if (source.path / name).exists():
                write_atomic(self.path / name, (source.path / name).read_bytes())

    # -- error.txt: the run failed ---------------------------------------------------------------------
    def write_error(self, text: str) -> None:
        self.writable()
        write_atomic(self.path / ERROR_FILE, text if text.endswith("\n") else text + "\n")

    def has_error(self) -> bool:
        return (self.path / ERROR_FILE).exists()

    def error_line(self) -> str:
        """The last non-empty line of ``error.txt`` (the exception), whatever the file holds."""
        lines = [line for line in read_text_lossy(self.path / ERROR_FILE).strip().splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    # -- the folder as a whole -------------------------------------------------------------------------
    def unreadable(self) -> list[str]:
        """Why ``metrics.json`` and ``config.json``, where present, cannot be read: one reason per
        damaged file, ``[]`` when both are fine."""
        reasons = []
        for read in (self.read_record, self.read_config):
            try:
                read()
            except FileNotFoundError:
                pass
            except DamagedFile as exc:
                reasons.append(str(exc))
        return reasons

    def damage(self) -> list[str]:
        """Why the folder cannot be resumed as it is: its :meth:`unreadable` files, or a finished run
        without ``config.json`` (which says which probes it ran); ``[]`` when it can."""
        reasons = self.unreadable()
        if not reasons and self.finished_record() is not None and not self.has_config():
            reasons.append(f"{CONFIG_FILE} is missing")
        return reasons

    def remove_checkpoint(self) -> None:
        """Delete the mid-run checkpoint (:mod:`mimbench.folder.checkpoint`) of a finished run."""
        self.writable()
        (self.path / CHECKPOINT_FILE).unlink(missing_ok=True)

    def reset(self, keep: tuple[str, ...] = ()) -> None:
        """Empty a folder whose run did not finish, so that it starts clean, but for the files
        named in ``keep`` (a mid-run checkpoint to continue from)."""
        self.writable()
        if self.path.is_dir() and not self.path.is_symlink():
            for entry in self.path.iterdir():
                if entry.name in keep and entry.is_file() and not entry.is_symlink():
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            return
        if self.path.exists() or self.path.is_symlink():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
