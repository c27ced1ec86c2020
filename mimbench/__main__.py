"""The ``mimbench`` console script and ``python -m mimbench``.

SIGTERM and SIGHUP are caught from this module's first lines, before the CLI and its imports
load: one that comes while they load (or a Ctrl-C) stops mimbench with one line and the signal's
exit code (143, 129, 130), not the interpreter's silent death or a traceback;
:func:`mimbench.cli.main` takes over from there.
"""

import signal
import sys

_CAUGHT = {signal.SIGTERM: ("SIGTERM", 143), **({signal.SIGHUP: ("SIGHUP", 129)} if hasattr(signal, "SIGHUP") else {})}


class _StoppedWhileLoading(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop_loading(signum, frame):
    _RECEIVED.append(signum)
    raise _StoppedWhileLoading(signum)


#: The signals received while loading: a handler's exception raised inside a callback whose errors
#: Python ignores (an import lock's weakref callback) is lost, so the signal is also kept here.
_RECEIVED: list[int] = []


def _quiet_unraisable(unraisable) -> None:
    """While loading: a stop lost inside such a callback is kept in ``_RECEIVED``, not printed."""
    if not isinstance(unraisable.exc_value, _StoppedWhileLoading):
        sys.__unraisablehook__(unraisable)


def main() -> None:
    for signum in _CAUGHT:
        signal.signal(signum, _stop_loading)
    unraisablehook, sys.unraisablehook = sys.unraisablehook, _quiet_unraisable
    try:
        from mimbench.cli import main as cli_main
        if _RECEIVED:
            raise _StoppedWhileLoading(_RECEIVED[0])
    except KeyboardInterrupt as stopped:  # Ctrl-C too (Python's own KeyboardInterrupt)
        name, code = _CAUGHT[stopped.signum] if isinstance(stopped, _StoppedWhileLoading) else ("Ctrl-C", 130)
        sys.stderr.write(f"interrupted ({name}): stopped while starting, before anything was done\n")
        sys.exit(code)
    finally:
        sys.unraisablehook = unraisablehook
    cli_main()


if __name__ == "__main__":
    main()
