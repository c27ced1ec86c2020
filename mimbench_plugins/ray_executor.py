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
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator

from mimbench.plugin import ConfigError, Interval, Outcome, Task, first_line, missing_extra, one_line, run_task


def _execute(task: Task) -> Outcome:
    return run_task(task)


class RayExecutor:
    """Ray Core tasks: several runs at once on this machine's CPUs/GPUs, or on a Ray cluster."""

    in_process = False

    def __init__(self, address: str | None = None,
                 gpus_per_run: Annotated[float, Interval(ge=0, le=1024)] | None = None,
                 cpus_per_run: Annotated[float, Interval(gt=0, le=4096)] | None = None,
                 max_retries: Annotated[int, Interval(ge=0, le=100)] = 3,
                 connect_timeout_s: Annotated[float, Interval(gt=0, le=86_400)] = 60.0,
                 threads_per_run: int = 1):
        if "ray" not in sys.modules:
            # Ray's C++ failure signal handler, if Ray installs it in this process (it reads this
            # variable once, on import), takes SIGTERM: a stack dump and an abort (exit -6) instead of
            # mimbench's one line and exit 143, and ray.shutdown leaves SIGTERM at its default. The
            # processes Ray starts inherit the setting: a crash there is reported without a C++ trace.
            os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
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
            with _signals_held():
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
            return Outcome.failed(import_failure(_plain(str(exc))) or f"the Ray task raised {_plain(one_line(cause))}")
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
        """Stop the Ray instance this executor started (never one it found running), and every Ray
        process it started (agents ``ray.shutdown`` may not wait for), within 2 seconds."""
        if self._started_here:
            import ray

            started = ray_processes_below(os.getpid())
            self._started_here = False
            try:
                with _signals_held():
                    ray.shutdown()
            finally:
                stop_processes(started | ray_processes_below(os.getpid()))


@contextmanager
def _signals_held() -> Iterator[None]:
    """Run ``ray.init`` or ``ray.shutdown`` whole: a SIGTERM, SIGHUP or Ctrl-C that comes meanwhile
    is held and raised again once it returns, to this process's own handler (under ``mimbench run``:
    handled as Ctrl-C, runs cancelled, summary rewritten, this instance shut down). Interrupted
    half-way, Ray's start can leave agents running or crash the process; and ``ray.init`` would
    replace the SIGTERM handler with its own (``sys.exit``, or its node's clean-up and exit 1)."""
    import ray._private.utils as ray_utils

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)) if s}
    for s in previous:
        signal.signal(s, lambda signum, frame: held.append(signum))
    replace = getattr(ray_utils, "set_sigterm_handler", None)
    if replace is not None:  # how ray.init and its node set theirs (Ray 2.9 to 2.60 at least)
        ray_utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        if replace is not None:
            ray_utils.set_sigterm_handler = replace
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if held:
            signal.raise_signal(held[0])


def ray_processes_below(pid: int) -> set[int]:
    """The Ray processes (``ray::`` workers and agents, Ray's own binaries and scripts) below ``pid``
    now, read from /proc (an empty set without it)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    below, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - below
        below |= frontier
    return {p for p in below if _is_ray_process(p)}


def _is_ray_process(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return command.startswith("ray::") or f"{os.sep}ray{os.sep}" in command


def stop_processes(pids: set[int], grace_s: float = 2.0) -> None:
    """Give ``pids`` ``grace_s`` seconds to end on their own, then kill those still running."""
    deadline = time.monotonic() + grace_s
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _running(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


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


def import_failure(text: str) -> str | None:
    """Why a Ray worker could not import mimbench's task, from Ray's error text (which names the
    cause on its last ``...Error: ...`` line), with what to do; None for another error."""
    if "failed to import on the worker" not in text:
        return None
    causes = re.findall(r"^(\w+(?:Error|Exception): .*)$", text, flags=re.MULTILINE)
    cause = causes[-1].strip() if causes else "no cause given"
    return (f"a Ray worker could not import mimbench's task ({cause}): workers import mimbench and the "
            f"plugins from their own Python environment, with the driver's working folder ({os.getcwd()}) "
            f"first on their sys.path; install the same mimbench where the workers run, and start mimbench "
            f"from a folder that holds no other copy of it or of a plugin")


def _plain(text: str) -> str:
    """``text`` without terminal colour codes (Ray colours its task names)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
