"""Loss points every ``train.log_every`` steps (the ``mimbench_step_logged`` hook, TensorBoard and
MLflow read back with their own readers, DDP's rank 0 only), TensorBoard runs named by label, and
tracker warnings as one short line on stderr."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from helpers import run_cli, write_suite_file

#: 64 images in batches of 16: 4 steps per epoch, 8 in all; a loss point every 2 steps.
SUITE = """
name: tiny
dataset: {name: shapes, params: {num_images: 64}}
image_size: 16
seeds: [0]
train: {epochs: 2, batch_size: 16, log_every: 2}
eval: {batch_size: 64, probes: [], reference_masker: null}
grid:
  encoder: [{name: cnn, params: {hidden_dim: 8}}]
  decoder: [linear]
  masker: [pixel, {name: patch, params: {mask_patch_size: 4}}]
  loss: [l1]
"""
ONE_RUN = SUITE.replace("masker: [pixel, {name: patch, params: {mask_patch_size: 4}}]", "masker: [pixel]")
POINTS = [2, 4, 6, 8]

#: A plugin whose mimbench_step_logged hook writes each call, with its process id, to steps.jsonl
#: in the suite folder.
STEPS_HOOK = '''
import json, os
from mimbench.plugin import hookimpl


@hookimpl
def mimbench_step_logged(run_dir, step, values):
    with open(run_dir.parent.parent / "steps.jsonl", "a") as f:
        f.write(json.dumps({"run": run_dir.name, "step": step, **values, "pid": os.getpid()}) + "\\n")
'''


def hook_points(suite_dir: Path) -> pd.DataFrame:
    return pd.DataFrame([json.loads(line) for line in (suite_dir / "steps.jsonl").read_text().splitlines()])


def steps_plugin(tmp_path: Path) -> str:
    path = tmp_path / "steps_hook.py"
    path.write_text(STEPS_HOOK)
    return str(path)


def history(suite_dir: Path, run_id: str) -> pd.DataFrame:
    return pd.read_csv(suite_dir / "runs" / run_id / "history.csv")


def check_points(points: pd.DataFrame, epochs: pd.DataFrame) -> None:
    """Points at the global steps 2, 4, 6, 8, each the mean loss of its two steps: an epoch's two
    points average to the epoch's loss; the lr at an epoch's last step is the epoch row's."""
    assert list(points.step) == POINTS
    assert [points.loss[:2].mean(), points.loss[2:].mean()] == pytest.approx(list(epochs.loss), rel=1e-5)
    assert [points.lr[1], points.lr[3]] == pytest.approx(list(epochs.lr))


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install -e '.[tensorboard]')")
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install -e '.[mlflow]')")
    tmp = tmp_path_factory.mktemp("steps")
    suite, out = str(write_suite_file(tmp, SUITE)), tmp / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = run_cli("run", suite, "--out", str(out), "--plugin", steps_plugin(tmp), "--tracker", "tensorboard",
                         "--tracker", "mlflow")
    assert result.exit_code == 0, result.output
    return out / "tiny", suite


def test_the_hook_gets_a_point_every_log_every_steps_with_the_global_step(tracked):
    suite_dir, _ = tracked
    points = hook_points(suite_dir)
    table = pd.read_csv(suite_dir / "summary.csv")
    assert set(points.run) == set(table.run_id)
    assert set(points.pid) == {os.getpid()}  # the local executor: in this process
    for run_id in table.run_id:
        check_points(points[points.run == run_id].reset_index(drop=True), history(suite_dir, run_id))


def tensorboard_runs(suite_dir: Path):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    multiplexer = EventMultiplexer(size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    multiplexer.AddRunsFromDirectory(str(suite_dir / "tensorboard"))  # what `tensorboard --logdir` reads
    multiplexer.Reload()
    return multiplexer


def scalars(accumulator, tag: str) -> pd.DataFrame:
    return pd.DataFrame([(e.step, e.value) for e in accumulator.Scalars(tag)], columns=["step", "loss"])


def test_tensorboard_runs_are_named_by_label_with_loss_points_every_log_every_steps(tracked):
    from mimbench_plugins.tensorboard_tracker import folder_name

    suite_dir, suite = tracked
    multiplexer = tensorboard_runs(suite_dir)
    assert set(multiplexer.Runs()) == {"cnn+pixel seed=0", "cnn+patch seed=0"}
    points = hook_points(suite_dir)
    for run_id in pd.read_csv(suite_dir / "summary.csv").run_id:
        label = json.loads((suite_dir / "runs" / run_id / "config.json").read_text())["label"]
        name = folder_name(label)
        assert (suite_dir / "tensorboard" / name / ".mimbench-run").read_text() == run_id
        accumulator = multiplexer.GetAccumulator(name)
        loss = scalars(accumulator, "train/loss")
        assert list(loss.step) == POINTS
        assert list(loss.loss) == pytest.approx(list(points[points.run == run_id].loss))
        assert [e.step for e in accumulator.Scalars("train/lr")] == POINTS
        epochs = history(suite_dir, run_id)
        assert [(e.step, e.value) for e in accumulator.Scalars("epoch/loss")] == \
            [(1, pytest.approx(epochs.loss[0])), (2, pytest.approx(epochs.loss[1]))]
        assert "train/images_per_second" not in accumulator.Tags()["scalars"]
        assert accumulator.Scalars("final/recon_psnr")[0].step == 8
    assert not list((suite_dir / "runs").glob("*/events.out.tfevents.*"))  # nothing in the run folders

    # a run executed again logs to the same TensorBoard run, from an empty folder
    again_id = pd.read_csv(suite_dir / "summary.csv").run_id[0]
    (suite_dir / "runs" / again_id / "metrics.json").unlink()
    result = run_cli("run", suite, "--out", str(suite_dir.parent), "--tracker", "tensorboard")
    assert result.exit_code == 0, result.output
    multiplexer = tensorboard_runs(suite_dir)
    assert len(multiplexer.Runs()) == 2
    for name in multiplexer.Runs():
        assert [e.step for e in multiplexer.GetAccumulator(name).Scalars("train/loss")] == POINTS


def test_mlflow_gets_the_points_with_the_global_step(tracked):
    from mlflow.tracking import MlflowClient

    suite_dir, _ = tracked
    client = MlflowClient(tracking_uri=f"sqlite:///{suite_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    points = hook_points(suite_dir)
    for run in client.search_runs([experiment.experiment_id]):
        run_id = run.data.tags["mimbench.run_id"]
        loss = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss"))
        mine = points[points.run == run_id]
        assert [step for step, _ in loss] == POINTS
        assert [value for _, value in loss] == pytest.approx(list(mine.loss))
        epochs = history(suite_dir, run_id)
        assert sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "epoch/loss")) == \
            [(1, pytest.approx(epochs.loss[0])), (2, pytest.approx(epochs.loss[1]))]


def test_under_ddp_only_rank_0_sends_the_points(tmp_path):
    out = tmp_path / "out"
    result = run_cli("run", str(write_suite_file(tmp_path, ONE_RUN)), "--out", str(out), "--device", "cpu",
                     "--plugin", steps_plugin(tmp_path), "--set", "train.devices=2")
    assert result.exit_code == 0, result.output
    points = hook_points(out / "tiny")
    assert set(points.pid) == {os.getpid()}  # forwarded to the process that executes the run
    (run_id,) = set(points.run)
    check_points(points, history(out / "tiny", run_id))


def test_tensorboard_folder_names_are_safe_unique_and_follow_the_run(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install -e '.[tensorboard]')")
    from mimbench_plugins.tensorboard_tracker import claim_folder, folder_name

    assert folder_name("cnn/linear/patch(ratio=0.4)/l1 seed=0") == "cnn+linear+patch(ratio=0.4)+l1 seed=0"
    assert folder_name("cnn / patch(ratio=0.4) seed=0") == "cnn+patch(ratio=0.4) seed=0"
    assert folder_name("../x:y") == "_.+x_y" and folder_name("") == "run" and len(folder_name("a" * 500)) == 100
    root = tmp_path / "tensorboard"
    first = claim_folder(root, "a/b seed=0", "1111111111aa")
    assert first.name == "a+b seed=0"
    (first / "events.out.tfevents.1").write_text("old")
    clash = claim_folder(root, "a+b seed=0", "2222222222bb")  # another run, the same safe name
    assert clash.name == "a+b seed=0~22222222"
    assert claim_folder(root, "a/b seed=0", "1111111111aa") == first and not list(first.glob("events*"))
    (first / "events.out.tfevents.2").write_text("old")
    moved = claim_folder(root, "a/b(x=1) seed=0", "1111111111aa")  # its label changed
    assert moved.name == "a+b(x=1) seed=0" and not first.exists()
    assert sorted(p.name for p in root.iterdir()) == ["a+b seed=0~22222222", "a+b(x=1) seed=0"]


#: A tracker that fails in prepare and in epoch_finished with long, multi-line messages.
NOISY = '''
from mimbench.plugin import hookimpl


class Noisy:
    """Fails loudly."""

    def __init__(self, suite_dir: str):
        pass

    def prepare(self):
        raise RuntimeError("prepare " + "p" * 700 + "\\nsecond line")

    def run_started(self, run_dir, config):
        pass

    def epoch_finished(self, run_dir, row):
        raise RuntimeError("epoch " + "e" * 700 + "\\nsecond line")

    def run_finished(self, run_dir, record):
        pass


@hookimpl
def mimbench_register_trackers(register):
    register("noisy", Noisy)
'''


def test_tracker_warnings_are_one_short_line_on_stderr(tmp_path):
    plugin = tmp_path / "noisy.py"
    plugin.write_text(textwrap.dedent(NOISY))
    result = run_cli("run", str(write_suite_file(tmp_path, ONE_RUN)), "--out", str(tmp_path / "out"),
                     "--plugin", str(plugin), "--tracker", "noisy")
    assert result.exit_code == 0, result.output
    assert "warning:" not in result.stdout and "second line" not in result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, result.stderr
    assert warnings[0].startswith("warning: tracker 'noisy' failed to prepare: RuntimeError: prepare ppp")
    assert warnings[1].startswith("warning: tracker 'noisy' failed in epoch_finished for run ")
    assert warnings[1].endswith("...); its other calls for this run are skipped")
    assert all(len(line) <= 400 for line in warnings), [len(line) for line in warnings]
    assert "done" in result.stdout and "Traceback" not in result.output
