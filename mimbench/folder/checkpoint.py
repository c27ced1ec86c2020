"""A run's mid-run checkpoint, ``checkpoint.pt``: the whole state of a pre-training, saved at
epoch ends, so that a run that is killed, preempted or requeued continues where it stopped, with
the numbers it would have had.

It holds what the training loop gives it (:meth:`mimbench.train._Loop.state`: the modules'
states, AdamW's and the lr schedule's, the step, the history so far, every random generator the
run draws from). It is written atomically (a kill while saving leaves the previous one), and
continued from only when its ``fingerprint`` (the run id and the code of its components) is the
run's own and its ``layout`` is the one this mimbench writes. torch is imported only here, when a
checkpoint is saved or read.

A results folder is data, made to be copied and shared: a checkpoint is read with
``torch.load(weights_only=True)``, which rebuilds tensors and plain containers (dicts, lists,
tuples, strings, numbers) and nothing else, so a planted pickle in ``checkpoint.pt`` runs no code;
it is refused, set aside (:data:`SET_ASIDE_FILE`) and the run starts over.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from mimbench.errors import one_line
from mimbench.folder.files import write_atomic
from mimbench.folder.run import CHECKPOINT_FILE
from mimbench.schema import TrainConfig, checkpoint_interval

if TYPE_CHECKING:
    import torch

#: The layout of the state a checkpoint holds (what :meth:`mimbench.train._Loop.state` gives):
#: raise it whenever that changes, so that a checkpoint written by another mimbench (an update
#: between a kill and the resume) is set aside instead of applied. 2: tensors and plain data only.
LAYOUT = 2
#: Where a checkpoint that is not continued from is moved (in the run folder, replacing an earlier one).
SET_ASIDE_FILE = "checkpoint.set-aside.pt"


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
    # called before each save; raises to refuse it (the run folder's lock check, RunFolder.writable)
    before_save: Callable[[], None] | None = None

    @classmethod
    def for_run(cls, folder: str | Path, train: TrainConfig, fingerprint: dict[str, Any],
                before_save: Callable[[], None] | None = None) -> "Checkpointing":
        epochs, seconds = checkpoint_interval(train.checkpoint_every)
        return cls(str(Path(folder) / CHECKPOINT_FILE), epochs, seconds, fingerprint, before_save=before_save)

    def due(self, epochs_done: int) -> bool:
        """Whether to save after ``epochs_done`` epochs (counted from the start of the run)."""
        if self.every_epochs is not None:
            return epochs_done % self.every_epochs == 0
        return self.every_seconds is not None and time.monotonic() - self.last_save >= self.every_seconds

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (tensors anywhere; saved as they are) with the fingerprint, atomically."""
        import torch

        if self.before_save is not None:
            self.before_save()
        buffer = io.BytesIO()
        torch.save({"fingerprint": self.fingerprint, "layout": LAYOUT, **state}, buffer)
        write_atomic(Path(self.path), buffer.getvalue())
        self.last_save = time.monotonic()

    def load(self) -> tuple[dict[str, Any] | None, str]:
        """The saved state (tensors on the CPU) and ``""``; or None and why not, ``""`` when there
        is no checkpoint. A checkpoint that holds more than tensors and plain data (not a file
        mimbench wrote), one of other code, another run or another layout, or one that cannot be
        read, is not continued from: the caller sets it aside (:meth:`set_aside`) and starts over."""
        import pickle

        import torch

        path = Path(self.path)
        if not path.is_file():
            return None, ""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:  # weights_only refused what is not tensors and plain data
            return None, (f"its checkpoint could not be read as tensors and plain data, so mimbench did not write "
                          f"it and did not load it ({_refusal(exc)})")
        except Exception as exc:
            return None, f"its checkpoint could not be read ({one_line(exc)})"
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            return None, "its checkpoint was made by other code or another configuration"
        if state.get("layout") != LAYOUT:
            return None, (f"its checkpoint was written by another version of mimbench (layout "
                          f"{state.get('layout', 1)}, this one reads {LAYOUT})")
        return state, ""

    def set_aside(self) -> str:
        """Move a checkpoint that is not continued from to :data:`SET_ASIDE_FILE` next to it (so that
        it is neither read again nor lost); returns that file's name, or ``""`` when there was none."""
        path = Path(self.path)
        if not path.is_file() or path.is_symlink():
            return ""
        path.replace(path.with_name(SET_ASIDE_FILE))
        return SET_ASIDE_FILE


def _refusal(exc: Exception) -> str:
    """What torch's ``weights_only`` unpickler refused, without its general advice: ``Trying to load
    unsupported GLOBAL posix.system whose module posix is blocked.``"""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith(("Weights only load failed", "Check the documentation"))]
    return " ".join(said)[:160] or one_line(exc)[:160]


def implausible(state: dict[str, Any], total_steps: int, steps_per_epoch: int) -> str:
    """Why ``state`` cannot belong to a run of ``total_steps`` steps of ``steps_per_epoch`` (other
    steps planned; a step, or a history of epochs, that do not fit them), or ``""``: a checkpoint
    saved at the end of epoch k holds k rows of history and the steps of those k epochs."""
    if (state.get("total_steps"), state.get("steps_per_epoch")) != (total_steps, steps_per_epoch):
        return "its checkpoint planned other steps"
    step, history = state.get("step"), state.get("history")
    epochs = len(history) if isinstance(history, list) else -1
    if (not isinstance(step, int) or isinstance(step, bool) or not 0 < step <= total_steps
            or epochs != -(-step // steps_per_epoch)
            or any(not isinstance(row, dict) or row.get("epoch") != k for k, row in enumerate(history, 1))):
        return (f"its checkpoint's step ({str(step)[:20]}) and history ({epochs} epochs) cannot belong to this "
                f"run of {total_steps} steps, {steps_per_epoch} per epoch")
    return ""


def random_states(generator: "torch.Generator") -> dict:
    """Every random generator a run may draw from: ``generator`` (the run's: shuffling,
    augmentation, masks), torch's global one (and CUDA's, when initialised), Python's and NumPy's."""
    import random

    import numpy as np
    import torch

    name, keys, position, has_gauss, cached = np.random.get_state()
    # NumPy's key as a tensor, so that a checkpoint holds tensors and plain data only (weights_only)
    numpy_state = (str(name), torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached))
    states = {"run": generator.get_state(), "torch": torch.get_rng_state(), "python": random.getstate(),
              "numpy": numpy_state}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict, generator: "torch.Generator") -> None:
    """Put back what :func:`random_states` saved."""
    import random

    import numpy as np
    import torch

    generator.set_state(states["run"])
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
