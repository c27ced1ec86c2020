"""The built-in executors, registered like any plugin: ``local``, ``ray`` and ``submitit``.

``ray`` and ``submitit`` import their engine only when built, so that mimbench works without
them; naming one whose extra is missing exits 2 with the pip command to run.
"""

from __future__ import annotations

from mimbench.plugin import hookimpl
from mimbench_plugins.local_executor import LocalExecutor
from mimbench_plugins.ray_executor import RayExecutor
from mimbench_plugins.submitit_executor import SubmititExecutor


@hookimpl
def mimbench_register_executors(register) -> None:
    register("local", LocalExecutor)
    register("ray", RayExecutor)
    register("submitit", SubmititExecutor)
