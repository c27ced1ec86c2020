"""mimbench: a plugin-based benchmarking harness for masked image modeling.

Two front doors, one per audience:

- users: ``mimbench.run``, ``mimbench.load``, ``mimbench.table``, ``mimbench.comparisons``,
  ``mimbench.plot`` and ``mimbench.load_encoder`` (:mod:`mimbench.api`), imported on first use so
  that ``import mimbench`` stays light;
- plugin authors: :mod:`mimbench.plugin` (``hookimpl``, the contracts and the helpers a component may use).
"""

from typing import Any

from mimbench.version import __version__

#: The Python API, from :mod:`mimbench.api`.
API = ("run", "load", "table", "comparisons", "plot", "load_encoder")

__all__ = ["__version__", *API]


def __getattr__(name: str) -> Any:
    if name in API:
        from mimbench import api

        return getattr(api, name)
    if name == "hookimpl":  # the spelling of plugins written before mimbench.plugin existed
        from mimbench.hookspecs import hookimpl

        return hookimpl
    raise AttributeError(f"module 'mimbench' has no attribute {name!r}")
