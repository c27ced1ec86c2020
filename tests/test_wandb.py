"""The ``wandb`` tracker, for real and offline (``WANDB_MODE=offline``): what W&B wrote is read
back from its own transaction log with its own reader (``wandb leet inspect --json``)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import run_cli, write_suite_file

#: 4 steps per epoch, a loss point every 2 steps; two runs and the pixels baseline.
SUITE = """
name: tiny
dataset: {name: shapes, params: {num_images: 64}}
image_size: 16
seeds: [0]
train: {epochs: 2, batch_size: 16, log_every: 2}
eval: {batch_size: 64, probes: [knn], reference_masker: null, baselines: [pixels]}
grid:
  encoder: [{name: cnn, params: {hidden_dim: 8}}]
  decoder: [linear]
  masker: [pixel, {name: patch, params: {mask_patch_size: 4}}]
  loss: [l1]
"""


def wandb_runs(wandb_dir: Path) -> dict[str, list[dict]]:
    """W&B run id -> the records of each of its offline runs' logs (a resumed run has several), in order."""
    runs: dict[str, list[dict]] = {}
    for log in sorted(wandb_dir.glob("offline-run-*/run-*.wandb")):
        shown = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)],
                               capture_output=True, text=True, timeout=120, check=True)
        records = [json.loads(line) for line in shown.stdout.splitlines() if line.startswith("{")]
        runs.setdefault(log.stem.removeprefix("run-"), []).extend(records)
    return runs


def of_type(records: list[dict], kind: str) -> list[dict]:
    return [record[kind] for record in records if record["type"] == kind]


def summary_of(records: list[dict]) -> dict:
    merged: dict = {}
    for update in of_type(records, "summary"):
        merged.update(update.get("update", {}))
    return merged


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install -e '.[wandb]')")
    tmp = tmp_path_factory.mktemp("wandb")
    suite, out = str(write_suite_file(tmp, SUITE)), tmp / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.chdir(tmp)  # nothing may land in the working directory (W&B's default: ./wandb)
        result = run_cli("run", suite, "--out", str(out), "--tracker", "wandb")
        assert result.exit_code == 0, result.output
        first = wandb_runs(out / "tiny" / "wandb")
        added = run_cli("run", suite, "--out", str(out), "--tracker", "wandb", "--set", "eval.probes=[knn, linear]")
        assert added.exit_code == 0, added.output
    assert not (tmp / "wandb").exists()
    return out / "tiny", first, wandb_runs(out / "tiny" / "wandb")


def test_one_wandb_run_per_mimbench_run_named_by_label_grouped_by_suite(offline):
    suite_dir, runs, _ = offline
    table = pd.read_csv(suite_dir / "summary.csv").set_index("run_id")
    by_run_id = {}
    for wandb_id, records in runs.items():
        (started,) = of_type(records, "run")
        config = started["config"]["update"]
        by_run_id[config["run_id"]] = (wandb_id, started, records)
        assert (suite_dir / "runs" / config["run_id"] / "wandb-run-id").read_text() == wandb_id
    assert set(by_run_id) == set(table.index)
    for run_id, row in table.iterrows():
        wandb_id, started, records = by_run_id[run_id]
        config = started["config"]["update"]
        label = json.loads((suite_dir / "runs" / run_id / "config.json").read_text())["label"]
        assert started["display_name"] == label and started["run_group"] == "tiny"
        assert started["job_type"] == ("pretrain" if row.pretrained else "baseline")
        summary = summary_of(records)
        assert summary["knn_acc"] == pytest.approx(row.knn_acc) and summary["status"] == "done"
        assert of_type(records, "exit")[-1]["exit_code"] == 0
        if not row.pretrained:
            assert config["baseline"] == "pixels" and "train/loss" not in summary
            continue
        assert config["encoder"] == "cnn" and config["encoder.hidden_dim"] == 8 and config["train.lr"] == 1e-3
        assert summary["recon_psnr"] == pytest.approx(row.recon_psnr)
        rows = [history["item"] for history in of_type(records, "history")]
        points = [(item["_step"], item["train/loss"]) for item in rows if "train/loss" in item]
        assert [step for step, _ in points] == [2, 4, 6, 8]
        epochs = pd.read_csv(suite_dir / "runs" / run_id / "history.csv")
        mean = [(points[0][1] + points[1][1]) / 2, (points[2][1] + points[3][1]) / 2]  # each point: 2 steps' mean
        assert mean == pytest.approx(list(epochs.loss), rel=1e-5)
        logged = [(item["epoch"], item["epoch/loss"], item["_step"]) for item in rows if "epoch/loss" in item]
        assert logged == [(1, pytest.approx(epochs.loss[0]), 4), (2, pytest.approx(epochs.loss[1]), 8)]


def test_probes_added_later_go_to_the_same_wandb_run(offline):
    suite_dir, first, now = offline
    table = pd.read_csv(suite_dir / "summary.csv")
    assert set(now) == set(first)  # no new W&B run: each one resumed
    for wandb_id, records in now.items():
        assert len(of_type(records, "run")) == 2
        run_id = of_type(records, "run")[0]["config"]["update"]["run_id"]
        assert summary_of(records)["linear_acc"] == pytest.approx(table.set_index("run_id").linear_acc[run_id])


def test_params_choose_the_mode_the_folder_and_the_project(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install -e '.[wandb]')")
    one_run = SUITE.replace("masker: [pixel, {name: patch, params: {mask_patch_size: 4}}]", "masker: [pixel]")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    elsewhere = tmp_path / "elsewhere"
    result = run_cli("run", str(write_suite_file(tmp_path, one_run)), "--out", str(tmp_path / "out"),
                     "--set", "eval.baselines=[]", "--set",
                     f"trackers=[{{name: wandb, params: {{mode: offline, dir: '{elsewhere}', project: mine}}}}]")
    assert result.exit_code == 0, result.output
    assert "warning:" not in result.output and not (tmp_path / "out" / "tiny" / "wandb").exists()
    (records,) = wandb_runs(elsewhere / "wandb").values()
    assert of_type(records, "run")[0]["project"] == "mine"


@pytest.mark.parametrize("params, error", [
    ("{mode: sometimes}", "error: tracker 'wandb': param 'mode' must be"),
    ("{project: ' '}", "error: tracker 'wandb': project must not be empty"),
    ("{entity: 3}", "error: tracker 'wandb': param 'entity' must be str | None, got int 3"),
    ("{projet: x}", "error: tracker 'wandb': unknown param 'projet'; did you mean 'project'?"),
])
def test_bad_params_exit_2_in_one_line(tmp_path, params, error):
    pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install -e '.[wandb]')")
    result = run_cli("run", str(write_suite_file(tmp_path, SUITE)), "--dry-run",
                     "--set", f"trackers=[{{name: wandb, params: {params}}}]")
    assert result.exit_code == 2 and error in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_without_the_extra_naming_it_exits_2_with_the_pip_command(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    result = run_cli("run", str(write_suite_file(tmp_path, SUITE)), "--dry-run", "--tracker", "wandb")
    assert result.exit_code == 2, result.output
    assert "error: tracker 'wandb' needs wandb" in result.output and "pip install 'mimbench[wandb]'" in result.output
