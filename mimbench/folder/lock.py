"""One driver per suite folder: an advisory lock on ``<suite>/.lock`` that names its holder.

The lock is ``flock`` on an open file, so the kernel releases it when the holder dies, even by
``kill -9``: the next driver takes it over with no clean-up. The file's content (pid, host,
start time) names the holder in the error a second driver gets; its ``token``, random for each
holding, travels with every task (:class:`LockToken`), and a worker checks it before it writes:
a worker whose driver died (its lock released) or was replaced (another token) stops without
writing, so a new driver never shares a run folder with an orphaned worker.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from mimbench.errors import ConfigError

LOCK_FILE = ".lock"


class SuiteLock:
    """``with SuiteLock(suite_dir):`` holds the suite folder (created if needed) for this process;
    a second holder gets a :class:`ConfigError` naming the first."""

    def __init__(self, suite_dir: Path):
        self.path = Path(suite_dir) / LOCK_FILE
        self._fd: int | None = None
        self.token = ""  # random for each holding, set once the lock is taken

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
        token = uuid.uuid4().hex
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "token": token,
                                      "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        except OSError as exc:  # a full disk: say which file could not be written
            os.close(fd)
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
        self._fd, self.token = fd, token
        return self

    def __exit__(self, *exc_info) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # releases the flock
            self._fd = None


def _read_holder(fd: int) -> str:
    holder = _holder(fd)
    try:
        return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
    except KeyError:
        return "holder unknown"


class LockLost(RuntimeError):
    """The driver that sent this task no longer holds the suite folder: write nothing more."""


@dataclass(frozen=True)
class LockToken:
    """The token of a driver's lock on a suite folder, as its tasks carry it: :meth:`check` before writing."""

    suite_dir: str
    token: str

    def check(self) -> None:
        """Raise :class:`LockLost` unless the lock is held (by someone) and names this token."""
        path = Path(self.suite_dir) / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            raise LockLost(f"{path} is gone: the suite's driver no longer holds the folder") from None
        try:
            try:  # taken only when nobody holds it: the driver died (a kill -9 releases its flock)
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                held = True
            else:
                held = False
                fcntl.flock(fd, fcntl.LOCK_UN)
            holder = _holder(fd) if held else {}
        finally:
            os.close(fd)
        if not held or holder.get("token") != self.token:
            # held with an empty file: the driver is letting go (it empties the file, then releases)
            stopped = not held or not holder
            raise LockLost(f"the driver that started this run no longer holds {path.parent} "
                            f"({'it stopped' if stopped else 'another driver took it'}): stopped without writing")


def _holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode())
    except (ValueError, OSError):
        return {}
    return holder if isinstance(holder, dict) else {}
