"""mimbench: a plugin-based benchmarking harness for masked image modeling.

``mimbench.run``, ``mimbench.load``, ``mimbench.table``, ``mimbench.comparisons`` and ``mimbench.plot`` are the Python API
(:mod:`mimbench.api`), imported on first use so that ``import mimbench`` stays light.
"""

from typing import Any

import pluggy

__version__ = "0.1.0"

#: Decorator for plugin hook implementations: ``@mimbench.hookimpl``.
hookimpl = pluggy.HookimplMarker("mimbench")

#: The Python API, from :mod:`mimbench.api`.
API = ("run", "load", "table", "comparisons", "plot")

__all__ = ["hookimpl", "__version__", *API]


def __getattr__(name: str) -> Any:
    if name in API:
        from mimbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'mimbench' has no attribute {name!r}")
