"""One run on two processes (DDP, gloo, CPU) against the same run on one process."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers import run_cli, write_suite_file

# Patch masking hides the same number of pixels in every image, so each rank's mean loss over its
# half of the batch averages exactly to the global batch's mean: the two set-ups compute the same
# gradients, and only the order of float additions differs.
SUITE = """
name: ddp
dataset: {name: shapes, params: {num_images: 256}}
image_size: 16
seeds: [0]
train: {epochs: 3, batch_size: 64, lr: 2.0e-3, warmup_epochs: 1, log_every: 2}
eval: {batch_size: 128, probes: [{name: knn}], baselines: []}
grid:
  encoder: [{name: vit, params: {patch_size: 4, dim: 32, depth: 2, heads: 2}}]
  decoder: [linear]
  masker: [{name: patch, params: {ratio: 0.5, mask_patch_size: 4}}]
  loss: [l1]
"""

#: Largest relative difference allowed between the two loss curves (measured: ~1e-6).
LOSS_TOLERANCE = 1e-4


def run_folder(out: Path) -> Path:
    (folder,) = (out / "ddp" / "runs").iterdir()
    return folder


@pytest.fixture(scope="module")
def one_and_two_processes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    suite = write_suite_file(tmp, SUITE)
    one = run_cli("run", str(suite), "--out", str(tmp / "one"), "--device", "cpu")
    two = run_cli("run", str(suite), "--out", str(tmp / "two"), "--device", "cpu", "--set", "train.devices=2")
    assert one.exit_code == 0, one.output
    assert two.exit_code == 0, two.output
    return tmp / "one", tmp / "two"


def test_two_processes_follow_the_one_process_loss_curve(one_and_two_processes):
    one, two = (pd.read_csv(run_folder(out) / "history.csv") for out in one_and_two_processes)
    assert len(one) == len(two) == 3
    relative = ((one.loss - two.loss).abs() / one.loss.abs()).max()
    assert relative < LOSS_TOLERANCE, (one.loss.tolist(), two.loss.tolist())
    assert one.lr.tolist() == pytest.approx(two.lr.tolist())


def test_two_processes_leave_a_run_folder_of_the_same_shape(one_and_two_processes):
    one, two = (run_folder(out) for out in one_and_two_processes)
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    metrics = [json.loads((folder / "metrics.json").read_text()) for folder in (one, two)]
    assert metrics[0].keys() == metrics[1].keys()
    assert metrics[1]["status"] == "done"
    assert json.loads((two / "config.json").read_text())["train"]["devices"] == 2
    # the trained encoder came back from rank 0: its reconstruction is as good as one process's
    assert metrics[1]["recon_mse"] == pytest.approx(metrics[0]["recon_mse"], rel=1e-3)


def test_a_batch_the_processes_cannot_share_equally_is_refused(tmp_path):
    suite = write_suite_file(tmp_path, SUITE)
    result = run_cli("run", str(suite), "--dry-run", "--set", "train.devices=3")
    assert result.exit_code == 2
    assert "batch_size 64 must be divisible by devices 3" in result.output
