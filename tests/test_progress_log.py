"""A run whose output goes to a file (CI, nohup, a SLURM job) talks: a header before anything
trains, then one plain line per finished run with where the suite stands, each written as it
happens (not when the process ends), and no bar redraws."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from mimbench.progress import clock

MIMBENCH = str(Path(sys.executable).parent / "mimbench")
TINY = ["--set", "name=talks", "--set", "train.epochs=1", "--set", "train.warmup_epochs=0.2",
        "--set", "dataset={name: shapes, params: {num_images: 64}}", "--set", "image_size=16",
        "--set", "grid.encoder=[{name: cnn, params: {hidden_dim: 8}}]", "--set", "train.batch_size=32"]


def test_clock():
    assert [clock(0), clock(59.4), clock(83.2), clock(3600), clock(3725)] == ["0:00", "0:59", "1:23", "1:00:00",
                                                                              "1:02:05"]


def test_a_run_into_a_log_file_prints_a_header_and_a_line_per_run_as_they_happen(tmp_path):
    """And run again, a line per skipped run, with where the suite stands."""
    log = tmp_path / "run.log"
    with log.open("w") as out:
        process = subprocess.Popen([MIMBENCH, "run", "--out", str(tmp_path / "results"), *TINY], stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path)
        seen_while_running = []
        while process.poll() is None:
            text = log.read_text()
            if "[1/10, " in text:  # the first run's line is in the file while the suite goes on
                seen_while_running.append(text)
                break
            time.sleep(0.1)
        assert process.wait(timeout=600) == 0, log.read_text()
    assert seen_while_running, "the first run's line reached the file only when the process ended"
    lines = log.read_text().splitlines()
    assert lines[0] == (f"suite talks: 6 runs and 4 baselines on shapes (64 train / 64 test images, 16px), device cpu, "
                        f"executor local, results in {tmp_path / 'results' / 'talks'}")
    run_lines = [line for line in lines if re.search(r"\[\d+/10, ", line)]
    assert len(run_lines) == 10
    for k, line in enumerate(run_lines, start=1):
        standing = re.search(r"\[(\d+)/10, (\d+:\d\d) elapsed(?:, ~(\d+:\d\d) left)?\]$", line)
        assert standing and int(standing[1]) == k, line
        assert (standing[3] is None) == (k == 10), line  # what is left, until nothing is
    assert "\r" not in log.read_text() and "it/s" not in log.read_text(), "no progress bar in a log"
    assert lines[-2].startswith("10 runs: 10 done")

    again = subprocess.run([MIMBENCH, "run", "--out", str(tmp_path / "results"), *TINY], check=True,
                           capture_output=True, text=True, cwd=tmp_path).stdout.splitlines()
    assert again[0] == lines[0]
    skipped = [line for line in again if "already finished, skipped" in line]
    assert len(skipped) == 10 and "[10/10, " in skipped[-1]
    assert all(line.endswith(" elapsed]") for line in skipped), "nothing executed: no estimate of what is left"

