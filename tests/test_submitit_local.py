"""The submitit executor without SLURM: local tasks at most ``max_parallel`` at a time (a default
that fits the machine), no literal ``%j`` folder, and ``cluster: slurm`` where there is no SLURM
refused in one line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers import run_cli, write_suite_file

pytest.importorskip("submitit", reason="the slurm extra is not installed (pip install -e '.[slurm]')")

from mimbench_plugins.submitit_executor import local_parallelism  # noqa: E402

SUITE = """
name: tiny
dataset: {name: shapes, params: {num_images: 64}}
image_size: 16
seeds: [0]
train: {epochs: 1, batch_size: 32, warmup_epochs: 0}
eval: {batch_size: 32, probes: [], baselines: []}
grid:
  encoder: [{name: cnn, params: {hidden_dim: 4}}]
  decoder: [linear]
  masker: [{name: stamped, params: {log: LOG}}, {name: stamped, params: {log: LOG, ratio: 0.5}}]
  loss: [l1]
"""

# a pixel masker that appends "<pid> <time>" to a file at each call: each local task is its own
# process, so the spans of the pids show which tasks ran at the same time
STAMPED = '''
import os
import time

import torch
from mimbench.plugin import hookimpl


class Stamped:
    def __init__(self, log: str, ratio: float = 0.6):
        self.log, self.ratio = log, ratio

    def __call__(self, images, generator=None):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {time.time()}\\n")
        b, _, h, w = images.shape
        return torch.rand(b, h, w, generator=generator, device=images.device) < self.ratio


@hookimpl
def mimbench_register_maskers(register):
    register("stamped", Stamped)
'''


PLAIN = SUITE.replace("{name: stamped, params: {log: LOG}}, {name: stamped, params: {log: LOG, ratio: 0.5}}", "pixel")


def spans(log: Path) -> list[tuple[float, float]]:
    """The first and last call of each worker process (the driver, this process, also calls the
    masker once when it checks the suite)."""
    seen: dict[str, list[float]] = {}
    for line in log.read_text().splitlines():
        pid, when = line.split()
        if int(pid) != os.getpid():
            seen.setdefault(pid, []).append(float(when))
    return sorted((min(times), max(times)) for times in seen.values())


def test_the_default_parallelism_fits_the_cpus_over_each_runs_threads():
    cpus = len(os.sched_getaffinity(0))
    assert local_parallelism(None, 1) == cpus
    assert local_parallelism(None, cpus) == 1
    assert local_parallelism(None, 10 * cpus) == 1  # at least one
    assert local_parallelism(None, None) == cpus
    assert local_parallelism(3, 64) == 3  # given: kept


def test_local_tasks_respect_max_parallel_and_leave_no_percent_j_folder(tmp_path):
    plugin = tmp_path / "stamped.py"
    plugin.write_text(STAMPED)
    log = tmp_path / "calls.log"
    suite = write_suite_file(tmp_path, SUITE.replace("LOG", str(log)))
    out = tmp_path / "out"
    result = run_cli("run", str(suite), "--out", str(out), "--plugin", str(plugin), "--executor", "submitit",
                     "--set", "execution.cluster=local", "--set", "execution.max_parallel=1",
                     "--set", "execution.poll_seconds=0.1")
    assert result.exit_code == 0, result.output
    assert result.output.count(" done ") == 2
    (first_start, first_end), (second_start, _) = spans(log)  # two runs, two worker processes
    assert second_start > first_end  # one at a time
    logs = list((out / "tiny" / ".submitit").rglob("*"))
    assert any(p.name.endswith("_log.out") for p in logs)  # submitit's own logs are kept
    assert not [p for p in logs if "%" in p.name], logs


def test_max_parallel_below_one_is_refused(tmp_path):
    result = run_cli("run", str(write_suite_file(tmp_path, PLAIN)), "--dry-run", "--executor", "submitit",
                     "--set", "execution.max_parallel=0")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "param 'max_parallel' must be >= 1" in lines[0], result.output


def test_cluster_slurm_without_slurm_is_one_line_exit_2(tmp_path, monkeypatch):
    if shutil.which("sbatch"):
        monkeypatch.setenv("PATH", str(tmp_path))  # hide this machine's SLURM
    result = run_cli("run", str(write_suite_file(tmp_path, PLAIN)), "--executor", "submitit",
                     "--set", "execution.cluster=slurm", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: executor 'submitit': cluster 'slurm' needs SLURM, and there is no sbatch "
                               "on PATH here") and "execution.cluster=local" in lines[0]
    assert not (tmp_path / "out" / "tiny" / "runs").exists()
