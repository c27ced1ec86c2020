"""The Python API: ``mimbench.run`` from a dict or a YAML path, ``load``, ``table``, ``plot``."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import mimbench
from mimbench.errors import ConfigError

SUITE = {
    "name": "api",
    "dataset": {"name": "shapes", "params": {"num_images": 64}},
    "image_size": 16,
    "seeds": [0, 1],
    "train": {"epochs": 1, "batch_size": 32},
    "eval": {"batch_size": 64, "probes": ["knn"], "baselines": ["pixels"]},
    "grid": {"encoder": [{"name": "cnn", "params": {"hidden_dim": 8}}], "decoder": ["linear"],
             "masker": ["pixel"], "loss": ["l1"]},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """The suite run once from a dict: its folder and what ``mimbench.run`` returned."""
    out = tmp_path_factory.mktemp("api") / "results"
    returned = mimbench.run(SUITE, out=out, overrides={"execution.threads": 1})
    return out / "api", returned


def test_run_from_a_dict_returns_the_typed_summary(finished):
    suite_dir, returned = finished
    assert list(returned.status) == ["done"] * 4 and sorted(returned.baseline.fillna("")) == ["", "", "pixels", "pixels"]
    on_disk = pd.read_csv(suite_dir / "summary.csv")
    assert list(returned.run_id) == list(on_disk.run_id)
    assert returned.knn_acc.tolist() == pytest.approx(on_disk.knn_acc.tolist())
    assert str(returned.pretrained.dtype) == "boolean" and str(returned.seed.dtype) == "Int64"
    assert str(returned.recon_psnr.dtype) == "Float64" and str(returned.encoder.dtype) == "string"
    assert (suite_dir / "report.html").exists()
    assert SUITE["train"] == {"epochs": 1, "batch_size": 32}  # the caller's dict is left as it was


def test_load_table_and_plot_read_a_finished_suite(finished):
    suite_dir, returned = finished
    pd.testing.assert_frame_equal(mimbench.load(suite_dir), returned)
    pd.testing.assert_frame_equal(mimbench.load(suite_dir), pd.read_parquet(suite_dir / "summary.parquet"))
    table = mimbench.table(str(suite_dir))
    written = pd.read_csv(suite_dir / "table.csv")
    assert len(table) == len(written) == 2  # the configuration and the pixels baseline, over 2 seeds
    assert table.knn_acc_mean.tolist() == pytest.approx(written.knn_acc_mean.tolist())
    assert table.knn_acc_n.tolist() == [2, 2]
    figure = mimbench.plot(suite_dir, "loss_curves")
    assert type(figure).__name__ == "Figure" and figure.axes
    with pytest.raises(ConfigError, match=r"unknown figure 'nope' \(this suite has: comparisons, probe_accuracy, psnr, compute"):
        mimbench.plot(suite_dir, "nope")
    with pytest.raises(ConfigError, match="results folder not found"):
        mimbench.load(suite_dir / "missing")


def test_import_load_table_and_plot_do_not_import_torch(finished):
    suite_dir, _ = finished
    code = ("import sys, mimbench\n"
            "assert 'torch' not in sys.modules and 'pandas' not in sys.modules, 'import mimbench is not light'\n"
            f"summary = mimbench.load({str(suite_dir)!r}); table = mimbench.table({str(suite_dir)!r})\n"
            f"figure = mimbench.plot({str(suite_dir)!r}, 'psnr')\n"
            "print(len(summary), len(table), 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["4", "2", "False"]


def test_run_from_a_yaml_path_skips_what_is_finished(finished, tmp_path):
    suite_dir, returned = finished
    path = tmp_path / "api.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    again = mimbench.run(path, out=suite_dir.parent, report=False)  # the same suite, already finished
    pd.testing.assert_frame_equal(again, returned)
    assert mimbench.run(str(path), out=suite_dir.parent, overrides=["seeds=[0]"], report=False).run_id.tolist() == \
        [r for r, s in zip(returned.run_id, returned.seed) if s == 0]


def test_bad_input_raises_a_config_error(tmp_path):
    bad = copy.deepcopy(SUITE)
    bad["train"]["epoch"] = 3
    with pytest.raises(ConfigError, match="suite: train.epoch: unknown key; did you mean 'epochs'"):
        mimbench.run(bad, out=tmp_path)
    with pytest.raises(ConfigError, match="unknown tracker 'nope'"):
        mimbench.run(SUITE, out=tmp_path, trackers=["nope"])
    assert not (tmp_path / "api").exists()
