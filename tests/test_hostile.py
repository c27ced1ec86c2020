"""Hostile inputs, each one line on stderr with the right exit code (2 the input, 1 the machine,
130 Ctrl-C, 143 SIGTERM): decompression bombs, plugins that exit or interrupt at import, an empty
$MIMBENCH_PLUGINS, linked run folders, diverged or damaged runs, a cut summary, a long name; and a
driver stopped by Ctrl-C or SIGTERM, which rewrites its summary and leaves no Ray process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import mimbench
from mimbench.cli import cli
from mimbench.errors import ConfigError
from mimbench.folder import SuiteLock
from mimbench.plugins import load_plugins

from helpers import run_cli, write_suite_file


@pytest.fixture(autouse=True)
def ctrl_c_reaches_python():
    """Ctrl-C as a terminal delivers it, whatever launched the tests: a shell starting pytest in the
    background (``pytest &``) makes it ignore SIGINT, and its children inherit that, so no
    KeyboardInterrupt would ever come. A Python handler is reset to the default in every child."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


SUITE = """
name: tiny
dataset: {name: shapes, params: {num_images: 64}}
image_size: 16
seeds: [0]
train: {epochs: 1, batch_size: 32, log_every: 1, warmup_epochs: 0}
eval: {batch_size: 32, probes: [], baselines: []}
grid:
  encoder: [{name: cnn, params: {hidden_dim: 4}}]
  decoder: [linear]
  masker: [pixel]
  loss: [l1]
"""

NAN_LOSS = '''
from mimbench.plugin import hookimpl

def nan_l1(pred, target, mask):
    return (pred - target).abs().mean() * float("nan")

@hookimpl
def mimbench_register_losses(register):
    register("nan_l1", lambda: nan_l1)
'''


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def one_error(result, code: int = 2) -> str:
    """The one line on stderr of a command that exited with ``code``."""
    lines = stderr_lines(result)
    assert result.exit_code == code and len(lines) == 1 and lines[0].startswith("error: "), \
        (result.exit_code, result.output)
    return lines[0]


def finished(tmp_path: Path, text: str = SUITE, *extra: str) -> Path:
    """A tiny suite run to the end; its suite folder."""
    suite = write_suite_file(tmp_path, text)
    result = run_cli("run", str(suite), "--out", str(tmp_path / "results"), *extra)
    assert result.exit_code == 0, result.output
    return tmp_path / "results" / "tiny"


# --- input files ----------------------------------------------------------------------------------

@pytest.mark.parametrize("side", [14_000, 10_000], ids=["over-twice-the-limit", "over-the-limit"])
def test_a_decompression_bomb_in_an_image_folder_is_refused_naming_it(tmp_path, side):
    """PIL raises DecompressionBombError over twice its limit and only warns (then decodes it all)
    over the limit: both are refused, before decoding, in one line naming the file."""
    from PIL import Image

    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (40 * i, 80, 120)).save(folder / f"{i}.png")
    bomb = tmp_path / "images" / "train" / "b" / "bomb.png"
    Image.new("1", (side, side)).save(bomb)  # ~100-200 M pixels in a few KB
    assert bomb.stat().st_size < 100_000 and side * side > Image.MAX_IMAGE_PIXELS
    suite = write_suite_file(tmp_path, SUITE.replace("{name: shapes, params: {num_images: 64}}",
                                                     f"{{name: imagefolder, params: {{root: '{tmp_path / 'images'}'}}}}")
                             .replace("image_size: 16", "image_size: 8"))
    started = time.monotonic()
    line = one_error(run_cli("run", str(suite), "--out", str(tmp_path / "results")))
    assert f"{bomb}: refused, a possible decompression bomb: {side * side} pixels" in line, line
    assert f"PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}" in line
    assert time.monotonic() - started < 60  # not decoded


def test_a_300_character_suite_name_is_bad_input_saying_the_limit(tmp_path):
    suite = write_suite_file(tmp_path, SUITE.replace("name: tiny", f"name: {'n' * 300}"))
    line = one_error(run_cli("run", str(suite), "--out", str(tmp_path / "results"), "--dry-run"))
    assert f"error: {suite}: name: String should have at most 100 characters" in line, line
    assert not (tmp_path / "results").exists()


def test_a_summary_cut_mid_row_is_refused_in_one_line(tmp_path):
    suite_dir = finished(tmp_path, SUITE.replace("seeds: [0]", "seeds: [0, 1]"))
    summary = suite_dir / "summary.csv"
    whole = summary.read_bytes()
    summary.write_bytes(whole[:len(whole) - 40])  # the last row loses its end
    line = one_error(run_cli("report", str(suite_dir)))
    assert f"{summary}: cut mid-row" in line and "rewrites it from the run folders" in line
    with pytest.raises(ConfigError, match="cut mid-row"):
        mimbench.load(suite_dir)
    again = run_cli("run", str(tmp_path / "suite.yaml"), "--out", str(tmp_path / "results"))  # as the line says
    assert again.exit_code == 0 and summary.read_bytes() == whole
    assert run_cli("report", str(suite_dir)).exit_code == 0


# --- plugins --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "says"), [
    ("import sys\nsys.exit(3)\n", "it called sys.exit(3) at import"),
    ("raise SystemExit(0)\n", "it called sys.exit(0) at import"),
    ("raise KeyboardInterrupt\n", "it raised KeyboardInterrupt at import"),
], ids=["sys.exit(3)", "SystemExit(0)", "KeyboardInterrupt"])
def test_a_plugin_that_exits_or_interrupts_at_import_is_a_load_failure(tmp_path, code, says):
    plugin = tmp_path / "rude_plugin.py"
    plugin.write_text(code)
    named = CliRunner().invoke(cli, ["plugins", "--kind", "executor", "--plugin", str(plugin)])
    assert one_error(named) == f"error: --plugin {plugin}: failed to load: {says}"
    from_env = CliRunner().invoke(cli, ["plugins", "--kind", "executor"], env={"MIMBENCH_PLUGINS": str(plugin)})
    assert from_env.exit_code == 0 and "local" in from_env.stdout
    assert stderr_lines(from_env) == [f"warning: plugin {str(plugin)!r} failed to load: {says}"]
    suite = write_suite_file(tmp_path, SUITE)
    refused = CliRunner().invoke(cli, ["run", str(suite), "--out", str(tmp_path / "results"), "--plugin", str(plugin)])
    assert one_error(refused).endswith(says) and not (tmp_path / "results").exists()


def test_ctrl_c_while_a_plugin_loads_still_stops_mimbench(tmp_path):
    """A KeyboardInterrupt the plugin raises is its failure; the user's Ctrl-C (SIGINT) is not."""
    plugin = tmp_path / "slow_plugin.py"
    plugin.write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(5)\n")
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        load_plugins([str(plugin)], use_env=False)
    assert signal.getsignal(signal.SIGINT) is handler


@pytest.mark.parametrize("value", [":::", " : ", ":"])
def test_mimbench_plugins_naming_no_plugin_is_one_warning(value):
    result = CliRunner().invoke(cli, ["plugins", "--kind", "executor"], env={"MIMBENCH_PLUGINS": value})
    assert result.exit_code == 0 and "local" in result.stdout
    [line] = stderr_lines(result)
    assert line.startswith(f"warning: $MIMBENCH_PLUGINS is {value!r}, which names no plugin") and "ignored" in line


# --- run folders ----------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["inside", "nowhere"])
def test_an_unfinished_run_folder_that_is_a_link_is_one_line(tmp_path, target):
    suite_dir = finished(tmp_path)
    [run] = (suite_dir / "runs").iterdir()
    kept = suite_dir / "kept"
    run.rename(kept)
    (kept / "metrics.json").unlink()  # unfinished: it would be emptied and run again
    run.symlink_to(Path("..") / ("kept" if target == "inside" else "nowhere"))
    before = sorted(p.name for p in kept.iterdir())
    line = one_error(run_cli("run", str(tmp_path / "suite.yaml"), "--out", str(tmp_path / "results")))
    assert f"{run} is a symbolic link (to ../" in line and "its run has not finished" in line, line
    assert "replace the link with the folder it points to" in line
    assert sorted(p.name for p in kept.iterdir()) == before and run.is_symlink()
    with SuiteLock(suite_dir):  # released
        pass


def test_a_finished_run_folder_that_is_a_link_is_still_skipped(tmp_path):
    suite_dir = finished(tmp_path)
    [run] = (suite_dir / "runs").iterdir()
    run.rename(suite_dir / "kept")
    run.symlink_to(Path("..") / "kept")
    result = run_cli("run", str(tmp_path / "suite.yaml"), "--out", str(tmp_path / "results"))
    assert result.exit_code == 0 and "already finished, skipped" in result.output


def test_out_that_is_a_broken_link_is_one_line(tmp_path):
    (tmp_path / "results").symlink_to(tmp_path / "gone")
    suite = write_suite_file(tmp_path, SUITE)
    line = one_error(run_cli("run", str(suite), "--out", str(tmp_path / "results")))
    assert "a broken symbolic link (to" in line and str(tmp_path / "gone") in line


# --- diverged and damaged runs --------------------------------------------------------------------

def test_export_of_a_diverged_run_writes_nothing(tmp_path):
    plugin = tmp_path / "nan_loss.py"
    plugin.write_text(NAN_LOSS)
    suite_dir = finished(tmp_path, SUITE.replace("loss: [l1]", "loss: [nan_l1]"), "--plugin", str(plugin))
    [run] = (suite_dir / "runs").iterdir()
    assert json.loads((run / "metrics.json").read_text())["status"] == "diverged"
    line = one_error(run_cli("export", str(run), "--plugin", str(plugin)))
    assert f"{run}: the run diverged" in line and "nothing was written" in line
    assert not (run / "backbone.pt").exists() and not (run / "backbone.json").exists()


def test_export_refuses_non_finite_weights_whatever_the_status(tmp_path):
    import torch

    suite_dir = finished(tmp_path)
    [run] = (suite_dir / "runs").iterdir()
    state = torch.load(run / "encoder.pt")
    name = next(iter(state))
    state[name] = torch.full_like(state[name], float("inf"))
    torch.save(state, run / "encoder.pt")
    line = one_error(run_cli("export", str(run)))
    assert "hold NaN or infinite values" in line and repr(name) in line
    assert not (run / "backbone.pt").exists()


def test_adding_a_probe_to_a_run_with_a_garbled_encoder_fails_that_run_in_one_line(tmp_path):
    suite_dir = finished(tmp_path)
    [run] = (suite_dir / "runs").iterdir()
    (run / "encoder.pt").write_bytes(b"\x80\x04garbage bytes, not a state_dict")
    metrics = (run / "metrics.json").read_bytes()
    result = run_cli("run", str(tmp_path / "suite.yaml"), "--out", str(tmp_path / "results"),
                     "--set", "eval.probes=[knn]")
    assert result.exit_code == 1, result.output
    [line] = [line for line in result.output.splitlines() if run.name in line and "probes" in line]
    assert f"adding probes knn FAILED: {run / 'encoder.pt'} cannot be loaded (UnpicklingError)" in line, line
    assert "weights_only" not in result.output and len(line) < 420
    assert "1 run: 1 done (1 without the probes that could not be added)" in result.output
    assert (run / "metrics.json").read_bytes() == metrics  # its earlier results kept


# --- Ctrl-C and SIGTERM ---------------------------------------------------------------------------

def test_ctrl_c_during_start_up_exits_130_in_one_line(tmp_path, monkeypatch):
    import mimbench.planning

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mimbench.planning, "check_plan", interrupted)
    suite = write_suite_file(tmp_path, SUITE)
    handler = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(cli, ["run", str(suite), "--out", str(tmp_path / "results")])
    assert result.exit_code == 130 and "Aborted" not in result.output
    assert stderr_lines(result) == ["interrupted (Ctrl-C): stopped before it finished; what was finished is kept: "
                                    "run the same command again"]
    assert signal.getsignal(signal.SIGTERM) is handler  # mimbench run's handler is gone


def test_ctrl_c_during_the_report_exits_130_in_one_line(tmp_path, monkeypatch):
    import mimbench.report

    suite_dir = finished(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mimbench.report, "write_report", interrupted)
    for args in (["report", str(suite_dir)], ["run", str(tmp_path / "suite.yaml"), "--out", str(tmp_path / "results")]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 130 and "Aborted" not in result.output, result.output
        assert [line for line in stderr_lines(result) if line.startswith("interrupted")] == \
            ["interrupted (Ctrl-C): stopped before it finished; what was finished is kept: run the same command again"]


def test_the_sigterm_handler_lasts_only_as_long_as_mimbench_run(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    finished(tmp_path)
    assert signal.getsignal(signal.SIGTERM) is before


LONG = SUITE.replace("seeds: [0]", "seeds: [0, 1]").replace("epochs: 1,", "epochs: 400,")


def descendants(pid: int) -> set[int]:
    """The processes below ``pid`` now (from /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop_mid_run(tmp_path: Path, sig: int, *extra: str, env: dict[str, str] | None = None):
    """``mimbench run`` of a long suite in a subprocess, sent ``sig`` once a run has trained an epoch;
    returns (the finished process, its stderr, the processes it had started by then)."""
    suite = write_suite_file(tmp_path, LONG)
    out = tmp_path / "results"
    process = subprocess.Popen([sys.executable, "-m", "mimbench", "run", str(suite), "--out", str(out), *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 240
    while not list((out / "tiny" / "runs").glob("*/history.csv")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    started = descendants(process.pid)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    return process, stderr, started


@pytest.mark.parametrize(("sig", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C"),
                                                   (signal.SIGHUP, 129, "SIGHUP")])
def test_sigterm_is_handled_as_ctrl_c_locally(tmp_path, sig, code, name):
    """And SIGHUP (a closed terminal or SSH session): its default would end the driver with no summary."""
    process, stderr, _ = stop_mid_run(tmp_path, sig)
    assert process.returncode == code, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"interrupted ({name}): the runs in flight were stopped"), stderr[-2000:]
    assert "Traceback" not in stderr
    summary = (tmp_path / "results" / "tiny" / "summary.csv").read_text()  # rewritten on the way out
    assert summary.count(",pending,") == 2
    with SuiteLock(tmp_path / "results" / "tiny"):
        pass


@pytest.fixture
def ray_temp_dir():
    pytest.importorskip("ray")
    import shutil

    folder = Path(tempfile.mkdtemp(prefix="mbray", dir="/tmp"))  # short: Ray's socket paths
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "Ctrl-C"])
def test_a_driver_stopped_mid_run_leaves_no_ray_process_behind(tmp_path, ray_temp_dir, sig, code):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(ray_temp_dir)
    process, stderr, started = stop_mid_run(tmp_path, sig, "--executor", "ray", env=env)
    assert process.returncode == code, stderr[-2000:]
    assert "interrupted (" in stderr and "Traceback" not in stderr and "SIGTERM received" not in stderr
    assert len(started) >= 3, "Ray's processes should have been started by the driver"
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:80] for pid in started if alive(pid)}
    assert not left, left
    assert (tmp_path / "results" / "tiny" / "summary.csv").read_text().count(",pending,") == 2


@pytest.mark.parametrize("override, says", [
    ("train.checkpoint_every=true", "train.checkpoint_every: true/false is not allowed here"),
    ("train.budget_flops=true", "train.budget_flops: true/false is not allowed here"),
    ("train.epochs=false", "train.epochs: true/false is not allowed here"),
    ("train.grad_clip=false", "train.grad_clip: true/false is not allowed here"),
    ("execution.threads_per_run=true", "execution.threads_per_run: true/false is not allowed here"),
    ("seeds=[0, true]", "seeds.1: true/false is not allowed here"),
    ("eval.labels_per_class=true", "eval.labels_per_class: true/false is not allowed here"),
    ("train.budget_flops=1e30", "steps of"),
])
def test_a_boolean_for_a_number_and_a_budget_that_cannot_be_planned_are_refused_before_compute(override, says):
    """true is never read as 1 (a checkpoint every epoch, a budget of 1 FLOP), and a budget of more
    steps than a count holds is refused by the dry run, not by every run failing later."""
    line = one_error(CliRunner().invoke(cli, ["run", "--dry-run", "--set", override]))
    assert says in line, line


def test_booleans_stay_allowed_where_a_key_takes_one():
    result = CliRunner().invoke(cli, ["run", "--dry-run", "--set", "train.keep_checkpoint=true",
                                      "--set", "train.augment={flip: false}", "--set", "seeds=[0]"])
    assert result.exit_code == 0, result.output


# --- sizes: declared ranges and the pre-flight estimate --------------------------------------------

@pytest.mark.parametrize("override, says", [
    ("grid.target=[{name: hog, params: {bins: 100000000}}]",
     "target 'hog': param 'bins' must be >= 2, <= 360, got 100000000 (the range its plugin declares)"),
    ("dataset={name: fashion-mosaic, params: {max_items: 1000000}}",
     "dataset 'fashion-mosaic': param 'max_items' must be >= 1, <= 16, got 1000000"),
    ("grid.encoder=[{name: swin, params: {depths: [2, 1000], heads: [3, 6]}}]",
     "encoder 'swin': param 'depths' item 1 must be >= 1, <= 256, got 1000"),
    ("dataset={name: fashion-mnist, params: {train_images: 70000}}",
     "dataset 'fashion-mnist': param 'train_images' must be >= 1, <= 60000, got 70000"),
    ("eval.probes=[{name: knn, params: {layer: 5000}}]", "probe 'knn': param 'layer' must be >= 0, <= 1023"),
    ("grid.encoder=[{name: vit, params: {dim: 8192, depth: 256, heads: 8}}]",
     "206.2 billion parameters need at least 3.0 TiB to train"),
])
def test_a_size_out_of_its_declared_range_or_beyond_the_machine_is_refused_before_compute(override, says):
    """A param that sizes memory or time is refused outside the range its component declares (also
    an item of a list, an optional param); a model whose training state cannot fit is refused from
    its shapes on the meta device, before anything is allocated."""
    line = one_error(CliRunner().invoke(cli, ["run", "--dry-run", "--set", override]))
    assert says in line, line


def test_every_int_param_of_a_builtin_declares_a_finite_range():
    """The built-ins' counts and sizes all declare their range (the rule a plugin author can follow)."""
    from mimbench.registry import Registry

    unbounded = [f"{c.kind} {c.name}: {name}" for c in Registry(load_plugins(use_env=False)).all()
                 for name, p in c.params_summary().items()
                 if "int" in p["type"].split(" | ") and ("<" not in p.get("range", "") or ">" not in p.get("range", ""))]
    assert not unbounded, unbounded


RANGED_PLUGIN = '''
from typing import Annotated
import torch
from mimbench.plugin import Interval, hookimpl

class Bands:
    """Hide bands of rows."""
    def __init__(self, band: Annotated[int, Interval(ge=1, le=64)] = 4):
        self.band = band
    def __call__(self, images, generator=None):
        b, _, h, w = images.shape
        return (torch.arange(h, device=images.device) // self.band % 2 == 0)[None, :, None].expand(b, h, w)

@hookimpl
def mimbench_register_maskers(register):
    register("bands", Bands)
'''


def test_a_plugin_declares_the_range_of_its_own_param(tmp_path):
    plugin = tmp_path / "bands.py"
    plugin.write_text(RANGED_PLUGIN)
    listed = CliRunner().invoke(cli, ["plugins", "--plugin", str(plugin), "--kind", "masker", "--params"])
    assert "band: int (>= 1, <= 64) = 4" in listed.output, listed.output
    line = one_error(CliRunner().invoke(cli, ["run", "--dry-run", "--plugin", str(plugin),
                                              "--set", "grid.masker=[{name: bands, params: {band: 65}}]"]))
    assert "masker 'bands': param 'band' must be >= 1, <= 64, got 65" in line, line
    result = CliRunner().invoke(cli, ["run", "--dry-run", "--plugin", str(plugin),
                                      "--set", "grid.masker=[{name: bands, params: {band: 64}}]"])
    assert result.exit_code == 0, result.output


def _sigterm_caught(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM now (its SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def _ray_started(pid: int) -> bool:
    return any(b"raylet" in Path(f"/proc/{p}/cmdline").read_bytes() for p in descendants(pid) if alive(p))


@pytest.mark.parametrize("moment", ["loading", "ray-start", "report"])
def test_sigterm_at_any_moment_under_ray_exits_143_leaving_no_ray_process(tmp_path, ray_temp_dir, moment):
    """While the CLI loads, while Ray starts (ray.init is held whole, then the signal handled), and
    once the runs are done (Ray shutting down, the report): one line, exit 143, the lock released,
    and no process the driver started still running 10 s later."""
    text = LONG if moment != "report" else SUITE.replace("seeds: [0]", "seeds: [0, 1]")
    suite = write_suite_file(tmp_path, text)
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(ray_temp_dir)
    process = subprocess.Popen([sys.executable, "-m", "mimbench", "run", str(suite), "--out", str(out),
                                "--executor", "ray"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ready = {"loading": lambda: _sigterm_caught(process.pid),
             "ray-start": lambda: _ray_started(process.pid),
             "report": lambda: (out / "tiny" / "summary.csv").is_file()
             and (out / "tiny" / "summary.csv").read_text().count(",done,") == 2}[moment]
    started, deadline = set(), time.monotonic() + 240
    while not ready():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        started |= descendants(process.pid)
        time.sleep(0.01)
    started |= descendants(process.pid)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    lines = [line for line in stderr.splitlines() if line.strip() and "Token authentication" not in line]
    assert process.returncode == 143, stderr[-2000:]
    assert lines and lines[-1].startswith("interrupted (SIGTERM)") and "Traceback" not in stderr, stderr[-2000:]
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in started if alive(pid)]
    if (out / "tiny").is_dir():
        with SuiteLock(out / "tiny"):
            pass


def test_a_sigterm_lost_inside_an_ignored_callback_while_loading_still_stops_with_143(monkeypatch, capsys):
    """A signal handler's exception raised while Python runs a callback whose errors it ignores (an
    import lock's weakref callback) is lost; the entry point keeps the signal and stops anyway:
    one line, exit 143, nothing printed about an ignored exception."""
    import types
    import weakref

    import mimbench.__main__ as entry

    class Loading(types.ModuleType):
        def __getattr__(self, name):  # `from mimbench.cli import main`, with a signal inside a callback
            class Held:
                pass

            def callback(_):
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(10_000):  # the handler runs between these bytecodes, inside the callback
                    pass

            held = Held()
            reference = weakref.ref(held, callback)  # noqa: F841 (kept alive until the end of this call)
            del held
            return lambda: None

    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    monkeypatch.setitem(sys.modules, "mimbench.cli", Loading("mimbench.cli"))
    monkeypatch.setattr(entry, "_RECEIVED", [])
    try:
        with pytest.raises(SystemExit) as stopped:
            entry.main()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert stopped.value.code == 143
    err = capsys.readouterr().err
    assert err == "interrupted (SIGTERM): stopped while starting, before anything was done\n", err
