"""The ``tensorboard`` tracker: TensorBoard event files, one TensorBoard run per mimbench run.

``tensorboard --logdir OUT/<suite>/tensorboard`` shows the whole suite. Each run writes to
``OUT/<suite>/tensorboard/<name>/``: ``<name>`` is the run's label (the one the console prints),
made a safe folder name (:func:`folder_name`), with ``~`` and the start of the run id appended only
where another run of the suite already has that name (a hidden ``.mimbench-run`` file in each
folder names its run). Scalars: ``train/loss`` and ``train/lr`` every ``train.log_every`` steps
(step = the global optimizer step; the loss is the mean over the steps since the previous point);
``epoch/loss``, ``epoch/lr`` and ``epoch/images_per_second`` per epoch (step = epoch);
``final/<metric>`` for every number of the run's summary row; the run's params in the HParams
dashboard (with its ``label`` and ``status``) and the ``reconstructions`` image. Event files are
logs, appended as the run goes, not written atomically; a run executed again starts from an
empty folder, and a run whose label changed since it last executed moves to its new name.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any, Iterator

from mimbench.plugin import ConfigError, RunFolder, final_metrics, missing_extra, run_params

#: The hidden file in each TensorBoard run's folder that names its mimbench run.
MARKER = ".mimbench-run"
#: Characters a folder name keeps (others become ``_``), and its longest length.
UNSAFE = re.compile(r"[^A-Za-z0-9 _.,=()+@%-]")
MAX_NAME = 100


def folder_name(label: str) -> str:
    """A label as a folder name that is safe everywhere: ``/`` (and the spaces around it) becomes
    ``+``, any character but ASCII letters, digits, space and ``_.,=()+@%-`` becomes ``_``, no leading
    dot or space, at most :data:`MAX_NAME` characters (``cnn / pixel seed=0`` -> ``cnn+pixel seed=0``)."""
    name = UNSAFE.sub("_", label.replace(" / ", "+").replace("/", "+"))[:MAX_NAME].strip()
    return re.sub(r"^\.", "_", name) or "run"


def _owner(folder: Path) -> str | None:
    """The run id in ``folder``'s marker (None: no readable marker, or a link: not a run's folder)."""
    if folder.is_symlink() or not folder.is_dir():
        return None
    try:
        return (folder / MARKER).read_text().strip()
    except OSError:
        return None


def _folders_of(root: Path, run_id: str) -> Iterator[Path]:
    """The folders under ``root`` whose marker names ``run_id``."""
    if root.is_dir():
        yield from (folder for folder in sorted(root.iterdir()) if _owner(folder) == run_id)


def _clear(folder: Path) -> None:
    """Delete the event files in a run's own folder (only those: nothing else is ours to delete)."""
    for events in folder.glob("events.out.tfevents.*"):
        if events.is_file() and not events.is_symlink():
            events.unlink()


def claim_folder(root: Path, label: str, run_id: str) -> Path:
    """The empty folder under ``root`` where run ``run_id`` logs: named by :func:`folder_name` of its
    label, with ``~`` and the run id's first 8 characters (then all of it) where that name is another
    run's. A folder the run had under another name is removed. Safe under concurrent workers: a
    name is taken by creating its folder, and a folder without a marker is never taken over."""
    root.mkdir(parents=True, exist_ok=True)
    name = folder_name(label or run_id)
    for candidate in (name, f"{name}~{run_id[:8]}", f"{name}~{run_id}"):
        folder = root / candidate
        try:
            folder.mkdir()
        except FileExistsError:
            if _owner(folder) != run_id and candidate != f"{name}~{run_id}":
                continue
        (folder / MARKER).write_text(run_id)
        _clear(folder)
        break
    for old in _folders_of(root, run_id):
        if old != folder:
            _clear(old)
            (old / MARKER).unlink(missing_ok=True)
            try:
                old.rmdir()
            except OSError:  # something else is in it: left there
                pass
    return folder


class TensorBoardTracker:
    """TensorBoard event files per run, named by its label: loss and lr every log_every steps; per-epoch loss, lr, images/s; final metrics; params as hparams; reconstructions."""

    def __init__(self, suite_dir: str, images: bool = True):
        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError(missing_extra("tracker 'tensorboard'", "TensorBoard", "tensorboard"))
        self.root = Path(suite_dir) / "tensorboard"
        self.images = images
        self._writer: Any = None
        self._params: dict[str, Any] | None = None  # set when the run started here (not probes added later)
        self._step = 0  # the last step a scalar was written at

    def _open(self, run_dir: Path, label: str | None = None) -> Any:
        """The run's writer: in a folder claimed for ``label`` (a run that starts), else the run's
        existing folder (probes added later), else one claimed for its recorded label."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            run_id = Path(run_dir).name
            existing = None if label is not None else next(_folders_of(self.root, run_id), None)
            if existing is None and label is None:
                label = str(_read_config(Path(run_dir)).get("label") or "")
            folder = existing or claim_folder(self.root, label or "", run_id)
            self._writer = SummaryWriter(log_dir=str(folder))
        return self._writer

    def run_started(self, run_dir: Path, config: dict[str, Any]) -> None:
        self._params = run_params(config)
        self._open(run_dir, str(config.get("label") or ""))

    def step_logged(self, run_dir: Path, step: int, values: dict[str, float]) -> None:
        writer = self._open(run_dir)
        self._step = int(step)
        for key in ("loss", "lr"):
            if key in values:
                writer.add_scalar(f"train/{key}", float(values[key]), self._step)

    def epoch_finished(self, run_dir: Path, row: dict[str, Any]) -> None:
        writer = self._open(run_dir)
        for key in ("loss", "lr", "images_per_second"):
            if key in row:
                writer.add_scalar(f"epoch/{key}", float(row[key]), int(row["epoch"]))
        writer.flush()

    def run_finished(self, run_dir: Path, record: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        writer = self._open(run_dir)
        metrics = {f"final/{key}": value for key, value in final_metrics(record).items()}
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, self._step)
        if self._params is not None:
            session = {**self._params, "status": str(record.get("status"))}
            for summary in hparams(session, metrics):  # experiment, session start, session end
                writer.file_writer.add_summary(summary)
            picture = RunFolder(run_dir).reconstructions
            if self.images and picture.exists():
                import numpy as np
                from PIL import Image

                with Image.open(picture) as image:
                    pixels = np.asarray(image.convert("RGB"))  # [H, W, 3] uint8
                writer.add_image("reconstructions", pixels, self._step, dataformats="HWC")
        writer.close()
        self._writer = None


def _read_config(run_dir: Path) -> dict[str, Any]:
    try:
        return RunFolder(run_dir).read_config()
    except (OSError, ValueError):
        return {}
