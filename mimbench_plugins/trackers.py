"""The built-in experiment trackers, registered like any plugin: ``tensorboard``, ``mlflow`` and ``wandb``.

Each imports its library only when it first logs, so that mimbench works without them; naming
one whose extra is missing exits 2 with the pip command to run.
"""

from __future__ import annotations

from mimbench.plugin import hookimpl
from mimbench_plugins.mlflow_tracker import MLflowTracker
from mimbench_plugins.tensorboard_tracker import TensorBoardTracker
from mimbench_plugins.wandb_tracker import WandbTracker


@hookimpl
def mimbench_register_trackers(register) -> None:
    register("tensorboard", TensorBoardTracker)
    register("mlflow", MLflowTracker)
    register("wandb", WandbTracker)
