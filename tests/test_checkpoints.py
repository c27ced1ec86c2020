"""Long runs: mid-run checkpoints (bit-identical continuation, kill -9 under local and Ray), the
code that made a run (an edited plugin is never silently reused), and threads per run."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from mimbench.folder.checkpoint import CHECKPOINT_FILE

from helpers import run_cli, write_suite_file

# A ViT with data2vec's EMA teacher as its target: the checkpoint must carry the encoder, the
# decoder, the teacher, AdamW, the schedule and every generator for the numbers to match.
SUITE = """
name: long
dataset: {name: shapes, params: {num_images: 960}}
image_size: 16
seeds: [0]
train: {epochs: EPOCHS, batch_size: 32, log_every: 10, checkpoint_every: 1, warmup_epochs: 1,
        augment: {}}
eval: {batch_size: 48, probes: [linear], baselines: []}
grid:
  encoder: [{name: vit, params: {dim: 32, depth: 2, heads: 2, patch_size: 4}}]
  decoder: [linear]
  masker: [{name: patch, params: {mask_patch_size: 4}}]
  loss: [l1]
  target: [ema_teacher]
"""
SAME = ["recon_mse", "recon_psnr", "target_loss", "linear_acc", "final_loss", "train_steps", "epochs_completed", "mask_ratio_actual"]


def write_suite(tmp_path: Path, epochs: int) -> Path:
    return write_suite_file(tmp_path, SUITE.replace("EPOCHS", str(epochs)))


def only_run(out: Path) -> Path:
    (run,) = (out / "long" / "runs").iterdir()
    return run


def metrics(out: Path) -> dict:
    return json.loads((only_run(out) / "metrics.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The 12-epoch run, start to end in one go."""
    tmp = tmp_path_factory.mktemp("whole")
    out = tmp / "out"
    result = run_cli("run", str(write_suite(tmp, 12)), "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def test_a_run_continued_from_its_checkpoint_ends_bit_identical(uninterrupted, tmp_path):
    out = tmp_path / "out"
    suite = write_suite(tmp_path, 12)
    assert run_cli("run", str(suite), "--out", str(out), "--set", "train.keep_checkpoint=true").exit_code == 0
    run = only_run(out)
    assert (run / CHECKPOINT_FILE).is_file()  # kept on request: the state after epoch 11
    (run / "metrics.json").unlink()  # as if killed after its last checkpoint
    result = run_cli("run", str(suite), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "continued from its checkpoint after epoch 11" in result.output
    again, whole = metrics(out), metrics(uninterrupted)
    assert again["resumed_from_epoch"] == 11
    assert {k: again[k] for k in SAME} == {k: whole[k] for k in SAME}
    assert torch.equal(torch.load(run / "encoder.pt")["patch_embed.weight"],
                       torch.load(only_run(uninterrupted) / "encoder.pt")["patch_embed.weight"])
    history = (run / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == [str(e) for e in range(1, 13)]  # one row per epoch
    whole_history = (only_run(uninterrupted) / "history.csv").read_text().splitlines()
    assert [line.split(",")[:3] for line in history] == [line.split(",")[:3] for line in whole_history]  # epoch, loss, lr
    assert not (run / CHECKPOINT_FILE).exists()  # removed once the run is done
    assert not (only_run(uninterrupted) / CHECKPOINT_FILE).exists()


def test_an_unreadable_checkpoint_is_not_continued_from(uninterrupted, tmp_path):
    out = tmp_path / "out"
    suite = write_suite(tmp_path, 12)
    shutil.copytree(uninterrupted, out)
    run = only_run(out)
    (run / "metrics.json").unlink()
    (run / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    result = run_cli("run", str(suite), "--out", str(out))
    assert result.exit_code == 0, result.output
    record = metrics(out)
    assert "resumed_from_epoch" not in record and "could not be read" in record["checkpoint_note"]
    assert {k: record[k] for k in SAME} == {k: metrics(uninterrupted)[k] for k in SAME}



class _Planted:
    """A pickle that runs a command when it is unpickled (what a planted checkpoint.pt could hold)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def kept(tmp_path_factory) -> Path:
    """The 12-epoch run with its last checkpoint kept (train.keep_checkpoint: not part of the run id)."""
    tmp = tmp_path_factory.mktemp("kept")
    out = tmp / "out"
    result = run_cli("run", str(write_suite(tmp, 12)), "--out", str(out), "--set", "train.keep_checkpoint=true")
    assert result.exit_code == 0, result.output
    return out


def _resumed_with(kept: Path, tmp_path: Path, change) -> tuple[dict, str, Path]:
    """A copy of the kept run's folder, as if killed after its last checkpoint, with that
    checkpoint's state passed through ``change(state) -> object to save``; then the same command.
    Returns the run's metrics, the console output and the run folder."""
    out = tmp_path / "out"
    suite = write_suite(tmp_path, 12)
    shutil.copytree(kept, out)
    run = only_run(out)
    (run / "metrics.json").unlink()
    state = torch.load(run / CHECKPOINT_FILE, weights_only=True)
    torch.save(change(state), run / CHECKPOINT_FILE)
    result = run_cli("run", str(suite), "--out", str(out))
    assert result.exit_code == 0, result.output
    return metrics(out), result.output, run


def test_a_planted_pickle_in_a_checkpoint_runs_nothing_and_the_run_starts_over(uninterrupted, kept, tmp_path):
    marker = tmp_path / "the-pickle-ran"
    record, output, run = _resumed_with(kept, tmp_path, lambda state: {**state, "x": _Planted(marker)})
    assert not marker.exists(), "unpickling the checkpoint ran code"
    assert "resumed_from_epoch" not in record
    assert "did not load it" in record["checkpoint_note"] and "posix.system" in record["checkpoint_note"]
    assert "set aside as checkpoint.set-aside.pt" in record["checkpoint_note"]
    assert record["checkpoint_note"] in output  # on the run's console line too
    assert (run / "checkpoint.set-aside.pt").is_file() and not (run / CHECKPOINT_FILE).exists()
    assert {k: record[k] for k in SAME} == {k: metrics(uninterrupted)[k] for k in SAME}


@pytest.mark.parametrize("change, why", [
    (lambda state: {k: v for k, v in state.items() if k != "optimizer"}, "could not be applied (KeyError"),
    (lambda state: {**state, "modules": {**state["modules"], "encoder": {
        **state["modules"]["encoder"], "patch_embed.weight": torch.zeros(3, 3)}}}, "could not be applied"),
    (lambda state: {**state, "step": 10**6}, "cannot belong to this run"),
    (lambda state: {**state, "history": state["history"][:-2]}, "cannot belong to this run"),
    (lambda state: {k: v for k, v in state.items() if k != "layout"}, "another version of mimbench (layout 1"),
], ids=["no optimizer", "wrong shape", "step 10^6", "history cut", "older layout"])
def test_a_checkpoint_that_cannot_be_this_runs_is_set_aside_and_the_run_starts_over(uninterrupted, kept, tmp_path,
                                                                                   change, why):
    """What an update of mimbench between a kill and the resume could leave: never applied, never
    failing the run: set aside, said, and the numbers of a run from the start (so nothing of the
    checkpoint was kept half-applied)."""
    record, output, run = _resumed_with(kept, tmp_path, change)
    assert "resumed_from_epoch" not in record and why in record["checkpoint_note"], record.get("checkpoint_note")
    assert "set aside as checkpoint.set-aside.pt, starting over" in output
    assert {k: record[k] for k in SAME} == {k: metrics(uninterrupted)[k] for k in SAME}
    assert torch.equal(torch.load(run / "encoder.pt")["patch_embed.weight"],
                       torch.load(only_run(uninterrupted) / "encoder.pt")["patch_embed.weight"])


def kill_after(run_dir: Path, rows: int, pid_of, timeout: float = 240.0) -> int:
    """Wait until ``history.csv`` has ``rows`` epochs, then SIGKILL ``pid_of()``; returns the rows seen."""
    deadline = time.time() + timeout
    history = run_dir / "history.csv"
    while time.time() < deadline:
        seen = len(history.read_text().splitlines()) - 1 if history.exists() else 0
        if seen >= rows:
            os.kill(pid_of(), signal.SIGKILL)
            return seen
        time.sleep(0.02)
    raise AssertionError(f"{history} did not reach {rows} rows")


def test_kill_9_in_the_last_third_then_the_same_command_continues(uninterrupted, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "mimbench", "run", str(write_suite(tmp_path, 12)), "--out", str(out)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = out / "long" / "runs" / only_run(uninterrupted).name
    seen = kill_after(run_dir, 10, lambda: first.pid)
    first.wait(timeout=60)
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    record, whole = metrics(out), metrics(uninterrupted)
    assert 9 <= record["resumed_from_epoch"] <= seen
    assert f"continued from its checkpoint after epoch {record['resumed_from_epoch']}" in second.stdout
    assert {k: record[k] for k in SAME} == {k: whole[k] for k in SAME}
    # resumed after epoch 9 or later: at most 3 of 12 epochs trained again (a count, not a clock:
    # a wall-time comparison here failed on a loaded machine)
    assert len((run_dir / "history.csv").read_text().splitlines()) == 13


def test_a_ray_worker_killed_mid_run_continues_from_its_checkpoint(ray_instance, uninterrupted, tmp_path):
    out = tmp_path / "out"
    run_dir = out / "long" / "runs" / only_run(uninterrupted).name

    def worker_pid() -> int:
        return json.loads((run_dir / "config.json").read_text())["pid"]

    killed = {}
    killer = threading.Thread(target=lambda: killed.update(rows=kill_after(run_dir, 9, worker_pid)), daemon=True)
    killer.start()
    result = run_cli("run", str(write_suite(tmp_path, 12)), "--out", str(out), "--executor", "ray",
                     "--set", "execution.max_retries=1")
    killer.join(timeout=5)
    assert result.exit_code == 0, result.output
    assert killed["rows"] >= 9
    record, whole = metrics(out), metrics(uninterrupted)
    assert 8 <= record["resumed_from_epoch"] <= killed["rows"]
    assert {k: record[k] for k in SAME} == {k: whole[k] for k in SAME}


def test_checkpoint_every_is_checked_and_not_part_of_the_run_id(tmp_path):
    suite = write_suite(tmp_path, 2)
    bad = run_cli("run", str(suite), "--out", str(tmp_path / "o"), "--set", "train.checkpoint_every=10 minutes")
    assert bad.exit_code == 2 and "checkpoint_every" in bad.output and "10min" in bad.output
    ids = []
    for every in ("1", "90s", "null"):
        dry = run_cli("run", str(suite), "--out", str(tmp_path / "o"), "--dry-run", "--set", f"train.checkpoint_every={every}")
        assert dry.exit_code == 0, dry.output
        ids.append(re.findall(r"\b[0-9a-f]{12}\b", dry.output))
    assert ids[0] and ids[0] == ids[1] == ids[2]  # the same runs, the same ids, whatever the setting


# -- the code that made a run ---------------------------------------------------------------------------

PLUGIN = '''
import torch
from mimbench.plugin import hookimpl


class Stripes:
    """Hide every other row, plus random pixels (a test masker)."""

    def __init__(self, ratio: float = 0.3):
        self.ratio = ratio

    def __call__(self, images, generator):
        b, _, h, w = images.shape
        rows = torch.zeros(h, dtype=torch.bool, device=images.device)
        rows[::2] = True
        random = torch.rand(b, h, w, generator=generator, device=images.device) < self.ratio
        return random | rows[None, :, None]


@hookimpl
def mimbench_register_maskers(register):
    register("stripes", Stripes)
'''
SMALL = """
name: code
dataset: {name: shapes, params: {num_images: 64}}
image_size: 16
seeds: [0]
train: {epochs: 1, batch_size: 32, warmup_epochs: 0.5}
eval: {batch_size: 64, probes: [linear], baselines: []}
grid:
  encoder: [{name: cnn, params: {hidden_dim: 8}}]
  decoder: [linear]
  masker: [stripes, pixel]
  loss: [l1]
"""


def test_an_edited_plugin_is_never_silently_reused(tmp_path):
    plugin, suite, out = tmp_path / "stripes.py", write_suite_file(tmp_path, SMALL), tmp_path / "out"
    plugin.write_text(PLUGIN)
    command = ("run", str(suite), "--out", str(out), "--plugin", str(plugin))
    assert run_cli(*command).exit_code == 0
    recorded = [json.loads(path.read_text())["code"] for path in (out / "code" / "runs").glob("*/config.json")]
    assert {"masker pixel", "masker stripes"} == {key for code in recorded for key in code if key.startswith("masker")}
    assert all({"encoder cnn", "decoder linear", "loss l1", "probe linear", "dataset shapes"} <= set(code)
               for code in recorded)
    plugin.write_text(PLUGIN.replace("rows[::2] = True", "rows[1::2] = True"))

    kept = run_cli(*command)
    assert kept.exit_code == 0
    warning = [line for line in kept.output.splitlines() if line.startswith("warning: run ")]
    assert len(warning) == 1 and "cnn / stripes seed=0" in warning[0]
    assert "kept, but its code changed since it ran: masker 'stripes' (source edited); --rerun-changed" in warning[0]
    assert "already finished, skipped; its code changed since it ran" in kept.output
    pixel_line = next(line for line in kept.output.splitlines() if "cnn / pixel seed=0" in line)
    assert re.sub(r"  \[\d+/\d+, [^]]*\]$", "", pixel_line).endswith("already finished, skipped")  # no note

    again = run_cli(*command, "--rerun-changed")
    assert again.exit_code == 0
    assert "runs again (code changed since it ran: masker 'stripes' (source edited))" in again.output
    assert len(list((out / "code" / "superseded").iterdir())) == 1  # the old results are kept
    assert "changed" not in run_cli(*command).output  # now recorded with the code loaded

    chosen = run_cli(*command, "--rerun", "masker=pixel")
    assert chosen.exit_code == 0 and "runs again (selected by --rerun)" in chosen.output
    assert len(list((out / "code" / "superseded").iterdir())) == 2
    bad = run_cli(*command, "--rerun", "colour=red")
    assert bad.exit_code == 2 and bad.output.startswith("error: --rerun 'colour=red'") and len(bad.output.splitlines()) == 1



def test_comments_layout_and_docstrings_of_a_plugin_are_not_a_change_of_its_code(tmp_path):
    """The source hash is of the syntax tree: a comment, blank lines, another layout or a docstring
    edited flag nothing; a run recorded before trees were hashed (a hash of bytes) is compared
    with the bytes, so an upgrade of mimbench flags nothing either."""
    plugin, suite, out = tmp_path / "stripes.py", write_suite_file(tmp_path, SMALL), tmp_path / "out"
    plugin.write_text(PLUGIN)
    command = ("run", str(suite), "--out", str(out), "--plugin", str(plugin))
    assert run_cli(*command).exit_code == 0
    configs = sorted((out / "code" / "runs").glob("*/config.json"))
    for path in configs:  # as a run recorded before: the byte hash under "source", no "source_bytes"
        config = json.loads(path.read_text())
        for record in config["code"].values():
            assert record["source"].startswith("ast:") or record["source"] == ""
            record["source"] = record.pop("source_bytes")
        path.write_text(json.dumps(config))
    assert "changed" not in run_cli(*command).output, "an old record of the same bytes is the same code"
    for path in configs:
        config = json.loads(path.read_text())
        for record in config["code"].values():
            record["source_bytes"], record["source"] = record["source"], "ast:" + "0" * 16
        path.write_text(json.dumps(config))
    assert "source edited" in run_cli(*command).output, "a tree hash that differs is a change"
    assert run_cli(*command, "--rerun-changed").exit_code == 0

    edited = PLUGIN.replace("class Stripes:", "# a comment\n\n\nclass Stripes:  # another", 1).replace(
        "Hide every other row, plus random pixels (a test masker).", "Edited: what it does, said otherwise.")
    plugin.write_text(edited.replace("rows[::2] = True", "rows[::2] = (True)   # same code"))
    kept = run_cli(*command)
    assert kept.exit_code == 0 and "changed" not in kept.output, kept.output
    plugin.write_text(edited.replace("rows[::2] = True", "rows[::3] = True"))
    assert "masker 'stripes' (source edited)" in run_cli(*command).output

# -- threads ------------------------------------------------------------------------------------------

def test_threads_per_run_is_recorded_and_a_mixed_suite_is_warned_about(tmp_path):
    suite, out = write_suite_file(tmp_path, SMALL.replace("stripes, ", "")), tmp_path / "out"
    first = run_cli("run", str(suite), "--out", str(out), "--set", "execution.threads_per_run=1")
    assert first.exit_code == 0, first.output
    config = json.loads(next((out / "code" / "runs").glob("*/config.json")).read_text())
    assert config["threads"] == 1
    grown = run_cli("run", str(suite), "--out", str(out), "--set", "execution.threads_per_run=2",
                    "--set", "seeds=[0, 1]")
    assert grown.exit_code == 0
    warning = [line for line in grown.output.splitlines() if line.startswith("warning: finished runs")]
    assert len(warning) == 1 and "1 torch thread(s)" in warning[0] and "threads_per_run=1" in warning[0]
    older_name = run_cli("run", str(suite), "--out", str(tmp_path / "o2"), "--set", "execution.threads=1", "--dry-run")
    assert older_name.exit_code == 0, older_name.output
    both = run_cli("run", str(suite), "--out", str(tmp_path / "o2"), "--set", "execution.threads=1",
                   "--set", "execution.threads_per_run=1", "--dry-run")
    assert both.exit_code == 2 and "threads_per_run" in both.output


RERUN_SUITE = """
name: reruns
dataset: {name: shapes, params: {num_images: 64}}
image_size: 16
seeds: [0, 1]
train: {epochs: 1, batch_size: 32, lr: 2.0e-3, warmup_epochs: 0.2}
eval: {probes: [linear], baselines: []}
grid:
  encoder: [{name: cnn, params: {hidden_dim: 8}}]
  decoder: [linear]
  masker: [pixel, {name: patch, params: {mask_patch_size: 4}}]
  loss: [l1]
"""


@pytest.fixture(scope="module")
def finished_reruns(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("reruns")
    suite, out = write_suite_file(tmp, RERUN_SUITE), tmp / "out"
    assert run_cli("run", str(suite), "--out", str(out)).exit_code == 0
    return suite, out


def rerun_dry(finished_reruns, *selectors: str):
    suite, out = finished_reruns
    return run_cli("run", str(suite), "--out", str(out), "--dry-run", *(a for s in selectors for a in ("--rerun", s)))


@pytest.mark.parametrize("selector, says", [
    ("masker.nope=null", "error: --rerun 'masker.nope': no run of this suite has that param"),
    ("masker.mask_patch_sise=4", "did you mean masker.mask_patch_size?"),
    ("train.lrr=2e-3", "did you mean train.lr?"),
    ("masker=patch,masker=pixel", "masker is given twice"),
])
def test_a_rerun_selector_that_cannot_mean_what_it_says_is_one_line(finished_reruns, selector, says):
    result = rerun_dry(finished_reruns, selector)
    assert result.exit_code == 2 and says in result.output and len(result.output.splitlines()) == 1, result.output


@pytest.mark.parametrize("selector, again", [
    ("train.lr=2e-3", 4),  # read as --set reads it: 2e-3 is the number 0.002
    ("masker.mask_patch_size=4", 2),  # only the runs whose masker has that param
    ("eval.labels_per_class=null", 4),  # every sweepable key is selectable
    ("seed=1", 2),
])
def test_a_dry_run_says_which_finished_runs_a_rerun_runs_again(finished_reruns, selector, again):
    result = rerun_dry(finished_reruns, selector)
    assert result.exit_code == 0, result.output
    assert result.output.count("finished, runs again: selected by --rerun") == again
    assert f"4 of these runs are finished in " in result.output and f"{4 - again} would be kept, {again} would run " \
                                                                     f"again" in result.output


def test_a_run_id_selector_is_text_even_when_it_is_all_digits(finished_reruns):
    suite, out = finished_reruns
    run_id = sorted(p.name for p in (out / "reruns" / "runs").iterdir())[0]
    from mimbench.reuse import parse_selectors

    assert parse_selectors([f"run_id={run_id}", "run_id=123456789012"]) == ({"run_id": run_id},
                                                                           {"run_id": "123456789012"})
    result = rerun_dry(finished_reruns, f"run_id={run_id}")
    assert result.output.count("finished, runs again") == 1 and run_id in result.output
