"""mimbench: a plugin-based benchmarking harness for masked image modeling."""

import pluggy

__version__ = "0.1.0"

#: Decorator for plugin hook implementations: ``@mimbench.hookimpl``.
hookimpl = pluggy.HookimplMarker("mimbench")

__all__ = ["hookimpl", "__version__"]
