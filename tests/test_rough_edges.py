"""Issue 23's rough edges: a light command line (no torch for help), ``suites --show``,
``mimbench.load_encoder``, declared dtypes in ``summary.parquet`` and ``load()``, a readable
``config_id``, point-and-interval PSNR figures and no correlation without its uncertainty."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mimbench
from mimbench import columns, stats
from mimbench import folder as store
from mimbench.errors import ConfigError
from mimbench.folder import RunFolder, SuiteFolder
from mimbench.folder.summary import summary_table
from mimbench.plugins import ENV_VAR, load_plugins
from mimbench.registry import Registry
from mimbench.suite import packaged_suites

from helpers import run_cli
from test_comparisons import hand_suite

COMMAND_PLUGIN = '''
import click

from mimbench.plugin import hookimpl


@click.command()
def greet():
    """Say hello (from a plugin)."""
    click.echo("hello")


@hookimpl
def mimbench_register_commands(cli):
    cli.add_command(greet)
'''

# Runs the CLI in a fresh interpreter and reports what it printed and whether torch was imported.
PROBE = """
import json, sys
from click.testing import CliRunner
import mimbench.cli
result = CliRunner().invoke(mimbench.cli.cli, sys.argv[1:])
print(json.dumps({"code": result.exit_code, "output": result.output,
                  "torch": "torch" in sys.modules, "torchvision": "torchvision" in sys.modules}))
"""


def _light_cli(tmp_path: Path, *args: str) -> dict:
    plugin = tmp_path / "mbt_greet.py"
    plugin.write_text(COMMAND_PLUGIN)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env[ENV_VAR] = str(plugin)
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- a light command line

@pytest.mark.parametrize("args", [("--help",), ("suites",), ("run", "--help"), ("suites", "--show", "quick")])
def test_help_and_suites_import_neither_torch_nor_torchvision(tmp_path, args):
    found = _light_cli(tmp_path, *args)
    assert found["code"] == 0, found["output"]
    assert not found["torch"] and not found["torchvision"], f"mimbench {' '.join(args)} imported torch"
    if args == ("--help",):  # a third-party plugin's command is still listed
        assert "greet" in found["output"] and "Say hello (from a plugin)." in found["output"]


def test_a_plugin_command_still_runs(tmp_path):
    found = _light_cli(tmp_path, "greet")
    assert found["code"] == 0 and found["output"] == "hello\n"


def test_the_built_ins_add_no_commands():
    """The command line leaves mimbench's own plugins out when it looks for commands (for speed):
    that is only right while none of them adds one."""
    plugins = load_plugins(use_env=False)
    owners = [impl.plugin_name for impl in plugins.hook.mimbench_register_commands.get_hookimpls()]
    assert not [name for name in owners if name.startswith("mimbench:")]
    assert all(name.startswith("mimbench:") for name in load_plugins(use_env=False).providers)
    assert not load_plugins(use_env=False, builtins=False).providers


def test_the_plugin_door_still_has_every_name():
    import mimbench.plugin as door

    for name in door.__all__:
        assert getattr(door, name) is not None, name
    from mimbench.plugin import Backbone, hookimpl, run_task  # noqa: F401 (the names resolve)
    with pytest.raises(AttributeError):
        door.nope  # noqa: B018


# ---------------------------------------------------------------------------- suites --show

def test_suites_show_prints_the_packaged_yaml_verbatim():
    for name in ("quick", "simmim-ablation"):
        result = run_cli("suites", "--show", name)
        assert result.exit_code == 0
        assert result.output == packaged_suites()[name].read_text()


def test_suites_show_of_an_unknown_name_exits_2_naming_the_packaged_suites():
    result = run_cli("suites", "--show", "nope")
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and line.startswith("error: suites --show 'nope': not a packaged suite")
    assert all(name in line for name in packaged_suites())


# ---------------------------------------------------------------------------- load_encoder

def _finished_run(folder: Path) -> torch.nn.Module:
    """A run folder as a finished run leaves it: config.json and a trained cnn's encoder.pt."""
    registry = Registry(load_plugins(use_env=False))
    torch.manual_seed(0)
    params = registry.resolve_params("encoder", "cnn", {"hidden_dim": 8})
    encoder = registry.build("encoder", "cnn", params, in_channels=1, image_size=16)
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
        encoder.train()(torch.randn(8, 1, 16, 16))  # BatchNorm running statistics move
    folder.mkdir(parents=True)
    RunFolder(folder).save_encoder(encoder)
    store.write_json(folder / store.CONFIG_FILE, {
        "run_id": folder.name, "suite": "tiny", "label": "cnn/linear/patch/l1 seed=0", "seed": 0, "image_size": 16,
        "dataset": {"name": "shapes", "params": {}}, "encoder": {"name": "cnn", "params": params},
        "normalization": {"mean": [0.5], "std": [0.25]}})
    return encoder.eval()


def test_load_encoder_returns_the_trained_encoder_in_eval_mode(tmp_path):
    run_dir = tmp_path / "runs" / "0123456789ab"
    trained = _finished_run(run_dir)
    encoder = mimbench.load_encoder(run_dir, device="cpu")
    assert not encoder.training and all(not m.training for m in encoder.modules())
    assert next(encoder.parameters()).device.type == "cpu"
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), trained(x), rtol=0, atol=0)
    assert "load_encoder" in mimbench.__all__


def test_load_encoder_of_a_folder_without_weights_is_a_config_error(tmp_path):
    run_dir = tmp_path / "runs" / "0123456789ab"
    _finished_run(run_dir)
    (run_dir / store.ENCODER_FILE).unlink()  # a run still training, or one that failed
    with pytest.raises(ConfigError, match=r"no encoder\.pt in .*a run still training"):
        mimbench.load_encoder(run_dir)
    baseline = tmp_path / "runs" / "baseline00000"
    baseline.mkdir()
    store.write_json(baseline / store.CONFIG_FILE, {"run_id": "b", "baseline": "random-init", "encoder": None})
    with pytest.raises(ConfigError, match="is a baseline"):
        mimbench.load_encoder(baseline)
    with pytest.raises(ConfigError, match="run folder not found"):
        mimbench.load_encoder(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="--device 'tpu'"):
        mimbench.load_encoder(run_dir, device="tpu")


# ---------------------------------------------------------------------------- declared dtypes

def test_column_types_come_from_annotations_not_values():
    from typing import Any, Literal

    assert [columns.column_type(a) for a in (float, int, bool, str, int | None, float | None, int | float)] == \
        ["float", "int", "bool", "string", "int", "float", "float"]
    assert columns.column_type(Literal["sincos", "learned"]) == "string"
    assert columns.column_type(list[int]) == "string"  # JSON text in the summary
    assert columns.column_type(Any) is None and columns.column_type(int | str) is None


def test_the_quick_plan_declares_its_param_types():
    from mimbench.jobs import PluginSources
    from mimbench.planning import param_types, plan_suite
    from mimbench.runtime import registry_for
    from mimbench.suite import load_suite

    registry = registry_for(PluginSources.from_cli(()))
    declared = param_types(plan_suite(load_suite("quick"), registry, "packaged:quick"), registry)
    assert declared["encoder.mlp_ratio"] == "float" and declared["encoder.dim"] == "int"
    assert declared["masker.ratio"] == "float" and declared["train.epochs"] == "int"
    assert declared["eval.labels_per_class"] == "int" and declared["loss.norm_pix"] == "bool"


def _typed_folder(tmp_path: Path) -> Path:
    """A suite folder whose summary.csv was written by summary_table with declared types."""
    folder = tmp_path / "typed"
    folder.mkdir()
    types = {"encoder.mlp_ratio": "float", "encoder.dim": "int", "eval.labels_per_class": "int",
             "encoder.pos_embed": "string", "loss.norm_pix": "bool"}
    declared = [*columns.RECONSTRUCTION_COLUMNS, *columns.accuracy_columns("linear_acc", "linear")]
    SuiteFolder(folder).write_columns(declared, types)
    rows = [{"run_id": f"r{seed}", "status": "done", "dataset": "shapes", "encoder": "vit", "seed": seed,
             "pretrained": True, "baseline": None, "recon_psnr": 20.0 + seed, "linear_acc": 0.5,
             "linear_steps": 100, "encoder.mlp_ratio": 4.0, "encoder.dim": 64, "encoder.pos_embed": "sincos",
             "loss.norm_pix": False, "eval.labels_per_class": 10 if seed else None} for seed in (0, 1)]
    table = summary_table(rows, declared, SuiteFolder(folder).read_param_types())
    (folder / "summary.csv").write_text(table.to_csv(index=False))
    return folder


def test_summary_csv_and_load_keep_the_declared_types(tmp_path):
    folder = _typed_folder(tmp_path)
    text = (folder / "summary.csv").read_text()
    assert ",4.0," in text  # a float param written as a float, not as 4
    loaded = mimbench.load(folder)
    dtypes = {column: str(dtype) for column, dtype in loaded.dtypes.items()}
    assert dtypes["encoder.mlp_ratio"] == "Float64" and loaded["encoder.mlp_ratio"].tolist() == [4.0, 4.0]
    assert dtypes["encoder.dim"] == "Int64" and dtypes["eval.labels_per_class"] == "Int64"
    assert loaded["eval.labels_per_class"].isna().tolist() == [True, False]
    assert dtypes["encoder.pos_embed"] == "string" and dtypes["loss.norm_pix"] == "boolean"
    assert dtypes["recon_psnr"] == "Float64" and dtypes["linear_acc"] == "Float64"  # 0.5 and whole PSNRs alike
    assert dtypes["seed"] == "Int64" and dtypes["pretrained"] == "boolean" and dtypes["run_id"] == "string"
    assert dtypes["linear_steps"] == "Int64"  # declared nowhere: the type it was written with


def test_without_recorded_types_a_float_column_is_never_made_an_int(tmp_path):
    folder = _typed_folder(tmp_path)
    (folder / "columns.json").write_text(columns.dumps(list(columns.RECONSTRUCTION_COLUMNS)))  # an older folder
    loaded = mimbench.load(folder)
    assert str(loaded["encoder.mlp_ratio"].dtype) == "Float64"
    assert str(loaded["encoder.dim"].dtype) == "Int64"


# ---------------------------------------------------------------------------- config_id

def test_config_id_is_short_readable_unique_and_stable(tmp_path):
    folder = hand_suite(tmp_path, seeds=[0, 1, 2])
    table = mimbench.table(folder)
    ids = table["config_id"].tolist()
    assert len(set(ids)) == len(ids) == len(table)
    for config_id, label in zip(ids, table["label"]):
        assert config_id.startswith(label + " #") and len(config_id) == len(label) + 10
        assert not config_id.startswith("[")
    assert mimbench.table(folder)["config_id"].tolist() == ids  # the same folder, the same ids


def test_config_ids_stay_unique_when_labels_collide():
    from mimbench.report.config_ids import readable_ids

    ids = readable_ids(["[1]", "[2]", "[1]"], ["vit / patch"] * 3)
    assert ids[0] == ids[2] and ids[0] != ids[1] and all(i.startswith("vit / patch #") for i in ids)


# ---------------------------------------------------------------------------- figures

def test_the_psnr_figure_draws_points_with_intervals_not_bars(tmp_path):
    from mimbench.report.results import labelled_runs
    from mimbench.report.plots import psnr_figure

    folder = hand_suite(tmp_path, seeds=[0, 1, 2, 3])
    runs = labelled_runs(folder)
    fig = psnr_figure(runs)
    assert len(fig.axes) == 2
    for ax, key in zip(fig.axes, ("recon_psnr", "ref_psnr")):
        assert not ax.patches  # no bars
        means = {c.get_label().lstrip("_"): c.lines[0].get_ydata()[0] for c in ax.containers}
        patch = runs[(runs["masker"] == "patch") & runs["pretrained"]][key].astype(float)
        assert means["cnn: patch"] == pytest.approx(patch.mean())
        low, high = stats.mean_interval(patch.to_numpy())
        bar = next(c for c in ax.containers if c.get_label() == "_cnn: patch").lines[2][0]
        assert sorted(bar.get_segments()[0][:, 1]) == pytest.approx([low, high])
        assert "95% interval" in ax.get_title().replace("\n", " ")


def test_no_correlation_is_claimed_over_fewer_than_5_configurations(tmp_path):
    from mimbench.report import aggregate
    from mimbench.report.results import labelled_runs
    from mimbench.report.plots import psnr_vs_accuracy_figure

    folder = hand_suite(tmp_path, seeds=[0, 1, 2])
    fig = psnr_vs_accuracy_figure(aggregate(labelled_runs(folder)))
    title = fig.axes[0].get_title().replace("\n", " ")
    assert "no correlation claimed: n = 3 configurations" in title and "ρ" not in title


def test_spearman_has_its_interval_and_exact_p_value():
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    y = [0.2, 0.1, 0.5, 0.3, 0.6, 0.4]
    found = stats.spearman(x, y)
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    rho = np.corrcoef(rx, ry)[0, 1]
    as_extreme = [abs(np.corrcoef(rx, np.array(p))[0, 1]) >= abs(rho) - 1e-12 for p in itertools.permutations(ry)]
    assert found.n == 6 and found.rho == pytest.approx(rho)
    assert found.p_value == pytest.approx(np.mean(as_extreme))  # every pairing, by hand
    se = math.sqrt((1 + rho ** 2 / 2) / 3)
    assert found.ci_low == pytest.approx(math.tanh(math.atanh(rho) - 1.959964 * se), abs=1e-5)
    assert found.ci_low < found.rho < found.ci_high
    assert "n = 6" in found.text() and "p = " in found.text()
    assert stats.spearman(x[:4], y[:4]) is None  # too few: nothing claimed
    assert stats.spearman(x, [1.0] * 6) is None
