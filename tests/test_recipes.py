"""Recipes that cannot be what the user meant: warnings before compute (a warm-up as long as the
run, a budget of fewer steps than the warm-up), the packaged suites' CPU try-lines free of them,
and duplicate grid entries or sweep values refused (exit 2, naming them)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mimbench.recipes import run_warnings, warmup_warning
from mimbench.schema import TrainConfig

from helpers import run_cli, write_suite_file

SUITES = Path(__file__).resolve().parent.parent / "mimbench" / "suites"

SUITE = """
name: tiny
dataset: {name: shapes, params: {num_images: 160}}
image_size: 16
seeds: [0]
train: {epochs: 1, batch_size: 32, log_every: 1}
eval: {batch_size: 32, probes: [], baselines: []}
grid:
  encoder: [{name: cnn, params: {hidden_dim: 4}}]
  decoder: [linear]
  masker: [pixel]
  loss: [l1]
"""


def warnings_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning:")]


# ------------------------------------------------------------------------------------------
# the warm-up against the run's length, in optimizer steps
# ------------------------------------------------------------------------------------------

def test_a_warmup_as_long_as_the_run_never_decays():
    # 100 images, batch 32: 3 steps per epoch
    line = warmup_warning(TrainConfig(epochs=1, batch_size=32, warmup_epochs=1), 100)
    assert line is not None and line.startswith("train.warmup_epochs 1 (3 steps) is not shorter than the run "
                                                "(train.epochs 1: 3 steps)")
    assert "reaches train.lr only at the last step and never decays" in line
    assert line.endswith("--set train.warmup_epochs=0.2")


def test_a_warmup_longer_than_the_run_says_how_far_the_lr_gets():
    line = warmup_warning(TrainConfig(epochs=1, batch_size=32, warmup_epochs=2), 100)
    assert "(6 steps)" in line and "reaching only 50% of train.lr" in line


@pytest.mark.parametrize("epochs, warmup", [(2, 1), (1, 0), (30, 2), (1, 0.2)])
def test_no_warning_when_the_lr_decays_after_the_warmup(epochs, warmup):
    assert warmup_warning(TrainConfig(epochs=epochs, batch_size=32, warmup_epochs=warmup), 100) is None


def test_a_budget_of_fewer_steps_than_the_warmup():
    # round(1000 / (10 FLOPs x 32 images)) = 3 steps; the warm-up is 2 epochs of 3 steps
    train = TrainConfig(epochs=30, batch_size=32, warmup_epochs=2, budget_flops=1000)
    line = warmup_warning(train, 100, flops_per_image=10)
    assert line.startswith("train.budget_flops 1000 is 3 steps, not more than the 6 steps of the warm-up "
                           "(train.warmup_epochs 2)")
    assert warmup_warning(train, 100, flops_per_image=1) is None  # 31 steps: the warm-up ends in time


def test_a_warning_shared_by_some_runs_says_how_many_and_names_one():
    from types import SimpleNamespace

    short = SimpleNamespace(run_id="a", train=TrainConfig(epochs=1, batch_size=32))
    long = SimpleNamespace(run_id="b", train=TrainConfig(epochs=5, batch_size=32))
    labels = {"a": "epochs=1", "b": "epochs=5"}
    [line] = run_warnings([short, long], labels, 100, lambda run: None)
    assert line.endswith("(1 of 2 runs, e.g. epochs=1)")
    [line] = run_warnings([short, short], labels, 100, lambda run: None)
    assert not line.endswith(")")  # every run: no count
    assert run_warnings([long], labels, 100, lambda run: None) == []


def test_the_cli_warns_once_on_stderr_before_the_dry_run_and_before_training(tmp_path):
    suite = str(write_suite_file(tmp_path, SUITE))
    dry = run_cli("run", suite, "--dry-run")
    assert dry.exit_code == 0, dry.output
    [line] = warnings_of(dry)
    assert line.startswith("warning: train.warmup_epochs 1 (") and "never decays" in line
    assert dry.stdout.startswith("suite tiny:")
    ran = run_cli("run", suite, "--out", str(tmp_path / "out"))
    assert ran.exit_code == 0, ran.output
    assert warnings_of(ran) == [line]
    assert ran.output.index(line) < ran.output.index(" done ")  # before anything trained
    fixed = run_cli("run", suite, "--dry-run", "--set", "train.warmup_epochs=0.2")
    assert fixed.exit_code == 0 and warnings_of(fixed) == []


def test_a_sweep_warns_for_its_short_runs_only_and_a_budget_is_counted(tmp_path):
    suite = str(write_suite_file(tmp_path, SUITE))
    swept = run_cli("run", suite, "--dry-run", "--set", "sweep={train.epochs: [1, 4]}")
    assert swept.exit_code == 0, swept.output
    [line] = warnings_of(swept)
    assert line.endswith("(1 of 2 runs, e.g. epochs=1)") or "(1 of 2 runs, e.g." in line
    budget = run_cli("run", suite, "--dry-run", "--set", "train.budget_flops=1", "--set", "train.epochs=30")
    assert budget.exit_code == 0, budget.output
    [line] = warnings_of(budget)
    assert line.startswith("warning: train.budget_flops 1 is 1 steps, not more than the ")


def test_the_api_gives_the_warnings_with_the_prepared_suite(tmp_path):
    from mimbench.api import prepare

    prepared = prepare(str(write_suite_file(tmp_path, SUITE)), tmp_path / "out")
    assert len(prepared.warnings) == 1 and "never decays" in prepared.warnings[0]


def test_a_train_batch_larger_than_the_split_in_any_swept_run_is_refused(tmp_path):
    result = run_cli("run", str(write_suite_file(tmp_path, SUITE)), "--dry-run",
                     "--set", "sweep={train.batch_size: [32, 100000]}")
    assert result.exit_code == 2
    assert re.search(r"error: train\.batch_size 100000 is larger than the train split \(\d+ images\)", result.output)


def try_lines() -> list[tuple[str, list[str]]]:
    """Each packaged suite's CPU try-line (a comment ``mimbench run NAME --set ...``), as arguments."""
    found = []
    for path in sorted(SUITES.glob("*.yaml")):
        for line in path.read_text().splitlines():
            match = re.match(r"#.*?\bmimbench run ([\w-]+ --set .*)$", line)
            if match:
                found.append((path.stem, shlex.split(match[1])))
    return found


def test_every_packaged_suite_that_is_not_cpu_sized_has_a_try_line():
    names = {name for name, _ in try_lines()}
    assert {"simmim-ablation", "label-efficiency", "simmim-vs-mae", "simmim-vs-mae-equal-compute",
            "prediction-targets", "dense-probe", "detection-restoration", "label-free"} <= names


@pytest.mark.parametrize("args", [args for _, args in try_lines()], ids=[name for name, _ in try_lines()])
def test_the_packaged_try_lines_plan_without_a_warning(args, tmp_path):
    result = run_cli("run", *args, "--dry-run", "--device", "cpu", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert warnings_of(result) == [], result.stderr


# ------------------------------------------------------------------------------------------
# the same run planned twice
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, error", [
    ("grid.masker=[pixel, pixel]", "error: grid.masker: pixel is listed twice: the same runs would be planned twice"),
    ("grid.masker=[pixel, {name: pixel, params: {ratio: 0.6}}]",
     "error: grid.masker: pixel and {name: pixel, params: {ratio: 0.6}} are the same masker once its defaults are "
     "filled in (pixel(ratio=0.6)): the same runs would be planned twice"),
    ("grid.loss=[l1, mse, l1]", "error: grid.loss: l1 is listed twice"),
    ("sweep={masker.ratio: [0.4, 0.5, 0.5]}", "error: sweep masker.ratio: 0.5 is listed twice"),
    ("sweep={train.lr: [0.001, 1.0e-3]}", "error: sweep train.lr: 0.001 is listed twice"),
    ("sweep={eval.labels_per_class: [null, 5, null]}", "error: sweep eval.labels_per_class: null is listed twice"),
], ids=["same-name", "same-after-defaults", "loss", "sweep", "sweep-float-spelling", "sweep-null"])
def test_duplicate_grid_entries_and_sweep_values_exit_2_naming_them(override, error, tmp_path):
    result = run_cli("run", str(write_suite_file(tmp_path, SUITE)), "--dry-run", "--set", override)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(error), result.output


def test_the_same_run_in_two_grids_is_allowed(tmp_path):
    grids = ("grid=[{encoder: [{name: cnn, params: {hidden_dim: 4}}], decoder: [linear], masker: [pixel], loss: [l1]},"
             " {encoder: [{name: cnn, params: {hidden_dim: 4}}], decoder: [linear], masker: [pixel, patch], loss: [l1]}]")
    result = run_cli("run", str(write_suite_file(tmp_path, SUITE)), "--dry-run", "--set", grids,
                     "--set", "train.warmup_epochs=0")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("suite tiny: 2 runs")  # joined: the shared run is planned once
