"""The ``mimbench`` command line through click's CliRunner (and once through the console script).

Nothing here trains: ``run`` is exercised with ``--dry-run`` and with bad input only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import mimbench
from mimbench.cli import cli
from mimbench.plugins import ENV_VAR

CONSOLE_SCRIPT = Path(sys.executable).parent / "mimbench"
RUN_LINE = re.compile(r"^  ([0-9a-f]{12})  seed=(\d+)  encoder=(\S+) decoder=(\S+) masker=(\S+) loss=(\S+)"
                      r"  steps=\d+  FLOPs=\S+ \(\S+/image\)$")
BASELINE_LINE = re.compile(r"^  ([0-9a-f]{12})  (\S+ \(random-init(?:, [^)]*)?\)|raw pixels \(baseline(?:, [^)]*)?\)) "
                           r"seed=(\d+)$")
BUILTINS = {
    ("masker", "pixel"), ("masker", "patch"), ("masker", "region"),
    ("encoder", "cnn"),
    ("decoder", "linear"), ("decoder", "upsample"),
    ("loss", "l1"), ("loss", "mse"),
    ("dataset", "shapes"), ("dataset", "fashion-mnist"), ("dataset", "fashion-mnist-mini"),
}
TINY = {
    "name": "tiny",
    "dataset": {"name": "shapes", "params": {"num_images": 64}},
    "image_size": 16,
    "seeds": [0, 1],
    "train": {"epochs": 1, "batch_size": 32},
    "grid": {
        "encoder": [{"name": "cnn", "params": {"hidden_dim": 8}}],
        "decoder": ["linear"],
        "masker": ["pixel", {"name": "patch", "params": {"mask_patch_size": 4}}],
        "loss": ["l1"],
    },
    "sweep": {"masker.ratio": [0.4, 0.6]},
}


def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into the output unless told not to
        return CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2: stderr is always separate
        return CliRunner()


def invoke(*args: str):
    return _runner().invoke(cli, list(args))


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Each test runs in its own folder, without plugins from the environment."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)


def write_suite(folder: Path, suite: dict, name: str = "tiny.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def tiny(**changes) -> dict:
    suite = json.loads(json.dumps(TINY))  # a deep copy
    suite.update(changes)
    return suite


def dry_run(*args: str) -> list[tuple[str, int, str, str, str, str]]:
    """Run ids and their (seed, encoder, decoder, masker, loss) from ``mimbench run --dry-run``."""
    result = invoke("run", *args, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    runs = []
    for line in result.stdout.splitlines()[1:]:
        if line.startswith("seeds: "):  # what the seeds can tell (see test_dry_run_of_the_packaged_quick_suite)
            continue
        match = RUN_LINE.match(line)
        if match is None:
            assert BASELINE_LINE.match(line), f"unexpected dry-run line: {line!r}"
            continue
        runs.append((match[1], int(match[2]), *match.groups()[2:]))
    return runs


def usage_error(result) -> str:
    """Assert exit code 2 with one short 'error:' line on stderr and no traceback; return the line."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert len(lines[0]) <= 400, lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------
# suites, plugins
# ------------------------------------------------------------------------------------------


def test_suites_lists_quick():
    result = invoke("suites")
    assert result.exit_code == 0
    names = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "quick" in names
    assert "pixel vs patch vs region" in names["quick"]  # its description


def test_plugins_table_lists_every_builtin():
    result = invoke("plugins")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["KIND", "NAME", "PROVIDER", "VERSION", "DESCRIPTION"]
    rows = {}
    for line in lines:
        kind, name, provider, version, description = re.split(r"\s{2,}", line, maxsplit=4)
        rows[kind, name] = (provider, version, description)
    assert BUILTINS <= set(rows)
    for key in BUILTINS:
        assert rows[key][:2] == ("mimbench", mimbench.__version__)
    assert rows["masker", "pixel"][2] == "Hide each pixel independently with probability `ratio`."
    # Columns are aligned: every row's NAME starts where the header's does.
    column = header.index("NAME")
    assert all(line[column - 2:column] == "  " and line[column] != " " for line in lines)


def test_plugins_kind_filter():
    result = invoke("plugins", "--kind", "masker")
    assert result.exit_code == 0
    rows = [line.split()[:3] for line in result.stdout.splitlines()[1:]]
    assert {kind for kind, _, _ in rows} == {"masker"}
    assert {"pixel", "patch", "region"} <= {name for _, name, _ in rows}


def test_plugins_kind_rejects_an_unknown_kind():
    result = invoke("plugins", "--kind", "maskers")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "'maskers' is not one of" in result.stderr


def test_plugins_json():
    result = invoke("plugins", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["failed_plugins"] == []
    components = data["components"]
    assert all(set(row) == {"kind", "name", "provider", "version", "description", "params"} for row in components)
    by_key = {(row["kind"], row["name"]): row for row in components}
    assert BUILTINS <= set(by_key)
    assert by_key["encoder", "cnn"] == {
        "kind": "encoder", "name": "cnn", "provider": "mimbench", "version": mimbench.__version__,
        "description": "Small conv net: two stages of 3x3 conv + ReLU + 2x2 max-pool (stride 4).",
        "params": {"hidden_dim": {"type": "int", "range": ">= 1, <= 8192", "default": 64}},
    }
    assert by_key["masker", "block"]["params"]["num_masking_patches"] == {"type": "int | None", "default": None,
                                                                          "range": ">= 1, <= 1048576"}
    masker_rows = json.loads(invoke("plugins", "--json", "--kind", "masker").stdout)["components"]
    assert masker_rows == [row for row in components if row["kind"] == "masker"]


# ------------------------------------------------------------------------------------------
# run --dry-run
# ------------------------------------------------------------------------------------------


def test_dry_run_of_the_packaged_quick_suite(tmp_path):
    out = tmp_path / "out"
    result = invoke("run", "--dry-run", "--out", str(out))
    assert result.exit_code == 0, result.output
    header, *lines = result.stdout.splitlines()
    seeds = [line for line in lines if line.startswith("seeds: ")]
    lines = [line for line in lines if not line.startswith("seeds: ")]
    assert seeds == [f"seeds: the 6 comparisons with {kind} need at least 8 seeds for any sign-flip test over seeds to "
                     "reach p_holm < 0.05 under Holm's correction; with the suite's 2 they get seed-level intervals and "
                     "no test (fewer than 6 seeds), unless their probes keep per-image predictions (linear, knn and "
                     "finetune do): then the report tests them over seeds and test images"
                     for kind in ("random-init", "pixels")]  # 3 maskers x 2 accuracies (linear, kNN) each
    assert header.startswith("suite quick: 6 runs and 4 baselines on fashion-mnist-mini "
                             "(5000 train / 1000 test images, 28px)")
    assert header.endswith(f"results in {out / 'quick'}")
    runs = [RUN_LINE.match(line) for line in lines[:6]]
    assert all(runs) and len(runs) == 6
    baselines = [BASELINE_LINE.match(line) for line in lines[6:]]
    from mimbench.suite import packaged_suites

    encoder = yaml.safe_load(packaged_suites()["quick"].read_text())["grid"]["encoder"][0]["name"]
    assert all(baselines) and sorted((m[2], m[3]) for m in baselines) == [
        ("raw pixels (baseline)", "0"), ("raw pixels (baseline)", "1"), (f"{encoder} (random-init)", "0"),
        (f"{encoder} (random-init)", "1")]
    assert len({m[1] for m in runs}) == 6
    assert sorted((int(m[2]), m[5].split("(")[0]) for m in runs) == sorted(
        (seed, masker) for seed in (0, 1) for masker in ("pixel", "patch", "region"))
    assert not out.exists()  # nothing trained, nothing written
    assert list(tmp_path.iterdir()) == []


def test_dry_run_expands_grid_sweep_and_seeds(tmp_path):
    path = write_suite(tmp_path, TINY)
    result = invoke("run", str(path), "--dry-run", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("suite tiny: 8 runs and 4 baselines on shapes "
                                                    "(64 train / 64 test images, 16px)")
    runs = dry_run(str(path), "--out", str(tmp_path / "out"))
    assert len(runs) == 8
    assert len({run[0] for run in runs}) == 8
    assert {run[1:] for run in runs} == {
        (seed, "cnn(hidden_dim=8)", "linear", masker, "l1(masked_only=True,norm_pix=False,norm_pix_patch_size=4)")
        for seed in (0, 1)
        for masker in ("pixel(ratio=0.4)", "pixel(ratio=0.6)",
                       "patch(ratio=0.4,mask_patch_size=4)", "patch(ratio=0.6,mask_patch_size=4)")
    }
    assert [run[1] for run in runs] == [0] * 4 + [1] * 4  # seed by seed
    assert not (tmp_path / "out").exists()

    one_seed = dry_run(str(path), "--set", "seeds=[0]")
    assert len(one_seed) == 4
    assert one_seed == runs[:4]  # the same runs, the same ids


def test_run_ids_are_stable_and_follow_the_config(tmp_path):
    path = write_suite(tmp_path, TINY)
    first = dry_run(str(path))
    assert dry_run(str(path)) == first

    # A changed training param changes every id.
    lr = dry_run(str(path), "--set", "train.lr=0.01")
    assert not {run[0] for run in lr} & {run[0] for run in first}

    # A changed masker param changes the ids of exactly the runs that use that masker.
    suite = tiny()
    suite["grid"]["masker"][1]["params"]["mask_patch_size"] = 8
    changed = dry_run(str(write_suite(tmp_path, suite, "patch8.yaml")))
    before = {run[1:]: run[0] for run in first}
    for run_id, seed, encoder, decoder, masker, loss in changed:
        if masker.startswith("pixel"):
            assert before[seed, encoder, decoder, masker, loss] == run_id
        else:
            assert masker.endswith("mask_patch_size=8)")
            assert run_id not in before.values()


def test_explicit_default_params_give_the_same_run_id(tmp_path):
    implicit = tiny(sweep={})
    implicit["grid"]["masker"] = ["patch"]
    explicit = tiny(sweep={})
    explicit["grid"]["masker"] = [{"name": "patch", "params": {"ratio": 0.6, "mask_patch_size": 4}}]
    partial = tiny(sweep={})
    partial["grid"]["masker"] = [{"name": "patch", "params": {"ratio": 0.6}}]
    runs = [dry_run(str(write_suite(tmp_path, s, f"{n}.yaml")))
            for n, s in [("implicit", implicit), ("explicit", explicit), ("partial", partial)]]
    assert len(runs[0]) == 2
    assert runs[0] == runs[1] == runs[2]
    # ...and a different ratio does not.
    other = dry_run(str(write_suite(tmp_path, implicit, "other.yaml")), "--set", "sweep={masker.ratio: [0.5]}")
    assert not {r[0] for r in other} & {r[0] for r in runs[0]}


# ------------------------------------------------------------------------------------------
# Bad input: exit code 2, one line, no traceback
# ------------------------------------------------------------------------------------------


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nimage_size: 16\nseeds: [0]: 3\ndataset: shapes\n")
    line = usage_error(invoke("run", str(path), "--dry-run"))
    assert re.match(rf"error: {re.escape(str(path))}:3:\d+: invalid YAML: ", line), line


def test_suite_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    line = usage_error(invoke("run", str(path), "--dry-run"))
    assert line == f"error: {path}: a suite must be a YAML mapping, got list"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"colour": "red"}, "colour: unknown key"),
        ({"train": {"epochs": 1, "epoch": 2}}, "train.epoch: unknown key"),
        ({"grid": {**TINY["grid"], "masks": ["pixel"]}}, "grid.masks: unknown key"),
        ({"train": {"epochs": 0}}, "train.epochs: Input should be greater than or equal to 1 (got 0)"),
        ({"seeds": []}, "seeds:"),
        ({"sweep": {"masker": [0.5]}}, "sweep key 'masker' must be <encoder|decoder|masker|loss|target|train>.<param>"),
        ({"name": "../escape"}, "name: String should match pattern"),
    ],
    ids=["top-level-key", "train-key", "grid-key", "epochs-0", "no-seeds", "bad-sweep-key", "bad-name"],
)
def test_schema_errors_name_the_key_path(tmp_path, changes, expected):
    path = write_suite(tmp_path, tiny(**changes))
    line = usage_error(invoke("run", str(path), "--dry-run"))
    assert line.startswith(f"error: {path}: ")
    assert expected in line


@pytest.mark.parametrize(
    ("masker", "expected"),
    [
        ("pach", "unknown masker 'pach'; did you mean 'patch'? (known: "),
        ({"name": "patch", "params": {"ratoi": 0.5}},
         "masker 'patch': unknown param 'ratoi'; did you mean 'ratio'? (allowed: ratio, mask_patch_size)"),
        ({"name": "patch", "params": {"mask_patch_size": "four"}},
         "masker 'patch': param 'mask_patch_size' must be int, got str 'four'"),
        ({"name": "patch", "params": {"mask_patch_size": 4.0}},
         "masker 'patch': param 'mask_patch_size' must be int, got float 4.0"),
        ({"name": "patch", "params": {"ratio": 1.5}}, "masker 'patch': ratio must be in (0, 1), got 1.5"),
        ({"name": "patch", "params": {"mask_patch_size": 5}},
         "masker 'patch': image size 16x16 is not divisible by mask_patch_size 5"),
    ],
    ids=["unknown-name", "unknown-param", "str-for-int", "float-for-int", "ratio-out-of-range", "indivisible"],
)
def test_component_errors(tmp_path, masker, expected):
    suite = tiny(sweep={})
    suite["grid"]["masker"] = ["pixel", masker]
    line = usage_error(invoke("run", str(write_suite(tmp_path, suite)), "--dry-run", "--out", "out"))
    assert line.startswith(f"error: {expected}"), line
    assert not (tmp_path / "out").exists()


def test_out_of_range_value_from_the_sweep(tmp_path):
    path = write_suite(tmp_path, tiny(sweep={"masker.ratio": [0.5, 1.5]}))
    line = usage_error(invoke("run", str(path), "--dry-run"))
    assert line == "error: masker 'pixel': ratio must be in (0, 1), got 1.5"


def test_epochs_zero_through_set(tmp_path):
    path = write_suite(tmp_path, TINY)
    line = usage_error(invoke("run", str(path), "--dry-run", "--set", "train.epochs=0"))
    assert line == (f"error: {path} (with --set train.epochs=0): "
                    "train.epochs: Input should be greater than or equal to 1 (got 0)")


def test_indivisible_reference_masker_is_caught(tmp_path):
    suite = tiny(eval={"reference_masker": {"name": "patch", "params": {"mask_patch_size": 3}}})
    line = usage_error(invoke("run", str(write_suite(tmp_path, suite)), "--dry-run"))
    assert line == "error: eval.reference_masker 'patch': image size 16x16 is not divisible by mask_patch_size 3"


def test_encoder_context_param_in_a_suite(tmp_path):
    suite = tiny()
    suite["grid"]["encoder"] = [{"name": "cnn", "params": {"in_channels": 1}}]
    line = usage_error(invoke("run", str(write_suite(tmp_path, suite)), "--dry-run"))
    assert line.startswith("error: encoder 'cnn': unknown param 'in_channels'; it is set by mimbench")


def test_missing_suite_file():
    line = usage_error(invoke("run", "nowhere.yaml", "--dry-run"))
    assert line == "error: suite file not found: nowhere.yaml"


def test_unknown_packaged_suite():
    line = usage_error(invoke("run", "quik", "--dry-run"))
    assert line.startswith("error: unknown suite 'quik': not a file and not a packaged suite (packaged: ")
    assert "quick" in line


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("seeds", "error: --set 'seeds': expected KEY=VALUE, e.g. train.epochs=1"),
        ("=3", "error: --set '=3': expected KEY=VALUE, e.g. train.epochs=1"),
        ("seeds=[0", "error: --set 'seeds=[0': the value is not valid YAML"),
        ("name.x=1", "error: --set 'name.x=1': 'name' is not a mapping"),
    ],
)
def test_bad_set(tmp_path, override, expected):
    path = write_suite(tmp_path, TINY)
    assert usage_error(invoke("run", str(path), "--dry-run", "--set", override)) == expected


def test_set_of_an_unknown_key_names_it(tmp_path):
    path = write_suite(tmp_path, TINY)
    line = usage_error(invoke("run", str(path), "--dry-run", "--set", "train.epoch=1"))
    assert line == (f"error: {path} (with --set train.epoch=1): train.epoch: unknown key; did you mean 'epochs'? "
                    "(allowed: epochs, batch_size, lr, weight_decay, warmup_epochs, grad_clip, log_every, augment, compile, "
                    "precision, devices, budget_flops, checkpoint_every, keep_checkpoint)")


def test_bad_device_name(tmp_path):
    path = write_suite(tmp_path, TINY)
    line = usage_error(invoke("run", str(path), "--dry-run", "--device", "tpu"))
    assert line == "error: --device 'tpu': expected auto, cpu, cuda or cuda:N"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda(tmp_path):
    path = write_suite(tmp_path, TINY)
    line = usage_error(invoke("run", str(path), "--dry-run", "--device", "cuda"))
    assert line == "error: --device 'cuda': CUDA is not available on this machine (use auto or cpu)"


def test_fashion_mnist_root_without_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    path = write_suite(tmp_path, tiny(dataset={"name": "fashion-mnist", "params": {"root": str(empty)}}))
    result = invoke("run", str(path), "--dry-run")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1  # long (it says how to get the files) but one line
    assert lines[0].startswith("error: dataset 'fashion-mnist': Fashion-MNIST train files")
    assert f"not found in {empty} " in lines[0]


# ------------------------------------------------------------------------------------------
# The installed console script
# ------------------------------------------------------------------------------------------


@pytest.fixture
def console_script() -> str:
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"no console script at {CONSOLE_SCRIPT}")
    return str(CONSOLE_SCRIPT)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != ENV_VAR}


def test_console_script_version(console_script):
    proc = subprocess.run([console_script, "--version"], capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"mimbench, version {mimbench.__version__}"


def test_console_script_dry_run_matches_in_process_ids(console_script, tmp_path):
    path = write_suite(tmp_path, TINY)
    proc = subprocess.run([console_script, "run", str(path), "--dry-run", "--device", "cpu", "--out", "out"],
                          capture_output=True, text=True, timeout=120, env=_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == ("suite tiny: 8 runs and 4 baselines on shapes (64 train / 64 test images, 16px), "
                        "device cpu, executor local, results in out/tiny")
    ids = [RUN_LINE.match(line)[1] for line in lines[1:] if RUN_LINE.match(line)]
    # Run ids are a hash of the config: the same in another process (no hash randomisation).
    assert ids == [run[0] for run in dry_run(str(path))]
    assert not (tmp_path / "out").exists()



def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    suite = tmp_path / "exp.yaml"
    suite.write_text(
        "name: exp\ndataset: {name: shapes, params: {num_images: 32}}\nimage_size: 16\n"
        "train: {lr: 1e-3}\n"
        "grid: {encoder: cnn, decoder: linear, masker: [{name: region, params: {min_area: 5e-2}}], loss: l1}\n"
    )
    result = CliRunner().invoke(cli, ["run", str(suite), "--dry-run", "--set", "train.weight_decay=1e-4",
                                      "--set", "train.batch_size=16"])
    assert result.exit_code == 0, result.output
    assert "min_area=0.05" in result.output


def test_a_batch_larger_than_the_train_split_is_refused(tmp_path):
    path = write_suite(tmp_path, TINY)
    line = usage_error(invoke("run", str(path), "--dry-run", "--set", "train.batch_size=100000"))
    assert line == "error: train.batch_size 100000 is larger than the train split (64 images)"


def test_set_a_param_of_a_component_given_by_name(tmp_path):
    missing = tmp_path / "nowhere"
    line = usage_error(invoke("run", "--dry-run", "--set", "dataset=fashion-mnist",
                              "--set", f"dataset.params.root={missing}"))
    assert line.startswith("error: dataset 'fashion-mnist': Fashion-MNIST train files") and str(missing) in line


def test_unknown_top_level_key_gets_a_suggestion(tmp_path):
    line = usage_error(invoke("run", "--dry-run", "--set", "seed=1"))
    assert "seed: unknown key; did you mean 'seeds'?" in line


def test_a_packaged_suite_name_wins_over_a_results_folder_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quick").mkdir()  # e.g. running inside results/
    result = invoke("run", "quick", "--dry-run")
    assert result.exit_code == 0 and "suite quick: 6 runs" in result.stdout


@pytest.mark.parametrize(("changes", "expected"), [
    ({"seeds": [0, 0]}, "seeds: seed 0 is listed twice"),
    ({"eval": {"probes": [{"name": "linear", "params": {"weight_decay": float("nan")}}]}},
     "probe 'linear': param 'weight_decay' must be a finite number, got nan"),
    ({"grid": {**TINY["grid"], "masker": ["stripes"]}},
     "unknown masker 'stripes'"),
], ids=["duplicate-seeds", "nan-param", "unknown-component"])
def test_inputs_the_schema_alone_cannot_refuse_are_one_line(tmp_path, changes, expected):
    line = usage_error(invoke("run", str(write_suite(tmp_path, tiny(**changes))), "--dry-run"))
    assert expected in line
    if "unknown" in expected:
        assert "needs the plugin installed or --plugin FILE (plugins loaded: mimbench)" in line


def test_a_masker_an_encoder_cannot_take_is_refused_before_training(tmp_path):
    """MAE drops whole hidden patches and needs as many in every image: pixel masking hides whole
    patches only now and then, so its first unlucky batch would fail the run; --dry-run says so."""
    common = ("run", "--dry-run", "--out", str(tmp_path), "--set", "grid.encoder=[mae]", "--set", "seeds=[0]")
    refused = invoke(*common, "--set", "grid.masker=[pixel]")
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.exit_code == 2 and len(lines) == 1, refused.output
    assert "encoder 'mae' drops the 4x4 patches a mask hides whole and needs as many in every image" in lines[0]
    assert "masker pixel(ratio=0.6) hid 0 to " in lines[0] and "use masker random_token with patch_size 4" in lines[0]
    assert invoke(*common, "--set", "grid.masker=[random_token, patch]").exit_code == 0
