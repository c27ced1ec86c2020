"""Bad input, damaged files and a refusing machine: one line, the promised exit code, no
traceback, and nothing already written lost or changed.

One test (or a few) per class of failure; ``tests/test_fuzz.py`` mutates valid suites at random.
Exit codes: 2 for bad input (a suite, a value, a ``--plugin``, a damaged input file), 1 for the
machine refusing (disk full, no permission). Damaged run folders are not errors: they are set
aside under ``damaged/`` and run again.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import mimbench_plugins
from mimbench import folder as store
from mimbench.folder import RunFolder, files as folder_files, run as run_files
from mimbench.folder.summary import summary_row
from mimbench.cli import cli
from mimbench.errors import ConfigError
from mimbench.specs import Component, EvalSpec, RunSpec
from mimbench.schema import TrainConfig
from mimbench.plugins import ENV_VAR
from mimbench.suite import load_suite

TINY = {
    "name": "tiny",
    "dataset": {"name": "shapes", "params": {"num_images": 96}},
    "image_size": 16,
    "seeds": [0],
    "train": {"epochs": 1, "batch_size": 32, "warmup_epochs": 0},  # no warm-up warning on stderr
    "eval": {"probes": []},
    "grid": {"encoder": [{"name": "cnn", "params": {"hidden_dim": 4}}], "decoder": ["linear"],
             "masker": ["pixel", {"name": "patch", "params": {"mask_patch_size": 4}}], "loss": ["l1"]},
}
BROKEN_PLUGIN = "import mbt_no_such_dependency\n"


def _modes_bind() -> bool:
    """Whether file modes stop this process from writing (not for root, nor with CAP_DAC_OVERRIDE)."""
    folder = Path(tempfile.mkdtemp())
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except PermissionError:
        return True
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)
    return False


MODES_BIND = _modes_bind()
needs_modes = pytest.mark.skipif(not MODES_BIND, reason="this user (root) writes whatever the file modes say")


def invoke(*args: str, env: dict[str, str] | None = None):
    try:  # click < 8.2 mixes stderr into the output unless told not to
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    return runner.invoke(cli, list(args), env=env)


def one_line(result, code: int) -> str:
    """Assert exit ``code`` with exactly one short ``error:`` line on stderr and no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert len(lines[0]) <= 400, len(lines[0])
    return lines[0]


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def write_suite(folder: Path, suite: dict | None = None, name: str = "tiny.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(suite or TINY, sort_keys=False))
    return path


def tiny(**changes) -> dict:
    return {**json.loads(json.dumps(TINY)), **changes}


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def finished_template(tmp_path_factory) -> Path:
    """A folder with ``tiny.yaml`` and its finished results in ``results/tiny`` (2 runs), made once."""
    folder = tmp_path_factory.mktemp("finished")
    result = invoke("run", str(write_suite(folder)), "--out", str(folder / "results"))
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture
def finished(finished_template, tmp_path) -> Path:
    """A copy of the finished suite for one test: returns the folder holding tiny.yaml and results/."""
    target = tmp_path / "suite"
    shutil.copytree(finished_template, target)
    return target


def run_ids(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "results" / "tiny" / "runs").iterdir())


# ------------------------------------------------------------------------------------------
# damaged data files
# ------------------------------------------------------------------------------------------


@pytest.fixture
def data_copy(tmp_path) -> Path:
    """The embedded Fashion-MNIST subset copied to a folder of its own, to damage."""
    target = tmp_path / "fmnist"
    shutil.copytree(Path(mimbench_plugins.__file__).parent / "data" / "fashion-mnist-mini", target)
    return target


def fashion_suite(folder: Path, root: Path) -> Path:
    return write_suite(folder, tiny(dataset={"name": "fashion-mnist", "params": {"root": str(root)}}, image_size=28))


def test_an_intact_copy_of_the_data_dry_runs(tmp_path, data_copy):
    result = invoke("run", str(fashion_suite(tmp_path, data_copy)), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "5000 train / 1000 test images" in result.stdout


def test_a_gzip_crc_error_names_the_file(tmp_path, data_copy):
    damaged = data_copy / "train-labels-idx1-ubyte.gz"
    raw = bytearray(damaged.read_bytes())
    raw[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    damaged.write_bytes(bytes(raw))
    with pytest.raises(gzip.BadGzipFile):
        gzip.decompress(bytes(raw))
    line = one_line(invoke("run", str(fashion_suite(tmp_path, data_copy)), "--dry-run"), 2)
    assert str(damaged) in line and "damaged gzip file" in line and "CRC check failed" in line


def test_a_truncated_gzip_names_the_file_instead_of_aborted(tmp_path, data_copy):
    damaged = data_copy / "t10k-images-idx3-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    result = invoke("run", str(fashion_suite(tmp_path, data_copy)), "--dry-run")
    line = one_line(result, 2)
    assert "Aborted" not in result.output
    assert str(damaged) in line and "damaged gzip file" in line


def test_a_truncated_idx_inside_a_good_gzip_names_the_file(tmp_path, data_copy):
    damaged = data_copy / "train-images-idx3-ubyte.gz"
    damaged.write_bytes(gzip.compress(gzip.decompress(damaged.read_bytes())[:1000]))
    line = one_line(invoke("run", str(fashion_suite(tmp_path, data_copy)), "--dry-run"), 2)
    assert str(damaged) in line and "needs" in line


# ------------------------------------------------------------------------------------------
# damaged run folders
# ------------------------------------------------------------------------------------------

DAMAGES = {
    "metrics-not-json": (store.METRICS_FILE, b'{"status": "done", "recon_mse": 0.0', "is not JSON"),
    "metrics-not-utf8": (store.METRICS_FILE, b'\xff\xfe{"status": "done"}', "is not UTF-8"),
    "metrics-a-list": (store.METRICS_FILE, b"[1, 2, 3]", "holds a JSON list, not an object"),
    "metrics-no-status": (store.METRICS_FILE, b'{"recon_mse": 0.1}', "has status None"),
    "config-not-json": (store.CONFIG_FILE, b"\x00\x01\x02", "config.json is not JSON"),
    "config-wrong-shape": (store.CONFIG_FILE, b'{"eval": {"probes": "linear"}}', "is not a run config"),
}


@pytest.mark.parametrize("damage", list(DAMAGES), ids=list(DAMAGES))
def test_a_damaged_run_folder_is_set_aside_and_run_again(finished, damage):
    name, content, reason = DAMAGES[damage]
    damaged_id, intact_id = run_ids(finished)
    suite_dir = finished / "results" / "tiny"
    (suite_dir / "runs" / damaged_id / name).write_bytes(content)
    before = checksums(suite_dir / "runs" / damaged_id)
    intact = checksums(suite_dir / "runs" / intact_id)

    result = invoke("run", str(finished / "tiny.yaml"), "--out", str(finished / "results"))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, warnings
    assert f"run {damaged_id}" in warnings[0] and reason in warnings[0] and "damaged/" in warnings[0]
    # Kept aside whole, byte for byte; the run was done again; the other run was not touched.
    assert checksums(suite_dir / "damaged" / damaged_id) == before
    assert RunFolder(suite_dir / "runs" / damaged_id).finished_record()["status"] == "done"
    assert checksums(suite_dir / "runs" / intact_id) == intact
    assert result.stdout.count("already finished, skipped") == 1
    summary = (suite_dir / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and all(",done," in line for line in summary[1:])


def test_a_run_folder_damaged_twice_is_kept_both_times(finished):
    damaged_id = run_ids(finished)[0]
    suite_dir = finished / "results" / "tiny"
    for attempt in range(2):
        (suite_dir / "runs" / damaged_id / store.METRICS_FILE).write_text(f"damaged {attempt}")
        result = invoke("run", str(finished / "tiny.yaml"), "--out", str(finished / "results"))
        assert result.exit_code == 0, result.output
    assert (suite_dir / "damaged" / damaged_id / store.METRICS_FILE).read_text() == "damaged 0"
    assert (suite_dir / "damaged" / f"{damaged_id}.2" / store.METRICS_FILE).read_text() == "damaged 1"


def test_an_unreadable_metrics_file_is_set_aside(finished):
    damaged_id = run_ids(finished)[0]
    metrics = finished / "results" / "tiny" / "runs" / damaged_id / store.METRICS_FILE
    metrics.unlink()
    metrics.mkdir()  # reading it fails with an OSError, for root too (unlike chmod 000)
    result = invoke("run", str(finished / "tiny.yaml"), "--out", str(finished / "results"))
    assert result.exit_code == 0, result.output
    assert f"warning: run {damaged_id}" in result.stdout and "metrics.json cannot be read" in result.stdout
    assert (finished / "results" / "tiny" / "damaged" / damaged_id / store.METRICS_FILE).is_dir()


@needs_modes
def test_a_metrics_file_without_read_permission_is_set_aside(finished):
    damaged_id = run_ids(finished)[0]
    metrics = finished / "results" / "tiny" / "runs" / damaged_id / store.METRICS_FILE
    metrics.chmod(0)
    result = invoke("run", str(finished / "tiny.yaml"), "--out", str(finished / "results"))
    assert result.exit_code == 0, result.output
    assert "metrics.json cannot be read (Permission denied)" in result.stdout


def test_report_names_every_run_it_cannot_read(finished):
    first, second = run_ids(finished)
    suite_dir = finished / "results" / "tiny"
    (suite_dir / "runs" / first / store.METRICS_FILE).write_text("NaN garbage")
    (suite_dir / "runs" / second / store.CONFIG_FILE).write_bytes(b"\xff")
    (suite_dir / "runs" / second / store.HISTORY_FILE).write_text("epoch,loss\n1,abc\n")
    runs_before = checksums(suite_dir / "runs")
    result = invoke("report", str(suite_dir))
    assert result.exit_code == 0, result.output
    warnings = {line.split()[2]: line for line in result.stderr.splitlines() if line.startswith("warning: run ")}
    assert len(warnings) == 2, result.stderr
    assert "metrics.json is not JSON" in warnings[first]
    assert "config.json is not UTF-8" in warnings[second] and "history.csv cannot be read" in warnings[second]
    assert first in (suite_dir / "report.md").read_text() and second in (suite_dir / "report.md").read_text()
    assert checksums(suite_dir / "runs") == runs_before


def test_a_damaged_error_file_does_not_stop_the_summary(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / store.ERROR_FILE).write_bytes(b"Traceback\n\xff\xfe broken \x00\n")
    components = {axis: Component("x") for axis in ("encoder", "decoder", "masker", "loss")}
    evaluation = EvalSpec(0, 512, None, (), None, None)
    run = RunSpec(Component("shapes"), 16, 0, TrainConfig(), evaluation, data=None, run_id="abc", **components)
    row = summary_row(run, RunFolder(folder))
    assert row["status"] == "failed" and "broken" in row["error"]


# ------------------------------------------------------------------------------------------
# the machine refuses: no permission, disk full (exit 1, one line, nothing changed)
# ------------------------------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_changes_nothing(finished, monkeypatch):
    suite_dir = finished / "results" / "tiny"
    before = checksums(suite_dir)

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(folder_files.os, "fsync", no_space)
    result = invoke("run", str(finished / "tiny.yaml"), "--out", str(finished / "results"), "--set", "seeds=[0, 1]")
    line = one_line(result, 1)
    assert "No space left on device" in line and str(suite_dir) in line
    assert checksums(suite_dir) == before
    assert not [p for p in suite_dir.rglob("*.tmp")]


def test_a_full_disk_mid_run_is_one_line(finished, monkeypatch):
    """The suite file is written, then the disk fills while a new run writes its files."""
    suite_dir = finished / "results" / "tiny"
    before = {k: v for k, v in checksums(suite_dir).items() if k.startswith("runs/")}
    real_write = folder_files.write_atomic

    def fill_up(path, data):
        if Path(path).parent.parent.name == "runs":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, data)

    monkeypatch.setattr(folder_files, "write_atomic", fill_up)
    monkeypatch.setattr(run_files, "write_atomic", fill_up)
    result = invoke("run", str(finished / "tiny.yaml"), "--out", str(finished / "results"), "--set", "seeds=[0, 1]")
    line = one_line(result, 1)
    assert "No space left on device" in line
    assert "config.json" in line and "error.txt" not in line, line  # the file that failed first
    assert {k: v for k, v in checksums(suite_dir).items() if k.startswith("runs/") and k in before} == before


def test_no_permission_to_write_the_results_is_one_line(finished, monkeypatch):
    suite_dir = finished / "results" / "tiny"
    before = checksums(suite_dir)

    def refused(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))

    monkeypatch.setattr(folder_files.tempfile, "mkstemp", refused)  # what a read-only folder does to a non-root user
    line = one_line(invoke("run", str(finished / "tiny.yaml"), "--out", str(finished / "results")), 1)
    assert "Permission denied" in line and "suite.yaml" in line and "--out" in line
    assert checksums(suite_dir) == before


@needs_modes
def test_a_read_only_results_folder_is_one_line(finished):
    suite_dir = finished / "results" / "tiny"
    before = checksums(suite_dir)
    for folder in (suite_dir, *[p for p in suite_dir.rglob("*") if p.is_dir()]):
        folder.chmod(0o555)
    try:
        line = one_line(invoke("run", str(finished / "tiny.yaml"), "--out", str(finished / "results")), 1)
    finally:
        for folder in (suite_dir, *[p for p in suite_dir.rglob("*") if p.is_dir()]):
            folder.chmod(0o755)
    assert "Permission denied" in line
    assert checksums(suite_dir) == before


@needs_modes
def test_an_out_folder_that_cannot_be_created_is_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    line = one_line(invoke("run", str(write_suite(tmp_path)), "--out", str(locked / "results")), 1)
    assert str(locked / "results") in line and "Permission denied" in line


def test_a_lock_file_that_cannot_be_opened_is_one_line(finished, monkeypatch):
    import mimbench.folder.lock

    real_open = os.open

    def refused(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(mimbench.folder.lock.os, "open", refused)
    line = one_line(invoke("run", str(finished / "tiny.yaml"), "--out", str(finished / "results")), 1)
    assert ".lock: Permission denied" in line


# ------------------------------------------------------------------------------------------
# unbounded values, echoed input, duplicate keys, encodings
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "expected"), [
    ({"image_size": 100000}, "image_size: Input should be less than or equal to 1024 (got 100000)"),
    ({"seeds": [10**25]}, "seeds.0: Input should be less than or equal to 9223372036854775807"),
    ({"seeds": [-1]}, "seeds.0: Input should be greater than or equal to 0"),
    ({"eval": {"mask_seed": 2**64}}, "eval.mask_seed: Input should be less than or equal to 9223372036854775807"),
    ({"train": {"batch_size": 2**40}}, "train.batch_size: Input should be less than or equal to 2147483647"),
    ({"data": {"workers": 10**6}}, "data.workers: Input should be less than or equal to 256"),
], ids=["image-size", "seed-huge", "seed-negative", "mask-seed", "batch-size", "workers"])
def test_values_out_of_the_schema_limits(tmp_path, changes, expected):
    line = one_line(invoke("run", str(write_suite(tmp_path, tiny(**changes))), "--dry-run"), 2)
    assert expected in line


def test_a_huge_value_is_cut_in_the_error(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(TINY).replace("image_size: 16", f"image_size: '{'9' * 100000}'"))
    line = one_line(invoke("run", str(path), "--dry-run"), 2)
    assert line.startswith("error: ") and "image_size" in line and "9" * 100 not in line


@pytest.mark.parametrize("text", [f"image_size: {'9' * 100000}", "seeds: " + "[" * 100000 + "]" * 100000],
                         ids=["a-100000-digit-int", "nested-100000-deep"])
def test_yaml_that_python_cannot_hold_is_one_line(tmp_path, text):
    path = tmp_path / "deep.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in TINY.items() if k not in ("image_size", "seeds")}) + text + "\n")
    line = one_line(invoke("run", str(path), "--dry-run"), 2)
    assert str(path) in line and "invalid YAML" in line


def test_a_huge_seed_in_a_sweep_of_labels_is_refused(tmp_path):
    line = one_line(invoke("run", str(write_suite(tmp_path, tiny(sweep={"eval.labels_per_class": [10**25]}))),
                           "--dry-run"), 2)
    assert "eval.labels_per_class" in line and "1..2147483647" in line


def test_a_million_runs_are_refused_at_once_with_their_count(tmp_path):
    suite = tiny(sweep={"masker.ratio": [0.5] * 1000, "train.lr": [0.001] * 500})
    line = one_line(invoke("run", str(write_suite(tmp_path, suite)), "--dry-run"), 2)
    assert "expands to 1,000,000 runs (1 seed x 2 grid combinations x 500000 sweep value combinations)" in line
    assert "max_runs 10,000" in line and "--set max_runs=1000000" in line


def test_max_runs_can_be_raised_explicitly(tmp_path):
    suite = write_suite(tmp_path, tiny(seeds=[0, 1, 2], max_runs=5))
    assert "expands to 6 runs" in one_line(invoke("run", str(suite), "--dry-run"), 2)
    result = invoke("run", str(suite), "--dry-run", "--set", "max_runs=6")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("suite tiny: 6 runs")


def test_ten_thousand_runs_dry_run(tmp_path):
    ratios = [round(0.05 + 0.9 * i / 5000, 6) for i in range(5000)]
    result = invoke("run", str(write_suite(tmp_path, tiny(sweep={"masker.ratio": ratios}))), "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("suite tiny: 10000 runs")
    assert len(result.stdout.splitlines()) == 1 + 10000


BOMB = textwrap.dedent("""\
    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
""")


def test_a_yaml_alias_bomb_is_one_short_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB + yaml.safe_dump(tiny(description="*i")).replace("'*i'", "*i"))
    line = one_line(invoke("run", str(path), "--dry-run"), 2)
    assert "more than 1,000,000 values once its aliases" in line


def test_a_smaller_bomb_in_a_wrong_place_is_cut_in_the_error():
    bomb = ["lol"] * 9
    for _ in range(4):  # 9**5 values, each list shared, as YAML aliases make them
        bomb = [bomb] * 9
    with pytest.raises(ConfigError) as info:
        load_suite(tiny(seeds=bomb))
    assert str(info.value).startswith("suite: seeds.0: Input should be a valid integer") and len(str(info.value)) < 300


def test_duplicate_keys_name_the_key_and_both_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False) + "seeds: [1, 2]\n")
    line = one_line(invoke("run", str(path), "--dry-run"), 2)
    last = len(path.read_text().splitlines())
    first = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("seeds:"))
    assert line == f"error: {path}:{last}:1: invalid YAML: duplicate key 'seeds' (first given on line {first})"


def test_duplicate_keys_in_a_nested_mapping(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False).replace("  epochs: 1\n", "  epochs: 1\n  epochs: 2\n"))
    assert "duplicate key 'epochs'" in one_line(invoke("run", str(path), "--dry-run"), 2)


def test_a_yaml_merge_key_may_still_be_overridden(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text(yaml.safe_dump(tiny(train={}), sort_keys=False).replace(
        "train: {}", "train: {<<: {epochs: 1, batch_size: 16}, batch_size: 32}"))
    suite = load_suite(str(path))
    assert (suite.train.epochs, suite.train.batch_size) == (1, 32)


def test_a_suite_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(yaml.safe_dump(tiny(description="café"), allow_unicode=True).encode("latin-1"))
    line = one_line(invoke("run", str(path), "--dry-run"), 2)
    assert line == f"error: {path}: not UTF-8 text (byte 0xe9 at offset {path.read_bytes().index(0xE9)}); save the suite as UTF-8"


def test_a_control_character_in_a_suite(tmp_path):
    path = tmp_path / "nul.yaml"
    path.write_bytes(b"name: ti\x00ny\n")
    assert "invalid YAML" in one_line(invoke("run", str(path), "--dry-run"), 2)


@pytest.mark.parametrize("finished_args", [
    ["--set", "image_size=100000"],
    ["--set", "seeds=[10000000000000000000000000]"],
    ["--plugin", "missing_plugin.py"],
    ["--set", "sweep={masker.ratio: [0.1, 0.2, 0.3]}", "--set", "max_runs=3"],
], ids=["image-size", "seed", "plugin", "max-runs"])
def test_bad_input_changes_no_result_file(finished, finished_args):
    suite_dir = finished / "results" / "tiny"
    before = checksums(suite_dir)
    one_line(invoke("run", str(finished / "tiny.yaml"), "--out", str(finished / "results"), *finished_args), 2)
    assert checksums(suite_dir) == before


# ------------------------------------------------------------------------------------------
# plugins: named on the command line, or found
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["plugins"], ["run", "--dry-run"]], ids=["plugins", "run"])
def test_a_broken_plugin_named_with_plugin_is_bad_input(tmp_path, command):
    plugin = tmp_path / "mbt_broken_named.py"
    plugin.write_text(BROKEN_PLUGIN)
    args = [*command, "--plugin", str(plugin)] + ([str(write_suite(tmp_path))] if command[0] == "run" else [])
    line = one_line(invoke(*args), 2)
    assert line == (f"error: --plugin {plugin}: failed to load: ModuleNotFoundError: "
                    f"No module named 'mbt_no_such_dependency'")


def test_a_missing_plugin_file_is_bad_input(tmp_path):
    line = one_line(invoke("plugins", "--plugin", "nowhere_plugin.py"), 2)
    assert "--plugin" in line and "nowhere_plugin.py" in line and "no such plugin file" in line


def test_a_broken_plugin_from_the_environment_only_warns(tmp_path):
    plugin = tmp_path / "mbt_broken_env.py"
    plugin.write_text(BROKEN_PLUGIN)
    result = invoke("run", str(write_suite(tmp_path)), "--dry-run", env={ENV_VAR: str(plugin)})
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().splitlines() == [
        f"warning: plugin {str(plugin)!r} failed to load: ModuleNotFoundError: No module named 'mbt_no_such_dependency'"]


# ------------------------------------------------------------------------------------------
# diverged runs: strict JSON, only completed epochs counted
# ------------------------------------------------------------------------------------------

LATE_NAN_LOSS = '''
from mimbench.plugin import hookimpl

class LateNanLoss:
    """L1 for the first 3 steps (one epoch of the tiny suite), then NaN."""
    def __init__(self):
        self.steps = 0
    def __call__(self, pred, target, mask):
        self.steps += 1
        loss = (pred - target).abs().mean()
        return loss if self.steps <= 3 else loss * float("nan")

@hookimpl
def mimbench_register_losses(register):
    register("late_nan", LateNanLoss)
'''


def _reject_constant(name: str):
    raise ValueError(f"not strict JSON: {name}")


def test_a_diverged_run_writes_strict_json_and_counts_completed_epochs(tmp_path):
    plugin = tmp_path / "late_nan.py"
    plugin.write_text(LATE_NAN_LOSS)
    suite = write_suite(tmp_path, tiny(train={"epochs": 3, "batch_size": 32},
                                       grid={**TINY["grid"], "masker": ["pixel"], "loss": ["late_nan"]}))
    result = invoke("run", str(suite), "--out", "results", "--plugin", str(plugin))
    assert result.exit_code == 0, result.output
    [metrics] = (tmp_path / "results" / "tiny" / "runs").glob(f"*/{store.METRICS_FILE}")
    record = json.loads(metrics.read_text(), parse_constant=_reject_constant)
    assert record["status"] == "diverged"
    assert record["epochs_completed"] == 1 and isinstance(record["final_loss"], float)
    assert record["diverged_loss"] == "nan"
    history = RunFolder(metrics.parent).history()
    assert len(history) == 2 and record["final_loss"] == history[0]["loss"]
    assert "after 1 finished epoch (last finite loss" in (tmp_path / "results" / "tiny" / "report.md").read_text()


def test_write_json_turns_non_finite_values_into_null(tmp_path):
    store.write_json(tmp_path / "x.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}})
    assert json.loads((tmp_path / "x.json").read_text(), parse_constant=_reject_constant) == \
        {"a": None, "b": [1.0, None], "c": {"d": None}}


# ------------------------------------------------------------------------------------------
# mimbench export of a damaged run folder
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "content", "expected"), [
    (store.ENCODER_FILE, b"PK\x03\x04 truncated", "encoder.pt: damaged, not a state_dict torch can load"),
    (store.ENCODER_FILE, b"\x80\x04garbage", "encoder.pt: damaged, not a state_dict torch can load"),
    (store.CONFIG_FILE, b"[1, 2]", "config.json holds a JSON list, not an object"),
    (store.CONFIG_FILE, b'{"encoder": "cnn", "normalization": {"mean": [0.5]}, "image_size": 16}',
     "not a mimbench run config"),
], ids=["encoder-truncated-zip", "encoder-garbage-pickle", "config-a-list", "config-encoder-a-string"])
def test_export_of_a_damaged_run_is_one_line(finished, name, content, expected):
    folder = finished / "results" / "tiny" / "runs" / run_ids(finished)[0]
    (folder / name).write_bytes(content)
    before = checksums(folder)
    line = one_line(invoke("export", str(folder)), 2)
    assert expected in line
    assert checksums(folder) == before
