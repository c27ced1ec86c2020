"""The suite's progress on the console: a bar (runs in flight, done, failed) on a terminal, and
one line per run everywhere, whatever executor runs them. Without a terminal (a log file, nohup,
a SLURM job) there is no bar: each run's line ends with where the suite stands instead
(``[3/10, 0:41 elapsed, ~1:20 left]``), and every line is flushed as it is written, so that a
log shows the suite as it goes."""

from __future__ import annotations

import sys
import time
from typing import Any, Sequence

from tqdm.auto import tqdm

from mimbench.columns import MetricColumn
from mimbench.errors import cut
from mimbench.executors import Executor
from mimbench.jobs import Outcome, Task
from mimbench.specs import Job, Status


def outcome_text(record: dict[str, Any], declared: Sequence[MetricColumn]) -> str:
    """The status and the declared headline metrics of a record, for the run's console line (the
    compared ones: not the classical references, which the tables show)."""
    shown = [f"{c.name} {record[c.key]:.{c.digits}f}" for c in declared
             if c.headline and c.compared and isinstance(record.get(c.key), (int, float))]
    return "  ".join([record.get("status", Status.FAILED.value), *shown])


class SuiteProgress:
    """The suite's bar and its lines (see the module docstring)."""

    def __init__(self, name: str, labels: dict[str, str], executor: Executor):
        self.labels, self.executor = labels, executor
        self.width = max((len(label) for label in labels.values()), default=0)
        self.counts = {"done": 0, "failed": 0, "skipped": 0}
        self.bar = tqdm(total=len(labels), desc=f"suite {name}", unit="run", dynamic_ncols=True, disable=None)
        self.started = time.perf_counter()

    def write(self, line: str) -> None:
        self.bar.write(line, file=sys.stdout)
        sys.stdout.flush()  # a file is block-buffered: without this a log stays empty until the end

    def standing(self) -> str:
        """Where the suite stands, for a line written without a bar: ``  [3/10, 0:41 elapsed, ~1:20
        left]``; the estimate is the time per executed run so far (skipped runs cost nothing) times
        the runs left. Empty on a terminal, where the bar says it."""
        if not self.bar.disable:
            return ""
        counted, total = sum(self.counts.values()), len(self.labels)
        elapsed = time.perf_counter() - self.started
        executed = self.counts["done"] + self.counts["failed"]
        left = f", ~{clock(elapsed / executed * (total - counted))} left" if executed and counted < total else ""
        return f"  [{counted}/{total}, {clock(elapsed)} elapsed{left}]"

    def warn(self, text: str) -> None:
        """``warning: TEXT`` on stderr, one line cut to :data:`mimbench.errors.MAX_LINE` characters."""
        self.bar.write(f"warning: {cut(text)}", file=sys.stderr)

    def skipped(self, job: Job, note: str = "") -> None:
        self.counts["skipped"] += 1
        self.bar.update(1)
        self.write(f"{self.line_start(job)}  already finished, skipped" + (f"; {note}" if note else "")
                   + self.standing())

    def failed_before_start(self, job: Job, error: str) -> None:
        """A job that fails without being run (what it depends on did not finish)."""
        self.counts["failed"] += 1
        self.bar.update(1)
        self.write(f"{self.line_start(job)}        -  FAILED: {error}{self.standing()}")

    def finished(self, task: Task, outcome: Outcome, declared: Sequence[MetricColumn]) -> None:
        failed = outcome.status == Status.FAILED
        self.counts["failed" if failed else "done"] += 1
        self.bar.update(1)
        self.bar.set_postfix(in_flight=self.executor.in_flight(), done=self.counts["done"],
                             failed=self.counts["failed"], refresh=False)
        if task.probes_to_add:
            self.write(f"{self.line_start(task.job)}  {outcome.note}{self.standing()}")
            return
        seconds = outcome.record.get("wall_seconds")
        timing = f"{seconds:6.1f}s" if isinstance(seconds, (int, float)) else "      -"
        text = f"FAILED: {outcome.record.get('error', '')}" if failed else outcome_text(outcome.record, declared)
        note = f"  ({outcome.note})" if outcome.note and not failed else ""
        self.write(f"{self.line_start(task.job)}  {timing}  {text}{note}{self.standing()}")

    def line_start(self, job: Job) -> str:
        return f"{job.run_id}  {self.labels[job.run_id]:<{self.width}}"

    def close(self) -> None:
        self.bar.close()


def clock(seconds: float) -> str:
    """``h:mm:ss`` from one hour, ``m:ss`` below: ``clock(83.2) == "1:23"``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
