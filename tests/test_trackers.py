"""Run events where the run executes (the three hooks and the suite's trackers), and the two real
trackers read back with their own libraries' readers (TensorBoard's event multiplexer, MLflow's client)."""

from __future__ import annotations

import importlib.util
import json
import os
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from helpers import run_cli, write_suite_file

SUITE = """
name: tiny
dataset: {name: shapes, params: {num_images: 64}}
image_size: 16
seeds: [0]
train: {epochs: 2, batch_size: 32, log_every: 1}
eval: {batch_size: 64, probes: [], reference_masker: null}
grid:
  encoder: [{name: cnn, params: {hidden_dim: 8}}]
  decoder: [linear]
  masker: [pixel, {name: patch, params: {mask_patch_size: 4}}]
  loss: [l1]
"""

#: A plugin that implements the three hooks (logging to ``hooks.jsonl`` in the suite folder) and
#: registers two trackers: ``recorder`` writes every event (with the process id) as a JSON line to
#: ``path``; ``broken`` raises in epoch_finished.
OBSERVER = '''
import json, os
from mimbench.plugin import hookimpl


def _log(path, **event):
    with open(path, "a") as f:
        f.write(json.dumps({**event, "pid": os.getpid()}, default=str) + "\\n")


class Recorder:
    """Writes every event it gets to a JSON-lines file."""

    def __init__(self, suite_dir: str, path: str):
        self.suite_dir, self.path = suite_dir, path

    def run_started(self, run_dir, config):
        _log(self.path, source="tracker", event="started", run=run_dir.name, suite_dir=self.suite_dir,
             config_run_id=config["run_id"], label=config["label"])

    def epoch_finished(self, run_dir, row):
        _log(self.path, source="tracker", event="epoch", run=run_dir.name, epoch=row["epoch"], loss=row["loss"])

    def run_finished(self, run_dir, record):
        _log(self.path, source="tracker", event="finished", run=run_dir.name, status=record["status"],
             psnr=record["recon_psnr"], metrics_on_disk=(run_dir / "metrics.json").exists())


class Broken(Recorder):
    """Raises in epoch_finished."""

    def __init__(self, suite_dir: str):
        pass

    def run_started(self, run_dir, config):
        pass

    def epoch_finished(self, run_dir, row):
        raise RuntimeError("boom")


@hookimpl
def mimbench_register_trackers(register):
    register("recorder", Recorder)
    register("broken", Broken)


def _hook_log(run_dir):
    return run_dir.parent.parent / "hooks.jsonl"  # in the suite folder


@hookimpl
def mimbench_run_started(run_dir, config):
    _log(_hook_log(run_dir), source="hook", event="started", run=run_dir.name)


@hookimpl
def mimbench_epoch_finished(run_dir, row):
    _log(_hook_log(run_dir), source="hook", event="epoch", run=run_dir.name, epoch=row["epoch"])


@hookimpl
def mimbench_run_finished(run_dir, record):
    _log(_hook_log(run_dir), source="hook", event="finished", run=run_dir.name, status=record["status"])
'''


def write_suite(tmp_path: Path, text: str = SUITE) -> Path:
    return write_suite_file(tmp_path, text)


def summary(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "tiny" / "summary.csv")


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def observer(tmp_path: Path) -> Path:
    path = tmp_path / "observer.py"
    path.write_text(OBSERVER)
    return path


def recorder_args(tmp_path: Path, log: Path) -> list[str]:
    return ["--plugin", str(observer(tmp_path)), "--set", f"trackers=[{{name: recorder, params: {{path: {log}}}}}]"]


def check_event_order(lines: list[dict], table: pd.DataFrame, epochs: int) -> None:
    """Each run: started, then epochs 1..E, then finished (after metrics.json), with the run's numbers."""
    for run_id, psnr in zip(table.run_id, table.recon_psnr):
        mine = [line for line in lines if line["run"] == run_id]
        assert [line["event"] for line in mine] == ["started"] + ["epoch"] * epochs + ["finished"]
        assert [line["epoch"] for line in mine[1:-1]] == list(range(1, epochs + 1))
        assert mine[0]["config_run_id"] == run_id and "seed=0" in mine[0]["label"]
        assert mine[-1]["status"] == "done" and mine[-1]["psnr"] == pytest.approx(psnr) and mine[-1]["metrics_on_disk"]


def test_hooks_and_trackers_get_every_event_in_order(tmp_path):
    out, tracker_log = tmp_path / "out", tmp_path / "tracker.jsonl"
    hook_log = out / "tiny" / "hooks.jsonl"
    result = run_cli("run", str(write_suite(tmp_path)), "--out", str(out), *recorder_args(tmp_path, tracker_log))
    assert result.exit_code == 0, result.output
    table = summary(out)
    lines = events(tracker_log)
    check_event_order(lines, table, epochs=2)
    assert {line["suite_dir"] for line in lines if "suite_dir" in line} == {str((out / "tiny").absolute())}
    for run_id in table.run_id:  # the hooks see the same sequence
        assert [e["event"] for e in events(hook_log) if e["run"] == run_id] == ["started", "epoch", "epoch", "finished"]
    # the local executor runs in this process
    assert {line["pid"] for line in lines} == {os.getpid()}
    history = pd.read_csv(out / "tiny" / "runs" / table.run_id[0] / "history.csv")
    assert [line["loss"] for line in lines if line["run"] == table.run_id[0] and line["event"] == "epoch"] == \
        pytest.approx(list(history.loss))


def test_events_happen_inside_ray_workers(ray_instance, tmp_path):
    out, tracker_log = tmp_path / "out", tmp_path / "tracker.jsonl"
    result = run_cli("run", str(write_suite(tmp_path)), "--out", str(out), "--executor", "ray",
                     "--set", "execution.cpus_per_run=1", *recorder_args(tmp_path, tracker_log))
    assert result.exit_code == 0, result.output
    lines = events(tracker_log)
    check_event_order(lines, summary(out), epochs=2)
    assert os.getpid() not in {line["pid"] for line in lines}, "the tracker ran in the driver, not in a worker"
    hooks = events(out / "tiny" / "hooks.jsonl")
    assert sorted(e["event"] for e in hooks) == ["epoch"] * 4 + ["finished"] * 2 + ["started"] * 2
    assert os.getpid() not in {e["pid"] for e in hooks}


def test_a_run_that_evaluates_another_runs_encoder_reports_that_runs_epochs(tmp_path):
    shared = (SUITE.replace("masker: [pixel, {name: patch, params: {mask_patch_size: 4}}]", "masker: [pixel]")
              .replace("probes: []", "probes: [knn], baselines: []") + "sweep: {eval.labels_per_class: [2, 3]}\n")
    out, log = tmp_path / "out", tmp_path / "tracker.jsonl"
    result = run_cli("run", str(write_suite(tmp_path, shared)), "--out", str(out), *recorder_args(tmp_path, log))
    assert result.exit_code == 0, result.output
    table = summary(out)
    assert table.pretrained_in.notna().sum() == 1  # one run trains, the other evaluates its encoder
    lines = events(log)
    by_run = {run: [(e["event"], e.get("loss")) for e in lines if e["run"] == run] for run in table.run_id}
    trained, evaluated = (by_run[r] for r in table.sort_values("pretrained_in", na_position="first").run_id)
    assert [event for event, _ in evaluated] == ["started", "epoch", "epoch", "finished"]
    assert evaluated[1:3] == trained[1:3]  # the same losses, from the history it carries over


def test_a_failing_tracker_or_hook_is_one_warning_not_a_failed_run(tmp_path):
    plugin = observer(tmp_path)
    hooks = tmp_path / "bad_hook.py"
    hooks.write_text(textwrap.dedent('''
        from mimbench.plugin import hookimpl

        @hookimpl
        def mimbench_run_finished(run_dir, record):
            raise ValueError("hook down")
    '''))
    out = tmp_path / "out"
    result = run_cli("run", str(write_suite(tmp_path)), "--out", str(out), "--plugin", str(plugin),
                     "--plugin", str(hooks), "--set", "trackers=[broken]")
    assert result.exit_code == 0, result.output
    table = summary(out)
    assert (table.status == "done").all()
    for run_id in table.run_id:
        assert result.output.count(f"warning: tracker 'broken' failed in epoch_finished for run {run_id} "
                                   f"(RuntimeError: boom); its other calls for this run are skipped") == 1
        assert f"failed in mimbench_run_finished for run {run_id} (ValueError: hook down)" in result.output
    assert "Traceback" not in result.output


def test_trackers_change_no_run_id_and_no_suite_version(tmp_path):
    suite = str(write_suite(tmp_path))
    plain = run_cli("run", suite, "--dry-run")
    tracked = run_cli("run", suite, "--dry-run", "--plugin", str(observer(tmp_path)), "--tracker", "broken")
    assert plain.exit_code == tracked.exit_code == 0, tracked.output
    assert "trackers broken" in tracked.output
    ids = [line.split()[0] for line in plain.output.splitlines()[1:]]
    assert ids and ids == [line.split()[0] for line in tracked.output.splitlines()[1:]]
    out = tmp_path / "out"
    assert run_cli("run", suite, "--out", str(out)).exit_code == 0
    again = run_cli("run", suite, "--out", str(out), "--plugin", str(observer(tmp_path)), "--tracker", "broken")
    assert again.exit_code == 0 and "another version" not in again.output
    assert again.output.count("already finished, skipped") == 2


@pytest.mark.parametrize("args, error", [
    (["--tracker", "tensorbord"], "error: unknown tracker 'tensorbord'; did you mean 'tensorboard'?"),
    (["--set", "trackers=[{name: mlflow, params: {tracking_url: x}}]"],
     "error: tracker 'mlflow': unknown param 'tracking_url'; did you mean 'tracking_uri'?"),
    (["--set", "trackers=[mlflow, {name: mlflow}]"], "trackers: tracker 'mlflow' is listed twice"),
    (["--set", "trackers=[{name: tensorboard, params: {images: maybe}}]"],
     "error: tracker 'tensorboard': param 'images' must be bool"),
])
def test_bad_tracker_input_exits_2_in_one_line(tmp_path, args, error):
    result = run_cli("run", str(write_suite(tmp_path)), "--dry-run", *args)
    assert result.exit_code == 2 and error in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("tracker, module, extra", [("tensorboard", "tensorboard", "tensorboard"),
                                                    ("mlflow", "mlflow", "mlflow")])
def test_a_missing_extra_exits_2_with_the_pip_command(tmp_path, monkeypatch, tracker, module, extra):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    result = run_cli("run", str(write_suite(tmp_path)), "--dry-run", "--tracker", tracker)
    assert result.exit_code == 2, result.output
    assert f"error: tracker '{tracker}' needs" in result.output and f"pip install 'mimbench[{extra}]'" in result.output


def test_tensorboard_event_files_read_back_with_tensorboard(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install -e '.[tensorboard]')")
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import plugin_data_pb2
    from mimbench_plugins.tensorboard_tracker import folder_name

    out = tmp_path / "out"
    result = run_cli("run", str(write_suite(tmp_path, SUITE.replace("probes: []", "probes: [knn]"))), "--out", str(out),
                     "--tracker", "tensorboard", "--set", "eval.baselines=[pixels]")
    assert result.exit_code == 0, result.output
    table = summary(out).set_index("run_id")
    multiplexer = EventMultiplexer(size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    multiplexer.AddRunsFromDirectory(str(out / "tiny" / "tensorboard"))  # what `tensorboard --logdir` reads
    multiplexer.Reload()
    names = {run_id: (out / "tiny" / "runs" / run_id / "config.json") for run_id in table.index}
    names = {run_id: folder_name(json.loads(path.read_text())["label"]) for run_id, path in names.items()}
    assert set(multiplexer.Runs()) == set(names.values())  # one TensorBoard run per mimbench run, named by its label
    for run_id, row in table.iterrows():
        accumulator = multiplexer.GetAccumulator(names[run_id])
        scalars = accumulator.Tags()["scalars"]
        assert accumulator.Scalars("final/knn_acc")[0].value == pytest.approx(row.knn_acc)
        content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        assert hparams["run_id"].string_value == run_id and hparams["status"].string_value == "done"
        if not row.pretrained:
            assert hparams["baseline"].string_value == "pixels" and "epoch/loss" not in scalars
            continue
        history = pd.read_csv(out / "tiny" / "runs" / run_id / "history.csv")
        loss = accumulator.Scalars("epoch/loss")
        assert [e.step for e in loss] == [1, 2] and [e.value for e in loss] == pytest.approx(list(history.loss))
        assert [e.value for e in accumulator.Scalars("epoch/lr")] == pytest.approx(list(history.lr))
        assert {"epoch/images_per_second", "final/recon_psnr", "final/train_seconds"} <= set(scalars)
        assert accumulator.Scalars("final/recon_psnr")[0].value == pytest.approx(row.recon_psnr)
        assert hparams["encoder"].string_value == "cnn" and hparams["encoder.hidden_dim"].number_value == 8
        assert hparams["masker"].string_value == row.masker and hparams["train.lr"].number_value == pytest.approx(1e-3)
        image = accumulator.Images("reconstructions")[0]
        from PIL import Image

        with Image.open(out / "tiny" / "runs" / run_id / "reconstructions.png") as picture:
            assert (image.width, image.height) == picture.size


def mlflow_runs(client, experiment: str, **kwargs) -> dict[str, object]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    return {run.data.tags["mimbench.run_id"]: run for run in client.search_runs([found.experiment_id], **kwargs)}


def test_mlflow_one_run_per_mimbench_run_read_back_with_its_client(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install -e '.[mlflow]')")
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out, suite = tmp_path / "out", str(write_suite(tmp_path))
    result = run_cli("run", suite, "--out", str(out), "--tracker", "mlflow")
    assert result.exit_code == 0, result.output
    table = summary(out).set_index("run_id")
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'tiny' / 'mlflow.db'}")  # the default store
    runs = mlflow_runs(client, "tiny")
    assert set(runs) == set(table.index)
    for run_id, row in table.iterrows():
        run = runs[run_id]
        assert run.info.status == "FINISHED" and run.data.tags["mimbench.status"] == "done"
        assert run.info.run_name == f"cnn / {row.masker} seed=0"
        history = pd.read_csv(out / "tiny" / "runs" / run_id / "history.csv")
        loss = client.get_metric_history(run.info.run_id, "epoch/loss")
        assert sorted((m.step, m.value) for m in loss) == [(1, pytest.approx(history.loss[0])),
                                                           (2, pytest.approx(history.loss[1]))]
        assert run.data.metrics["recon_psnr"] == pytest.approx(row.recon_psnr)
        assert run.data.params["encoder"] == "cnn" and run.data.params["masker"] == row.masker
        assert run.data.params["train.epochs"] == "2" and run.data.params["run_id"] == run_id
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert artifacts == {"config.json", "reconstructions.png"}
    assert (out / "tiny" / "mlflow-artifacts").is_dir()

    # a run executed again replaces its MLflow run; probes added later go to the existing runs
    redo = table.index[0]
    (out / "tiny" / "runs" / redo / "metrics.json").unlink()
    again = run_cli("run", suite, "--out", str(out), "--tracker", "mlflow", "--set", "eval.probes=[knn]",
                    "--set", "eval.baselines=[]")
    assert again.exit_code == 0, again.output
    table = summary(out).set_index("run_id")
    now = mlflow_runs(client, "tiny")
    assert set(now) == set(table.index)
    assert now[redo].info.run_id != runs[redo].info.run_id
    kept = table.index[1]
    assert now[kept].info.run_id == runs[kept].info.run_id  # probes added: the same MLflow run, with knn_acc
    assert all(now[r].data.metrics["knn_acc"] == pytest.approx(table.knn_acc[r]) for r in table.index)
    every = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], run_view_type=ViewType.ALL)
    assert len(every) == len(table) + 1  # the replaced one is deleted, not listed


def test_mlflow_tracking_uri_from_params_or_the_environment(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install -e '.[mlflow]')")
    from mlflow.tracking import MlflowClient

    one_run = SUITE.replace("masker: [pixel, {name: patch, params: {mask_patch_size: 4}}]", "masker: [pixel]")
    suite = str(write_suite(tmp_path, one_run))
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory (MLflow's default: ./mlruns)
    env_uri = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env_uri)
    assert run_cli("run", suite, "--out", str(tmp_path / "a"), "--tracker", "mlflow").exit_code == 0
    assert len(mlflow_runs(MlflowClient(env_uri), "tiny")) == 1 and not (tmp_path / "a" / "tiny" / "mlflow.db").exists()
    param_uri = f"sqlite:///{tmp_path / 'param.db'}"
    result = run_cli("run", suite, "--out", str(tmp_path / "b"),
                     "--set", f"trackers=[{{name: mlflow, params: {{tracking_uri: '{param_uri}', experiment: mine}}}}]")
    assert result.exit_code == 0, result.output
    assert len(mlflow_runs(MlflowClient(param_uri), "mine")) == 1
    assert (tmp_path / "b" / "tiny" / "mlflow-artifacts").is_dir() and not (tmp_path / "mlruns").exists()
