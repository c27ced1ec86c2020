"""The version of mimbench (one place; ``mimbench.__version__`` is this)."""

__version__ = "0.1.0"
