"""The ``tensorboard`` tracker: TensorBoard event files in each run's folder.

``tensorboard --logdir OUT/<suite>/runs`` shows the whole suite, one TensorBoard run per
mimbench run (named by its run id): scalars ``train/loss``, ``train/lr`` and
``train/images_per_second`` per epoch, ``final/<metric>`` for every number of the run's summary
row, the run's params in the HParams dashboard (with its ``label`` and ``status``) and the
``reconstructions`` image. Event files are logs, appended as the run goes, not written atomically;
a run executed again starts from an empty folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from mimbench.plugin import ConfigError, RunFolder, final_metrics, missing_extra, run_params


class TensorBoardTracker:
    """TensorBoard event files per run: per-epoch loss, lr, images/s; final metrics; params as hparams; reconstructions."""

    def __init__(self, images: bool = True):
        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError(missing_extra("tracker 'tensorboard'", "TensorBoard", "tensorboard"))
        self.images = images
        self._writer: Any = None
        self._params: dict[str, Any] | None = None  # set when the run started here (not probes added later)
        self._step = 0

    def _open(self, run_dir: Path) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(run_dir))
        return self._writer

    def run_started(self, run_dir: Path, config: dict[str, Any]) -> None:
        self._params = run_params(config)
        self._open(run_dir)

    def epoch_finished(self, run_dir: Path, row: dict[str, Any]) -> None:
        writer = self._open(run_dir)
        self._step = int(row["epoch"])
        for key in ("loss", "lr", "images_per_second"):
            if key in row:
                writer.add_scalar(f"train/{key}", float(row[key]), self._step)
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
