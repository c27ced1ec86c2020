"""One driver per suite folder: an advisory lock on ``<suite>/.lock`` that names its holder.

The lock is ``flock`` on an open file, so the kernel releases it when the holder dies, even by
``kill -9``: the next driver takes it over with no clean-up. The file's content (pid, host,
start time) is only there to name the holder in the error a second driver gets.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from mimbench.errors import ConfigError

LOCK_FILE = ".lock"


class SuiteLock:
    """``with SuiteLock(suite_dir):`` holds the suite folder (created if needed) for this process;
    a second holder gets a :class:`ConfigError` naming the first."""

    def __init__(self, suite_dir: Path):
        self.path = Path(suite_dir) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> "SuiteLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ConfigError(f"{self.path.parent} is in use by another mimbench run ({holder}); wait for it to "
                              f"finish or stop it, or use another --out") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        except OSError as exc:  # a full disk: say which file could not be written
            os.close(fd)
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
        self._fd = fd
        return self

    def __exit__(self, *exc_info) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # releases the flock
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode())
        return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
    except (ValueError, KeyError, TypeError, OSError):
        return "holder unknown"
