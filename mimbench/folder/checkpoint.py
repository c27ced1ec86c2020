"""A run's mid-run checkpoint, ``checkpoint.pt``: the whole state of a pre-training, saved at
epoch ends, so that a run that is killed, preempted or requeued continues where it stopped, with
the numbers it would have had.

It holds what the training loop gives it (:meth:`mimbench.train._Loop.state`: the modules'
states, AdamW's and the lr schedule's, the step, the history so far, every random generator the
run draws from). It is written atomically (a kill while saving leaves the previous one), and
continued from only when its ``fingerprint`` (the run id and the code of its components) is the
run's own. torch is imported only here, when a checkpoint is saved or read.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimbench.errors import one_line
from mimbench.folder.files import write_atomic
from mimbench.folder.run import CHECKPOINT_FILE
from mimbench.schema import TrainConfig, checkpoint_interval


@dataclass
class Checkpointing:
    """Where and how often one run saves its state (``train.checkpoint_every``: every
    ``every_epochs`` epochs, or at the first epoch end ``every_seconds`` after the last save;
    neither: never), and what a checkpoint must say about itself to be continued from."""

    path: str
    every_epochs: int | None
    every_seconds: float | None
    fingerprint: dict[str, Any]
    last_save: float = field(default_factory=time.monotonic)

    @classmethod
    def for_run(cls, folder: str | Path, train: TrainConfig, fingerprint: dict[str, Any]) -> "Checkpointing":
        epochs, seconds = checkpoint_interval(train.checkpoint_every)
        return cls(str(Path(folder) / CHECKPOINT_FILE), epochs, seconds, fingerprint)

    def due(self, epochs_done: int) -> bool:
        """Whether to save after ``epochs_done`` epochs (counted from the start of the run)."""
        if self.every_epochs is not None:
            return epochs_done % self.every_epochs == 0
        return self.every_seconds is not None and time.monotonic() - self.last_save >= self.every_seconds

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (tensors anywhere; saved as they are) with the fingerprint, atomically."""
        import torch

        buffer = io.BytesIO()
        torch.save({"fingerprint": self.fingerprint, **state}, buffer)
        write_atomic(Path(self.path), buffer.getvalue())
        self.last_save = time.monotonic()

    def load(self) -> tuple[dict[str, Any] | None, str]:
        """The saved state (tensors on the CPU) and ``""``; or None and why not, ``""`` when there
        is no checkpoint. A checkpoint of other code or another run, or one that cannot be read,
        is not continued from (the run starts over and overwrites it)."""
        import torch

        path = Path(self.path)
        if not path.is_file():
            return None, ""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=False)  # our own file: RNG states are not tensors
        except Exception as exc:
            return None, f"its checkpoint could not be read ({one_line(exc)}); starting over"
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            return None, "its checkpoint was made by other code or another configuration; starting over"
        return state, ""
