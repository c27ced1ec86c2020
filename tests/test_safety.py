"""Safety first: mimbench deletes or writes only in folders it can prove are the suite's own, and
the Ray executor never joins a cluster nobody asked for nor waits forever for one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mimbench.folder import SuiteLock
from mimbench.folder.ownership import MARKER_FILE

from helpers import run_cli, write_suite_file

SUITE = """
name: tiny
dataset: {name: shapes, params: {num_images: 64}}
image_size: 16
seeds: [0]
train: {epochs: 1, batch_size: 32, log_every: 1, warmup_epochs: 0}  # no warm-up warning
eval: {batch_size: 32, probes: [], baselines: []}
grid:
  encoder: [{name: cnn, params: {hidden_dim: 4}}]
  decoder: [linear]
  masker: [pixel]
  loss: [l1]
"""


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (links not followed) with its content."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def one_error_line(result) -> str:
    """The one line on stderr; stdout holds at most the suite's header (a failure after the folder
    was taken, such as a Ray address that does not answer, comes after it)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    printed = [line for line in result.stdout.splitlines() if line.strip()]
    assert all(line.startswith("suite ") for line in printed) and len(printed) <= 1, result.output
    return lines[0]


def test_fresh_on_a_folder_of_user_files_deletes_nothing_and_exits_2(tmp_path):
    suite, out = write_suite_file(tmp_path, SUITE), tmp_path / "results"
    mine = out / "tiny"
    (mine / "data").mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    (mine / "data" / "images.bin").write_bytes(b"\x00\x01")
    (mine / "summary.csv").write_text("my own table\n")
    before = files_under(mine)
    for extra in (["--fresh"], [], ["--dry-run"], ["--dry-run", "--fresh"]):
        result = run_cli("run", str(suite), "--out", str(out), *extra)
        assert result.exit_code == 2, (extra, result.output)
        line = one_error_line(result)
        assert f"{mine} is not the folder of suite 'tiny'" in line and "notes.txt" in line, line
        assert files_under(mine) == before
        assert sorted(p.name for p in mine.iterdir()) == ["data", "notes.txt", "summary.csv"]  # not even a lock


def test_fresh_refuses_another_suite_of_the_same_name(tmp_path):
    out = tmp_path / "results"
    first = write_suite_file(tmp_path, SUITE, "first.yaml")
    assert run_cli("run", str(first), "--out", str(out)).exit_code == 0
    marker = json.loads((out / "tiny" / MARKER_FILE).read_text())
    assert marker["suite"] == "tiny" and marker["origin"] == str(first.resolve())
    first_runs = files_under(out / "tiny" / "runs")
    before = files_under(out / "tiny")
    other = write_suite_file(tmp_path, SUITE.replace("seeds: [0]", "seeds: [7]"), "other.yaml")
    refused = run_cli("run", str(other), "--out", str(out), "--fresh")
    assert refused.exit_code == 2, refused.output
    line = one_error_line(refused)
    assert f"holds suite 'tiny' from {first.resolve()}, not suite 'tiny' from {other.resolve()}" in line
    assert files_under(out / "tiny") == before
    # a plain run deletes nothing: it adds its runs beside the other suite's, and says so
    shared = run_cli("run", str(other), "--out", str(out))
    assert shared.exit_code == 0 and f"was made by suite 'tiny' from {first.resolve()}" in shared.output
    assert {k: v for k, v in files_under(out / "tiny" / "runs").items() if k in first_runs} == first_runs
    again = run_cli("run", str(other), "--out", str(out), "--fresh")  # still not its folder to empty
    assert again.exit_code == 2 and "--fresh deleted nothing" in one_error_line(again)
    assert {k: v for k, v in files_under(out / "tiny" / "runs").items() if k in first_runs} == first_runs
    # the same runs from another file are the same suite; the same file, edited, too
    copy = write_suite_file(tmp_path, SUITE, "copy.yaml")
    assert run_cli("run", str(copy), "--out", str(out), "--fresh").exit_code == 0
    first.write_text(SUITE.replace("seeds: [0]", "seeds: [0, 1]"))
    edited = run_cli("run", str(first), "--out", str(out), "--fresh")
    assert edited.exit_code == 0 and "2 runs: 2 done" in edited.output


def test_fresh_removes_links_but_never_what_they_point_to(tmp_path):
    suite, out = write_suite_file(tmp_path, SUITE), tmp_path / "results"
    assert run_cli("run", str(suite), "--out", str(out)).exit_code == 0
    outside = tmp_path / "precious"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep" / "thesis.tex").write_text("years of work")
    (outside / "file.txt").write_text("keep me")
    run_folder = next((out / "tiny" / "runs").iterdir())
    (out / "tiny" / "link-to-folder").symlink_to(outside)
    (out / "tiny" / "link-to-file").symlink_to(outside / "file.txt")
    (run_folder / "inner-link").symlink_to(outside / "deep")
    before = files_under(outside)
    result = run_cli("run", str(suite), "--out", str(out), "--fresh")
    assert result.exit_code == 0, result.output
    assert files_under(outside) == before
    assert not (out / "tiny" / "link-to-folder").is_symlink() and not (out / "tiny" / "link-to-file").is_symlink()


def test_a_runs_folder_that_leads_outside_is_refused(tmp_path):
    suite, out = write_suite_file(tmp_path, SUITE), tmp_path / "results"
    assert run_cli("run", str(suite), "--out", str(out)).exit_code == 0
    outside = tmp_path / "elsewhere"
    (out / "tiny" / "runs").rename(outside)
    (out / "tiny" / "runs").symlink_to(outside)
    for folder in outside.iterdir():  # an unfinished run: mimbench would empty its folder
        (folder / "metrics.json").unlink()
    before = files_under(outside)
    result = run_cli("run", str(suite), "--out", str(out))
    assert result.exit_code == 2
    assert "leads out of the suite folder" in one_error_line(result)
    assert files_under(outside) == before


def test_a_folder_from_before_the_marker_is_taken_over_but_fresh_needs_the_same_runs(tmp_path):
    suite, out = write_suite_file(tmp_path, SUITE), tmp_path / "results"
    assert run_cli("run", str(suite), "--out", str(out)).exit_code == 0
    (out / "tiny" / MARKER_FILE).unlink()  # as an earlier mimbench left it
    assert run_cli("run", str(suite), "--out", str(out), "--fresh").exit_code == 0  # the same runs: ours
    (out / "tiny" / MARKER_FILE).unlink()
    other = suite.with_name("other.yaml")
    other.write_text(SUITE.replace("seeds: [0]", "seeds: [3]"))
    before = files_under(out / "tiny")
    refused = run_cli("run", str(other), "--out", str(out), "--fresh")
    assert refused.exit_code == 2 and "earlier mimbench" in one_error_line(refused)
    assert files_under(out / "tiny") == before
    taken = run_cli("run", str(other), "--out", str(out))  # without --fresh nothing is deleted: taken over
    assert taken.exit_code == 0, taken.output
    assert json.loads((out / "tiny" / MARKER_FILE).read_text())["origin"] == str(other.resolve())


# --- Ray: its own instance unless told otherwise, a bounded wait otherwise ---------------------------

def dead_address() -> str:
    """A local TCP port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def mimbench_cli(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mimbench", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture
def ray_temp_dir():
    """Ray's temp folder for one test, short enough for Ray's socket paths, removed after."""
    pytest.importorskip("ray")
    import shutil

    folder = Path(tempfile.mkdtemp(prefix="mbray", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_ray_without_address_ignores_a_stale_address_file_and_environment(tmp_path, ray_temp_dir):
    (ray_temp_dir / "ray").mkdir()
    (ray_temp_dir / "ray" / "ray_current_cluster").write_text(dead_address())  # a `ray start` that died
    env = {**os.environ, "RAY_TMPDIR": str(ray_temp_dir), "RAY_ADDRESS": dead_address()}
    suite, out = write_suite_file(tmp_path, SUITE), tmp_path / "results"
    started = time.monotonic()
    result = mimbench_cli("run", str(suite), "--out", str(out), "--executor", "ray", env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 run: 1 done" in result.stdout
    assert time.monotonic() - started < 200
    # the instance it started lived under the test's temp folder and is gone
    sessions = list((ray_temp_dir / "ray").glob("session_*"))
    assert sessions, "the executor should have started its own instance here"
    leftover = subprocess.run(["pgrep", "-f", str(ray_temp_dir)], capture_output=True, text=True).stdout.split()
    assert not leftover


@pytest.mark.parametrize("address", ["explicit", "auto", "auto-file"])
def test_ray_with_a_dead_address_exits_1_within_its_wait(tmp_path, ray_temp_dir, ray_instance, address):
    """An explicit address, ``auto`` with a stale ``$RAY_ADDRESS``, and ``auto`` with a stale address
    file: each names a dead cluster, which is waited for and not swapped for the Ray instance that
    runs on this machine (this test session's)."""
    dead = dead_address()
    (ray_temp_dir / "ray").mkdir()
    (ray_temp_dir / "ray" / "ray_current_cluster").write_text(dead)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(ray_temp_dir)
    if address == "auto":
        env["RAY_ADDRESS"] = dead
    suite, out = write_suite_file(tmp_path, SUITE), tmp_path / "results"
    started = time.monotonic()
    result = mimbench_cli("run", str(suite), "--out", str(out), "--executor", "ray",
                          "--set", f"execution.address={dead if address == 'explicit' else 'auto'}",
                          "--set", "execution.connect_timeout_s=3", env=env, timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no Ray cluster answered at "), result.stderr
    assert dead.split(":")[1] in lines[0] and "within 3 s" in lines[0]  # auto: the host, resolved
    assert elapsed < 3 + 45  # the wait, plus starting Python, torch and the data check
    with SuiteLock(out / "tiny"):  # released
        pass


def test_a_dead_address_releases_the_lock_in_process_too(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a process with no Ray yet
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init must not be reached"))
    suite, out = write_suite_file(tmp_path, SUITE), tmp_path / "results"
    started = time.monotonic()
    result = run_cli("run", str(suite), "--out", str(out), "--executor", "ray",
                     "--set", f"execution.address={dead_address()}", "--set", "execution.connect_timeout_s=1.5")
    assert result.exit_code == 1 and "within 1.5 s" in one_error_line(result)
    assert time.monotonic() - started < 30
    with SuiteLock(out / "tiny"):
        pass
