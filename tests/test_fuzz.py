"""A fuzzer: valid suites and data files, damaged at random, never give a traceback.

Each example starts from a valid suite and mutates it (keys deleted, renamed, retyped, values
pushed out of range), writes it as YAML, may then damage the text (truncated, bytes flipped,
inserted or made non-UTF-8, lines repeated or dropped), and dry-runs it in this process. The
outcome must be a valid dry run (exit 0), or bad input: exit 2 with exactly one short
``error:`` line on stderr. A second test damages the bytes of a dataset's gzip files.

Derandomized (the same examples on every machine, so CI is reproducible) and bounded to a few
dozen examples: well under a minute. Out-of-range values for components' params are chosen to
fail fast (negative, zero, 10**25), never sizes a factory would really try to allocate.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import traceback
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

hypothesis = pytest.importorskip("hypothesis", reason="the fuzzer needs hypothesis (pip install -e '.[test]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import mimbench_plugins  # noqa: E402
from mimbench.cli import cli  # noqa: E402
from mimbench.plugins import ENV_VAR  # noqa: E402

VALID = {
    "name": "fuzz",
    "description": "a valid suite the fuzzer mutates",
    "dataset": {"name": "shapes", "params": {"num_images": 64}},
    "image_size": 16,
    "seeds": [0, 1],
    "train": {"epochs": 1, "batch_size": 32, "lr": 1.0e-3, "warmup_epochs": 0.5, "augment": {"flip": True}},
    "eval": {"mask_seed": 0, "batch_size": 64, "probes": ["linear", {"name": "knn", "params": {"k": 5}}],
             "reference_masker": {"name": "patch", "params": {"ratio": 0.5, "mask_patch_size": 4}},
             "baselines": ["random-init", "pixels"]},
    "data": {"workers": 0},
    "grid": {"encoder": [{"name": "cnn", "params": {"hidden_dim": 4}}], "decoder": ["linear"],
             "masker": ["pixel", {"name": "patch", "params": {"mask_patch_size": 4}}], "loss": ["l1"]},
    "sweep": {"masker.ratio": [0.4, 0.6]},
    "max_runs": 100,
}
#: Values a key is retyped to: every YAML type, empty and long ones, and the edges of numbers.
RETYPED = [None, True, False, 0, -1, 1, 3, 0.5, -0.5, 2**63, 10**25, -10**25, 1e308, float("inf"),
           float("nan"), "", "x", "a" * 500, "café", "1e-3", [], [1, "a"], [[0]], {}, {"name": "x"}, {"a": {"b": [1]}}]
#: Out-of-range values that fail fast wherever they land: too large for int64, or not positive. Not
#: 2**31: a component's param that big (shapes' num_images) is a size a factory really tries to allocate.
OUT_OF_RANGE = [-1, 0, -10**25, 10**25, 2**63, 2**64, -1e-308, 1e308]
#: What a key (or a component's name) is renamed to, besides random text.
NAMES = ["name", "params", "dataset", "encoder", "decoder", "masker", "loss", "probes", "seeds", "sweep",
         "shapes", "fashion-mnist-mini", "imagefolder", "cifar10", "vit", "resnet", "mlp", "block", "region",
         "mse", "finetune", "knn", "local", "ray", "epochs", "ratio", "masker.ratio", "train.lr", "eval.labels_per_class"]

Path_ = tuple  # a path into the suite: keys and list indices


def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into the output unless told not to
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)


def paths(value: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every path to a value inside ``value`` (mapping keys and list indices), depth first."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        found.append((*prefix, key))
        found += paths(child, (*prefix, key))
    return found


def parent_of(suite: dict, path: Path_) -> Any:
    node = suite
    for key in path[:-1]:
        node = node[key]
    return node


@st.composite
def mutated_suites(draw) -> dict:
    """The valid suite with 0 to 3 random mutations."""
    suite = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(0, 3))):
        options = paths(suite)
        if not options:
            break
        path = draw(st.sampled_from(options))
        parent, key = parent_of(suite, path), path[-1]
        operation = draw(st.sampled_from(["delete", "rename", "retype", "out_of_range"]))
        if operation == "delete":
            del parent[key]
        elif operation == "rename" and isinstance(parent, dict):
            name = draw(st.one_of(st.sampled_from(NAMES), st.text(max_size=12), st.just(f"{key}x")))
            parent[name] = parent.pop(key)
        elif operation == "rename":  # a list item (a component's name or a probe): another name
            parent[key] = draw(st.sampled_from(NAMES))
        elif operation == "retype":
            parent[key] = draw(st.sampled_from(RETYPED))
        elif isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
            parent[key] = draw(st.sampled_from(OUT_OF_RANGE))
        else:
            parent[key] = draw(st.sampled_from(OUT_OF_RANGE))
    return suite


@st.composite
def damaged_text(draw, text: bytes) -> bytes:
    """``text`` with 0 to 2 random kinds of damage (none in most examples, so that the structural
    mutations are not all hidden behind a YAML error)."""
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        if not text:
            break
        at = draw(st.integers(0, len(text) - 1))
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "not-utf8", "repeat-line", "drop-line", "indent"]))
        if kind == "truncate":
            text = text[:at]
        elif kind == "flip":
            text = text[:at] + bytes([text[at] ^ draw(st.integers(1, 255))]) + text[at + 1:]
        elif kind == "insert":
            text = text[:at] + draw(st.binary(min_size=1, max_size=8)) + text[at:]
        elif kind == "not-utf8":
            text = text[:at] + b"\xff\xfe" + text[at:]
        else:
            lines = text.split(b"\n")
            line = draw(st.integers(0, len(lines) - 1))
            if kind == "repeat-line":
                lines.insert(line, lines[line])
            elif kind == "drop-line":
                del lines[line]
            else:
                lines[line] = b" " + lines[line]
            text = b"\n".join(lines)
    return text


def assert_valid_or_one_error(result) -> None:
    """A valid dry run (exit 0), or exit 2 with exactly one short `error:` line; never a traceback."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError("".join(traceback.format_exception(*result.exc_info)))
    if result.exit_code == 0:
        assert result.stdout.startswith("suite "), result.stdout[:500]
        return
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.exit_code, lines)
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) <= 400, lines


FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_the_valid_suite_is_valid(tmp_path):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(VALID, sort_keys=False))
    result = _runner().invoke(cli, ["run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("suite fuzz: 8 runs and 4 baselines")


@FUZZ
@given(data=st.data())
def test_a_mutated_or_damaged_suite_is_a_dry_run_or_one_error_line(data):
    suite = data.draw(mutated_suites())
    text = yaml.safe_dump(suite, sort_keys=False, allow_unicode=True).encode()
    text = data.draw(damaged_text(text))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_bytes(text)
        result = _runner().invoke(cli, ["run", str(path), "--dry-run", "--out", str(Path(folder) / "results")])
    assert_valid_or_one_error(result)


@FUZZ
@given(data=st.data())
def test_a_mutated_set_override_is_a_dry_run_or_one_error_line(data):
    """The same through ``--set``: any key path, any value (as YAML text)."""
    path = data.draw(st.sampled_from(paths(VALID)))
    key = ".".join(str(part) for part in path)
    value = data.draw(st.one_of(st.sampled_from(RETYPED + OUT_OF_RANGE).map(lambda v: yaml.safe_dump(v).strip()),
                                st.text(max_size=20)))
    with tempfile.TemporaryDirectory() as folder:
        suite = Path(folder) / "fuzz.yaml"
        suite.write_text(yaml.safe_dump(VALID, sort_keys=False))
        result = _runner().invoke(cli, ["run", str(suite), "--dry-run", "--set", f"{key}={value}"])
    assert_valid_or_one_error(result)


DATA_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
              "t10k-labels-idx1-ubyte.gz"]


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(DATA_FILES), kind=st.sampled_from(["truncate", "flip", "zero"]),
       where=st.floats(0.0, 1.0), byte=st.integers(1, 255))
def test_a_damaged_data_file_is_a_dry_run_or_one_error_line(name, kind, where, byte):
    source = Path(mimbench_plugins.__file__).parent / "data" / "fashion-mnist-mini"
    with tempfile.TemporaryDirectory() as folder:  # a new path each time: the data cache never serves a stale copy
        root = Path(folder) / "data"
        shutil.copytree(source, root)
        damaged = root / name
        raw = bytearray(damaged.read_bytes())
        at = min(int(where * len(raw)), len(raw) - 1)
        if kind == "truncate":
            raw = raw[:at]
        elif kind == "flip":
            raw[at] ^= byte
        else:
            raw[at:at + 64] = bytes(len(raw[at:at + 64]))
        damaged.write_bytes(bytes(raw))
        suite = {**VALID, "dataset": {"name": "fashion-mnist", "params": {"root": str(root)}}, "image_size": 28}
        path = Path(folder) / "fuzz.yaml"
        path.write_text(yaml.safe_dump(suite, sort_keys=False))
        result = _runner().invoke(cli, ["run", str(path), "--dry-run"])
    assert_valid_or_one_error(result)
    if result.exit_code == 2:
        assert name in result.stderr
