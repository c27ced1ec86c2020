"""The ``ray`` executor: each run a Ray Core task, on this machine's CPUs and GPUs or on a cluster.

Not Ray Tune: mimbench's run-id store already resumes. Ray places each task where its
``num_cpus``/``num_gpus`` fit (a fractional ``gpus_per_run`` packs several small runs on one
GPU) and retries a task whose worker process or node died (``max_retries``); an exception in
a run is caught by the task itself and fails only that run (``error.txt``), never retried.

Which Ray: without ``address``, always a new instance on this machine, stopped when the suite
ends (never a cluster found through Ray's address file or ``$RAY_ADDRESS``, which may be stale
and would hang); ``address: auto`` joins the cluster ``$RAY_ADDRESS`` names, else the one in Ray's
address file, else one running on this machine; an explicit ``host:port`` (or ``ray://host:port``)
that one. A cluster that does not answer within
``connect_timeout_s`` ends the suite with one line (exit 1), releasing its folder.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from mimbench.plugin import ConfigError, Outcome, Task, first_line, missing_extra, one_line, run_task


def _execute(task: Task) -> Outcome:
    return run_task(task)


class RayExecutor:
    """Ray Core tasks: several runs at once on this machine's CPUs/GPUs, or on a Ray cluster."""

    in_process = False

    def __init__(self, address: str | None = None, gpus_per_run: float | None = None,
                 cpus_per_run: float | None = None, max_retries: int = 3, connect_timeout_s: float = 60.0,
                 threads_per_run: int = 1):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError(missing_extra("executor 'ray'", "Ray", "ray")) from None
        if gpus_per_run is not None and gpus_per_run < 0:
            raise ValueError(f"gpus_per_run must be >= 0 (fractions pack runs on one GPU), got {gpus_per_run}")
        # execution.threads_per_run: each run's torch threads; its CPUs unless cpus_per_run says otherwise
        cpus_per_run = threads_per_run if cpus_per_run is None else cpus_per_run
        if cpus_per_run <= 0:
            raise ValueError(f"cpus_per_run must be > 0, got {cpus_per_run}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if not connect_timeout_s > 0:
            raise ValueError(f"connect_timeout_s must be > 0, got {connect_timeout_s}")
        if address is not None and not address.strip():
            raise ValueError("address must be auto, host:port or ray://host:port (leave it out for a new instance)")
        self.connect_timeout_s = connect_timeout_s
        self.address, self.gpus_per_run, self.cpus_per_run = address, gpus_per_run, cpus_per_run
        self.max_retries = max_retries
        self.threads = threads_per_run
        self._pending: dict = {}
        self._started_here = False

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, Outcome]]:
        import ray

        if not tasks:
            return
        if not ray.is_initialized():
            address = "local"  # a new instance, whatever Ray's address file or $RAY_ADDRESS say
            if self.address is not None:
                address = wait_for_cluster(self.address, self.connect_timeout_s)
            self._started_here = True  # before init: an interrupted start is shut down too (close)
            with _sigterm_kept():
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING, configure_logging=False)
        try:
            gpus = self.gpus_per_run
            if gpus is None:
                gpus = 1 if ray.cluster_resources().get("GPU", 0) else 0
            remote = ray.remote(_execute).options(num_cpus=self.cpus_per_run, num_gpus=gpus,
                                                  max_retries=self.max_retries, retry_exceptions=False)
            self._pending = {remote.remote(task): task for task in tasks}
            while self._pending:
                ready, _ = ray.wait(list(self._pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    task = self._pending.pop(ref)
                    yield task, self._outcome(ray, ref)
        except KeyboardInterrupt:
            self.cancel()
            raise
        finally:
            self._pending = {}

    def _outcome(self, ray, ref) -> Outcome:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the task itself raised (never retried): say what
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
            return Outcome.failed(f"the Ray task raised {_plain(one_line(cause))}")
        except ray.exceptions.RayError as exc:  # the worker or its node died, after every retry
            return Outcome.failed(f"{type(exc).__name__} (after {self.max_retries} retries): {_plain(first_line(exc))}")

    def in_flight(self) -> int:
        return len(self._pending)

    def cancel(self) -> None:
        import ray

        if ray.is_initialized():
            for ref in list(self._pending):
                ray.cancel(ref, force=True)

    def close(self) -> None:
        """Stop the Ray instance this executor started (never one it found running)."""
        if self._started_here:
            import ray

            ray.shutdown()
            self._started_here = False


@contextmanager
def _sigterm_kept() -> Iterator[None]:
    """Keep this process's SIGTERM handler across ``ray.init``, which replaces it with its own
    (``sys.exit``, then a C handler that aborts): under ``mimbench run`` SIGTERM is handled as Ctrl-C
    (runs cancelled, summary rewritten, this instance shut down)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def wait_for_cluster(address: str, timeout_s: float) -> str:
    """Wait until the Ray cluster at ``address`` accepts a connection, for at most ``timeout_s``
    seconds, and return the address to join; else raise ``ConnectionError`` with one line (exit 1:
    the machine, not the suite, is at fault). ``auto`` is the cluster ``$RAY_ADDRESS`` names, else
    the one Ray's address file names (``ray start`` writes it), else one Ray finds running here."""
    target = resolve_address(address)
    host, _, port = target.split("://", 1)[-1].rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=max(0.1, min(5.0, deadline - time.monotonic()))):
                return target
        except OSError:
            if time.monotonic() >= deadline:
                break
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    shown = target if target == address else f"{address!r} ({target})"
    raise ConnectionError(errno.EHOSTUNREACH, f"no Ray cluster answered at {shown} within {timeout_s:g} s "
                                              f"(execution.connect_timeout_s); is it running? Leave "
                                              f"execution.address out to start a new instance on this machine")


def resolve_address(address: str) -> str:
    """``host:port`` (or ``ray://host:port``) as given; ``auto``: ``$RAY_ADDRESS``, else Ray's address
    file, else a Ray instance running on this machine (Ray's own search); ``ConnectionError`` when
    there is none."""
    if address != "auto":
        return address
    from ray._private.services import find_gcs_addresses
    from ray._private.utils import read_ray_address

    found = os.environ.get("RAY_ADDRESS") or read_ray_address() or next(iter(sorted(find_gcs_addresses())), None)
    if not found or found == "auto":
        raise ConnectionError(errno.EHOSTUNREACH, "execution.address 'auto': no running Ray cluster was found "
                                                  "(leave address out to start a new instance on this machine)")
    return found


def _plain(text: str) -> str:
    """``text`` without terminal colour codes (Ray colours its task names)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
