"""Executors with the real engines (Ray, submitit's local executor), the suite lock, Ctrl-C,
and workers that rebuild everything from a task."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from mimbench.cli import cli
from mimbench.jobs import PluginSources, Task
from mimbench.folder import SuiteLock

from helpers import run_cli, write_suite_file

SUITE = """
name: tiny
dataset: {name: shapes, params: {num_images: 160}}
image_size: 16
seeds: [0, 1]
train: {epochs: 1, batch_size: 32, log_every: 1}
eval: {reference_masker: {name: patch, params: {ratio: 0.5, mask_patch_size: 4}}, batch_size: 40, probes: [linear, knn]}
grid:
  encoder: [{name: cnn, params: {hidden_dim: 8}}]
  decoder: [linear]
  masker: [pixel, {name: patch, params: {mask_patch_size: 4}}]
  loss: [l1]
"""
METRICS = ["recon_mse", "recon_psnr", "ref_mse", "ref_psnr", "mask_ratio_actual", "linear_acc", "knn_acc",
           "final_loss"]


def write_suite(tmp_path: Path, text: str = SUITE, name: str = "suite.yaml") -> Path:
    return write_suite_file(tmp_path, text, name)


def summary(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "tiny" / "summary.csv").set_index("run_id").sort_index()


def console(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@pytest.fixture(scope="module")
def local_results(tmp_path_factory):
    """The suite under the default executor, with the default threads per run (as Ray and submitit below)."""
    tmp = tmp_path_factory.mktemp("local")
    out = tmp / "out"
    result = run_cli("run", str(write_suite(tmp)), "--out", str(out))
    assert result.exit_code == 0, result.output
    return summary(out)


def test_ray_gives_the_same_numbers_as_local(ray_instance, local_results, tmp_path):
    out = tmp_path / "out"
    result = run_cli("run", str(write_suite(tmp_path)), "--out", str(out), "--executor", "ray")
    assert result.exit_code == 0, result.output
    table = summary(out)
    assert list(table.index) == list(local_results.index) and len(table) == 8  # 4 runs, 4 baselines
    assert (table.status == "done").all()
    pd.testing.assert_frame_equal(table[METRICS], local_results[METRICS])
    assert result.output.count(" done  ") == 8 and (out / "tiny" / "report.md").exists()
    assert ray_instance.is_initialized()  # the executor leaves alone the instance it did not start


def test_submitit_local_executor_runs_the_same_suite(local_results, tmp_path):
    pytest.importorskip("submitit", reason="the slurm extra is not installed (pip install -e '.[slurm]')")
    out = tmp_path / "out"
    result = run_cli("run", str(write_suite(tmp_path)), "--out", str(out), "--executor", "submitit",
                     "--set", "execution.cluster=local", "--set", "execution.poll_seconds=0.2")
    assert result.exit_code == 0, result.output
    table = summary(out)
    assert (table.status == "done").all()
    pd.testing.assert_frame_equal(table[METRICS], local_results[METRICS])
    assert list((out / "tiny" / ".submitit").iterdir())  # submitit's own logs, one folder per array task



def test_the_executor_shortcut_is_exactly_its_set_override():
    from mimbench.suite import load_suite

    raw = {"name": "s", "dataset": "shapes", "grid": {"encoder": "cnn", "decoder": "linear", "masker": "pixel",
                                                       "loss": "l1"},
           "execution": {"executor": "submitit", "threads_per_run": 1, "cluster": "local"}}
    by_flag = load_suite(raw, executor="ray").execution.model_dump()
    by_set = load_suite(raw, ["execution.executor=ray"]).execution.model_dump()
    assert by_flag == by_set == {"executor": "ray", "threads_per_run": 1, "cluster": "local"}
    bare = {key: value for key, value in raw.items() if key != "execution"}
    assert load_suite(bare, executor="ray").execution.model_dump() == {"executor": "ray", "threads_per_run": "auto"}


def test_a_pinned_thread_count_holds_under_every_executor_shortcut(ray_instance, tmp_path):
    """threads_per_run: 1 in the suite: the same numbers and the same recorded threads whether the
    executor comes from the suite, --executor or --set (the shortcut once dropped the whole block)."""
    pytest.importorskip("submitit", reason="the slurm extra is not installed (pip install -e '.[slurm]')")
    text = SUITE.replace("seeds: [0, 1]", "seeds: [0]") + "execution: {threads_per_run: 1}\n"
    suite = str(write_suite(tmp_path, text))
    ways = {"local": [], "--executor ray": ["--executor", "ray"],
            "--set execution.executor=ray": ["--set", "execution.executor=ray"],
            "--executor submitit": ["--executor", "submitit", "--set", "execution.cluster=local",
                                    "--set", "execution.poll_seconds=0.2"]}
    tables = {}
    for way, args in ways.items():
        out = tmp_path / way.replace(" ", "_")
        result = run_cli("run", suite, "--out", str(out), *args)
        assert result.exit_code == 0, (way, result.output)
        tables[way] = summary(out)
        threads = {json.loads(p.read_text())["threads"] for p in (out / "tiny" / "runs").glob("*/config.json")}
        assert threads == {1}, (way, threads)
    for way, table in tables.items():
        pd.testing.assert_frame_equal(table[METRICS], tables["local"][METRICS], obj=way)


STALL_ONCE = '''
import os
import time
from pathlib import Path

import torch
from mimbench.plugin import hookimpl

MARKER = Path({marker!r})


class StallOnce:
    """Pixel masking; on the first training batch anywhere, writes its process id and waits."""

    def __init__(self, ratio: float = 0.6):
        self.ratio = ratio

    def __call__(self, images, generator=None):
        if images.shape[0] == 32 and not MARKER.exists():
            MARKER.write_text(str(os.getpid()))
            time.sleep(300)
        b, _, h, w = images.shape
        return torch.rand(b, h, w, generator=generator, device=images.device) < self.ratio


@hookimpl
def mimbench_register_maskers(register):
    register("stall_once", StallOnce)
'''


def test_a_killed_ray_worker_is_retried_and_a_plugin_file_works_in_workers(ray_instance, tmp_path):
    marker = tmp_path / "worker.pid"
    plugin = tmp_path / "stall_masker.py"
    plugin.write_text(STALL_ONCE.format(marker=str(marker)))
    suite = write_suite(tmp_path, SUITE.replace("seeds: [0, 1]", "seeds: [0]")
                        .replace("masker: [pixel, ", "masker: [stall_once, pixel, "))
    out = tmp_path / "out"
    runner = CliRunner()

    import threading

    holder = {}
    thread = threading.Thread(target=lambda: holder.update(result=runner.invoke(
        cli, ["run", str(suite), "--out", str(out), "--plugin", str(plugin), "--executor", "ray",
              "--set", "execution.max_retries=2"])))
    thread.start()
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    pid = int(marker.read_text())
    assert pid != os.getpid()  # the masker from --plugin ran inside a Ray worker
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    result = holder["result"]
    assert result.exit_code == 0, result.output
    table = summary(out)
    assert len(table) == 5 and (table.status == "done").all()  # 3 runs + 2 baselines, each once
    stalled = table[table.masker == "stall_once"].index[0]
    assert (out / "tiny" / "runs" / stalled / "metrics.json").exists()
    assert not list((out / "tiny" / "runs").glob("*/error.txt"))


def test_a_second_driver_on_the_same_folder_exits_2_naming_the_first(tmp_path):
    suite = write_suite(tmp_path, SUITE.replace("epochs: 1", "epochs: 30"))
    out = tmp_path / "out"
    first = subprocess.Popen([console("mimbench"), "run", str(suite), "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        lock = out / "tiny" / ".lock"
        deadline = time.time() + 120
        while time.time() < deadline and not (lock.exists() and lock.read_text()):
            time.sleep(0.05)
        second = run_cli("run", str(suite), "--out", str(out))
        assert second.exit_code == 2
        assert f"is in use by another mimbench run (pid {first.pid} on {socket.gethostname()}" in second.output
        assert second.output.count("\n") == 1 and "Traceback" not in second.output
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # the lock of the killed driver is stale: the next driver takes it over
    again = run_cli("run", str(suite), "--out", str(out), "--set", "train.epochs=1")
    assert again.exit_code == 0, again.output


def test_the_lock_is_held_in_process_too(tmp_path):
    suite, out = write_suite(tmp_path), tmp_path / "out"
    with SuiteLock(out / "tiny"):
        result = run_cli("run", str(suite), "--out", str(out))
    assert result.exit_code == 2 and f"pid {os.getpid()}" in result.output


def interrupt_mid_suite(command: list[str], runs: Path) -> subprocess.CompletedProcess:
    """Start ``command``, send it SIGINT once its first run has finished, return how it ended."""
    # A shell starts background jobs with SIGINT ignored, and children inherit that: give the driver
    # the default disposition, as a terminal would, however the tests themselves were started.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not list(runs.glob("*/metrics.json")):
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_ctrl_c_stops_the_suite_with_130_and_no_half_written_file(tmp_path):
    suite = write_suite(tmp_path, SUITE.replace("epochs: 1", "epochs: 6").replace("num_images: 160", "num_images: 640"))
    for attempt in range(3):
        out = tmp_path / f"out{attempt}"
        command = [console("mimbench"), "run", str(suite), "--out", str(out)]
        runs = out / "tiny" / "runs"
        stopped = interrupt_mid_suite(command, runs)
        if stopped.returncode != 0:
            break
        # On a loaded machine this process may not get the CPU until the suite is over: then it
        # must have finished every run, and the interrupt is tried again on a fresh folder.
        assert "8 runs: 8 done" in stopped.stdout, stopped.stdout
    assert stopped.returncode == 130, stopped.stderr
    assert "interrupted" in stopped.stderr and "Traceback" not in stopped.stderr
    assert not [p for p in (out / "tiny").rglob("*") if p.name.endswith(".tmp")]
    finished = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/metrics.json")}
    table = pd.read_csv(out / "tiny" / "summary.csv")
    assert 1 <= len(finished) < 8 and (table.status == "done").sum() == len(finished)

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.count("already finished, skipped") == len(finished)
    assert {p: t for p, t in ((p.parent.name, p.stat().st_mtime_ns) for p in runs.glob("*/metrics.json"))
            if p in finished} == finished
    assert (pd.read_csv(out / "tiny" / "summary.csv").status == "done").sum() == 8


def test_a_worker_that_cannot_see_the_suite_folder_fails_its_run_with_one_line(tmp_path):
    from mimbench.planning import plan_suite
    from mimbench.runtime import registry_for
    from mimbench.suite import load_suite
    from mimbench.worker import run_task

    plan = plan_suite(load_suite(str(write_suite(tmp_path))), registry_for(PluginSources()))
    outcome = run_task(Task(plan.runs[0], str(tmp_path / "not-mounted-here"), PluginSources(), "cpu"))
    assert outcome.status == "failed"
    assert outcome.record["error"].startswith(f"the worker on {socket.gethostname()} cannot see the suite folder")
    assert "storage every node sees" in outcome.record["error"]


def test_a_task_survives_pickling_and_runs_in_a_fresh_process(tmp_path):
    """What every remote executor relies on: a task carries everything but the data."""
    import pickle

    from mimbench.planning import plan_suite
    from mimbench.runtime import registry_for
    from mimbench.suite import load_suite

    plugin = tmp_path / "bands.py"
    plugin.write_text(textwrap.dedent('''
        import torch
        from mimbench.plugin import hookimpl

        class Bands:
            """Hide every other row."""
            def __call__(self, images, generator=None):
                b, _, h, w = images.shape
                rows = (torch.arange(h, device=images.device) % 2 == 0)
                return rows[None, :, None].expand(b, h, w).clone()

        @hookimpl
        def mimbench_register_maskers(register):
            register("bands", Bands)
    '''))
    sources = PluginSources.from_cli([str(plugin)], env="")
    suite = load_suite(str(write_suite(tmp_path)), ["grid.masker=[bands]", "seeds=[0]", "eval.probes=[knn]"])
    plan = plan_suite(suite, registry_for(sources))
    (tmp_path / "out" / "tiny").mkdir(parents=True)
    task = Task(plan.runs[0], str(tmp_path / "out" / "tiny"), sources, "cpu", threads=1, show_progress=False)
    (tmp_path / "task.pkl").write_bytes(pickle.dumps(task))
    code = ("import pickle, sys; from mimbench.plugin import run_task; task = pickle.load(open(sys.argv[1], 'rb')); "
            "outcome = run_task(task); print(outcome.status, outcome.record['mask_ratio_actual'])")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "task.pkl")], capture_output=True, text=True,
                          timeout=300, env={k: v for k, v in os.environ.items() if k != "MIMBENCH_PLUGINS"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["done", "0.5"]
    metrics = json.loads((tmp_path / "out" / "tiny" / "runs" / plan.runs[0].run_id / "metrics.json").read_text())
    assert metrics["status"] == "done" and metrics["knn_acc"] > 0


def test_an_executor_whose_extra_is_missing_exits_2_with_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    result = run_cli("run", str(write_suite(tmp_path)), "--dry-run", "--executor", "ray")
    assert result.exit_code == 2
    assert "error: executor 'ray' needs Ray, which is not installed: pip install 'mimbench[ray]'" in result.output
    monkeypatch.setitem(sys.modules, "submitit", None)
    result = run_cli("run", str(write_suite(tmp_path)), "--dry-run", "--executor", "submitit")
    assert result.exit_code == 2 and "pip install 'mimbench[slurm]'" in result.output


def test_executor_params_are_checked_like_any_component(tmp_path):
    suite = str(write_suite(tmp_path))
    unknown = run_cli("run", suite, "--dry-run", "--executor", "local", "--set", "execution.gpus_per_run=1")
    assert unknown.exit_code == 2 and "executor 'local': unknown param 'gpus_per_run'" in unknown.output
    typo = run_cli("run", suite, "--dry-run", "--executor", "rya")
    assert typo.exit_code == 2 and "unknown executor 'rya'; did you mean 'ray'?" in typo.output
    pytest.importorskip("ray")
    bad = run_cli("run", suite, "--dry-run", "--executor", "ray", "--set", "execution.gpus_per_run=-1")
    assert bad.exit_code == 2 and "param 'gpus_per_run' must be >= 0" in bad.output
    listed = run_cli("plugins", "--kind", "executor")
    assert [line.split()[1] for line in listed.output.splitlines()[1:]] == ["local", "ray", "submitit"]


def test_a_plugin_executor_is_used_like_a_builtin(tmp_path):
    plugin = tmp_path / "reverse_executor.py"
    plugin.write_text(textwrap.dedent('''
        from mimbench.plugin import hookimpl, run_task

        class Reversed:
            """Runs the tasks in this process, last first."""
            in_process = True
            threads = None

            def run(self, tasks):
                for task in reversed(tasks):
                    yield task, run_task(task)

            def in_flight(self):
                return 0

            def cancel(self):
                pass

        @hookimpl
        def mimbench_register_executors(register):
            register("reversed", Reversed)
    '''))
    out = tmp_path / "out"
    result = run_cli("run", str(write_suite(tmp_path)), "--out", str(out), "--plugin", str(plugin),
                     "--executor", "reversed", "--set", "seeds=[0]", "--set", "eval.probes=[]")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "seed=0" in line and " done" in line]
    assert [line.split()[1:4] for line in lines] == [["cnn", "/", "patch"], ["cnn", "/", "pixel"]]
    assert list(pd.read_csv(out / "tiny" / "summary.csv").masker) == ["pixel", "patch"]  # suite order


def test_a_third_party_probe_reaches_the_console_line_through_its_declared_columns(tmp_path):
    plugin = tmp_path / "centroid_probe.py"
    plugin.write_text(textwrap.dedent('''
        from mimbench.plugin import hookimpl
        from mimbench.columns import accuracy_columns

        class Centroid:
            """Nearest class mean on pooled features."""
            def __call__(self, context):
                features = context.features()
                labels = features.train_labels
                means = [features.train[labels == c].mean(0) for c in range(context.num_classes)]
                import torch
                predicted = torch.cdist(features.test, torch.stack(means)).argmin(1)
                return {"centroid_acc": (predicted == features.test_labels).float().mean().item()}

            def metric_columns(self):
                return accuracy_columns("centroid_acc", "centroid")

        @hookimpl
        def mimbench_register_probes(register):
            register("centroid", Centroid)
    '''))
    out = tmp_path / "out"
    result = run_cli("run", str(write_suite(tmp_path)), "--out", str(out), "--plugin", str(plugin),
                     "--set", "seeds=[0]", "--set", "eval.probes=[centroid]")
    assert result.exit_code == 0, result.output
    assert result.output.count("  centroid 0.") == 4  # 2 runs and 2 baselines
    declared = json.loads((out / "tiny" / "columns.json").read_text())["columns"]
    assert [c["key"] for c in declared][-1] == "centroid_acc"
    assert "centroid" in (out / "tiny" / "table.md").read_text()


def _tiny_task(tmp_path: Path, lock_token: str, *overrides: str) -> Task:
    from mimbench.planning import plan_suite
    from mimbench.runtime import registry_for
    from mimbench.suite import load_suite

    suite = load_suite(str(write_suite(tmp_path)), ["seeds=[0]", "eval.probes=[knn]", *overrides])
    plan = plan_suite(suite, registry_for(PluginSources()))
    return Task(plan.runs[0], str(tmp_path / "out" / "tiny"), PluginSources(), "cpu", threads=1,
                show_progress=False, lock_token=lock_token)


def test_a_worker_writes_only_while_its_driver_holds_the_folder(tmp_path):
    """A task carries its driver's lock token: with it held the run is written; once the lock is
    released (the driver died) or taken by another driver, the worker writes nothing at all."""
    from mimbench.worker import run_task

    suite_dir = tmp_path / "out" / "tiny"
    with SuiteLock(suite_dir) as lock:
        held = _tiny_task(tmp_path, lock.token)
        assert run_task(held).status == "done"  # the local executor: the same process holds the lock
    run_dir = suite_dir / "runs" / held.job.run_id
    shutil.rmtree(run_dir)
    outcome = run_task(held)  # the driver is gone
    assert outcome.status == "failed" and "no longer holds" in outcome.record["error"], outcome.record
    assert "it stopped" in outcome.record["error"] and not run_dir.exists()
    with SuiteLock(suite_dir):  # another driver now
        outcome = run_task(held)
    assert "another driver took it" in outcome.record["error"] and not run_dir.exists()


def test_an_orphaned_worker_stops_at_its_next_write_once_its_driver_is_gone(tmp_path):
    """A worker mid-training (a Ray worker whose driver was killed) stops at its next epoch end: no
    checkpoint, no metrics.json, no error.txt after the lock is gone, so a new driver never overlaps it."""
    import pickle

    suite_dir = tmp_path / "out" / "tiny"
    lock = SuiteLock(suite_dir).__enter__()
    task = _tiny_task(tmp_path, lock.token, "train.epochs=200", "train.checkpoint_every=1")
    (tmp_path / "task.pkl").write_bytes(pickle.dumps(task))
    code = ("import pickle, sys; from mimbench.plugin import run_task; "
            "outcome = run_task(pickle.load(open(sys.argv[1], 'rb'))); print(outcome.record.get('error'))")
    worker = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "task.pkl")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    run_dir = suite_dir / "runs" / task.job.run_id
    deadline = time.monotonic() + 240
    while not (run_dir / "checkpoint.pt").exists():
        assert worker.poll() is None and time.monotonic() < deadline, worker.communicate()
        time.sleep(0.1)
    lock.__exit__(None, None, None)  # the driver dies (a kill -9 releases its flock the same way)
    stdout, stderr = worker.communicate(timeout=120)
    assert worker.returncode == 0, stderr
    assert "no longer holds" in stdout and "it stopped" in stdout, stdout
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "error.txt").exists()
    assert len((run_dir / "history.csv").read_text().splitlines()) < 150  # stopped early, not after 200 epochs


def test_ray_runs_from_a_folder_that_holds_a_mimbench_folder(tmp_path):
    """Ray puts the driver's working folder first on its workers' sys.path: started from the parent of
    a clone (a folder named mimbench beside the suite), the workers still import the installed mimbench."""
    pytest.importorskip("ray")
    (tmp_path / "mimbench" / "docs").mkdir(parents=True)  # a clone's root: no __init__.py, a namespace package
    suite = write_suite(tmp_path, SUITE.replace("seeds: [0, 1]", "seeds: [0]"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with tempfile.TemporaryDirectory(prefix="mbray", dir="/tmp") as ray_dir:  # short: Ray's socket paths
        env["RAY_TMPDIR"] = ray_dir
        result = subprocess.run([console("mimbench"), "run", suite.name, "--out", "out", "--executor", "ray"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert set(summary(tmp_path / "out").status) == {"done"}


def test_a_worker_that_cannot_import_mimbench_is_told_why():
    from mimbench_plugins.ray_executor import import_failure

    ray_text = ("ray::_execute() (pid=1, ip=192.0.2.2)\nRuntimeError: The remote function failed to import on the "
                "worker. This may be because needed library dependencies are not installed in the worker "
                "environment or cannot be found from sys.path ['/home/me']:\n\nray::_execute()\n"
                "ModuleNotFoundError: No module named 'mimbench.plugin'")
    line = import_failure(ray_text)
    assert line.startswith("a Ray worker could not import mimbench's task (ModuleNotFoundError: No module named "
                           "'mimbench.plugin')") and os.getcwd() in line and "\n" not in line
    assert import_failure("ValueError: something else") is None
