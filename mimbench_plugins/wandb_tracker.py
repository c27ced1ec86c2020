"""The ``wandb`` tracker: one Weights & Biases run per mimbench run, grouped by suite.

Each W&B run is named by the run's label (the one the console prints), in the group named after
the suite, with the run's params as its config (``run_id``, ``encoder``, ``encoder.dim``,
``train.lr``...), job type ``pretrain`` or ``baseline``. It logs ``train/loss`` and ``train/lr``
every ``train.log_every`` steps (W&B's step = the global optimizer step; the loss is the mean
over the steps since the previous point), ``epoch/loss``, ``epoch/lr`` and
``epoch/images_per_second`` at each epoch's end (charted against ``epoch``), and every number of
the run's summary row in its summary (``linear_acc``, ``recon_psnr``..., and ``status``); a
failed run exits with code 1.

``mode`` is W&B's (``online``, ``offline``, ``disabled``; unset: ``$WANDB_MODE``, else online,
which needs ``wandb login`` where the runs execute); files go to ``dir``, by default the suite
folder (``OUT/<suite>/wandb/``); offline runs upload later with ``wandb sync``. W&B's own console
lines are silenced: the console stays mimbench's. A run executed again is a new W&B run (its
config's ``run_id`` says which mimbench run it is); probes added to a run finished earlier go to
its W&B run (resumed, by the id kept in the run folder's ``wandb-run-id``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

from mimbench.plugin import ConfigError, RunFolder, final_metrics, missing_extra, run_params

#: The file in a run's folder that keeps the id of its W&B run, for probes added later.
RUN_ID_FILE = "wandb-run-id"


class WandbTracker:
    """One W&B run per mimbench run (named by its label, grouped by suite): config, loss every log_every steps, per-epoch metrics, final metrics in the summary."""

    def __init__(self, suite_dir: str, project: str = "mimbench", entity: str | None = None,
                 mode: Literal["online", "offline", "disabled"] | None = None, dir: str | None = None):
        if importlib.util.find_spec("wandb") is None:
            raise ConfigError(missing_extra("tracker 'wandb'", "wandb", "wandb"))
        if not project.strip():
            raise ValueError("project must not be empty")
        self.suite = Path(suite_dir).name
        self.project, self.entity, self.mode = project, entity, mode
        self.dir = Path(dir) if dir is not None else Path(suite_dir)
        self._run: Any = None
        self._point = 0  # the step of the last loss point
        self._epoch_step = 0  # the W&B step the last epoch's row went to

    def _init(self, run_dir: Path, config: dict[str, Any], resume_id: str | None = None) -> Any:
        import wandb

        self.dir.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=self.project, entity=self.entity, mode=self.mode, dir=str(self.dir),
            name=str(config.get("label") or run_dir.name), group=self.suite,
            job_type="baseline" if config.get("baseline") else "pretrain",
            config=run_params(config) if resume_id is None else None,
            id=resume_id, resume="allow" if resume_id else None, reinit="create_new",
            settings=wandb.Settings(silent=True, console="off"))
        run.define_metric("epoch")
        run.define_metric("epoch/*", step_metric="epoch")
        return run

    def run_started(self, run_dir: Path, config: dict[str, Any]) -> None:
        self._run = self._init(Path(run_dir), config)
        (Path(run_dir) / RUN_ID_FILE).write_text(self._run.id)

    def step_logged(self, run_dir: Path, step: int, values: dict[str, float]) -> None:
        if self._run is None:
            return
        self._point = int(step)
        self._run.log({f"train/{key}": float(values[key]) for key in ("loss", "lr") if key in values},
                      step=self._point)

    def epoch_finished(self, run_dir: Path, row: dict[str, Any]) -> None:
        if self._run is None:
            return
        # The row does not say at which step its epoch ended; this W&B step is never past it (each
        # epoch has a step, a loss point is at most the epoch's last) and never before the last
        # point's: W&B's steps only increase, no row is overwritten, the next point comes after.
        self._epoch_step = max(self._point, self._epoch_step + 1)
        metrics = {f"epoch/{key}": float(row[key]) for key in ("loss", "lr", "images_per_second") if key in row}
        self._run.log({**metrics, "epoch": int(row["epoch"])}, step=self._epoch_step)

    def run_finished(self, run_dir: Path, record: dict[str, Any]) -> None:
        run_dir = Path(run_dir)
        if self._run is None:  # probes added to a run finished earlier: its W&B run, resumed
            earlier = run_dir / RUN_ID_FILE
            resume_id = earlier.read_text().strip() if earlier.is_file() else None
            self._run = self._init(run_dir, _read_config(run_dir), resume_id or None)
        status = str(record.get("status"))
        self._run.summary.update({**final_metrics(record), "status": status})
        self._run.finish(exit_code=1 if status == "failed" else 0)
        self._run = None


def _read_config(run_dir: Path) -> dict[str, Any]:
    try:
        return RunFolder(run_dir).read_config()
    except (OSError, ValueError):
        return {}
