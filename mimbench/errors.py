"""The kinds of error the core tells apart, and how each becomes one short line.

- :class:`ConfigError`: bad input (a suite, a parameter, a plugin, a damaged input file); exit 2.
- an ``OSError`` that reaches the command line: the machine refused (no space left, no
  permission); exit 1, described by :func:`os_error_line`.
- :class:`ContractError`: a component broke its contract at run time; fails that run only.
- :class:`Terminated`: SIGTERM during ``mimbench run``, a ``KeyboardInterrupt`` (exit 143).
"""

from __future__ import annotations

import errno
import reprlib

#: The longest error line the command line prints (the offending value is cut well before).
MAX_LINE = 400
#: The longest a value quoted in an error may be.
MAX_VALUE = 60


class ConfigError(Exception):
    """Bad usage: a suite, a parameter or a plugin is wrong. One line; exit code 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread while ``mimbench run`` runs: handled as Ctrl-C is (the
    runs in flight stopped, the summary rewritten), but the command exits 143, not 130."""


class ContractError(Exception):
    """A component broke its contract at run time (e.g. a mask of the wrong shape).

    It fails the run it happened in; the rest of the suite goes on.
    """


def missing_extra(what: str, module: str, extra: str) -> str:
    """The one-line error for a component (``what``, e.g. ``"tracker 'mlflow'"``) whose optional
    dependency ``module`` is not installed, with the pip command that installs ``extra``."""
    return (f"{what} needs {module}, which is not installed: pip install 'mimbench[{extra}]' "
            f"(from a clone: pip install -e '.[{extra}]')")


def _value_repr() -> reprlib.Repr:
    shown = reprlib.Repr()
    # Bounded at every level: a YAML alias bomb or a huge string is never expanded whole.
    shown.maxlevel, shown.maxlist, shown.maxtuple, shown.maxdict, shown.maxset = 3, 4, 4, 4, 4
    shown.maxstring, shown.maxlong, shown.maxother = MAX_VALUE, 30, MAX_VALUE
    return shown


_REPR = _value_repr()


def shown(value: object, limit: int = MAX_VALUE) -> str:
    """``repr(value)`` for an error message: bounded in time and length, on one line."""
    return cut(_REPR.repr(value), limit)


def cut(text: str, limit: int = MAX_LINE) -> str:
    """``text`` on one line (line breaks become spaces), cut to ``limit`` characters with '...'."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


#: What to do about an operating-system failure, by errno.
_OS_HINTS = {
    errno.ENOSPC: "free some space and run the same command again (finished runs are kept)",
    errno.EDQUOT: "free some space and run the same command again (finished runs are kept)",
    errno.EACCES: "check its permissions, or choose another --out",
    errno.EPERM: "check its permissions, or choose another --out",
    errno.EROFS: "the file system is read-only: choose another --out",
}


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system failure (exit code 1): the path, the reason, what to do."""
    reason = exc.strerror or type(exc).__name__
    where = f"{exc.filename}: " if exc.filename else ""
    if exc.filename2:
        where = f"{exc.filename} -> {exc.filename2}: "
    hint = _OS_HINTS.get(exc.errno)
    return cut(f"{where}{reason}" + (f"; {hint}" if hint else ""))


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type's name when it has none."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (the type alone for an empty message): how an error
    that is not mimbench's own is named in a warning, a failed run's record or a summary."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__
