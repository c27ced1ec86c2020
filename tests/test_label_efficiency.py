"""Few-label evaluation: class-balanced label subsets, re-evaluation of saved encoders without
pre-training again, and probes that never choose on the test split."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import run_cli, write_suite_file
from mimbench.data import DeviceImages, Normalizer, class_balanced_indices
from mimbench.probing import ProbeContext, layerwise

SUITE = """
name: tiny
dataset: {name: shapes, params: {num_images: 240}}
image_size: 16
seeds: [0]
train: {epochs: 1, batch_size: 32, log_every: 1}
eval: {batch_size: 60, probes: [linear, {name: knn, params: {k: 3}}]}
grid:
  encoder: [{name: cnn, params: {hidden_dim: 8}}]
  decoder: [linear]
  masker: [pixel, {name: patch, params: {mask_patch_size: 4}}]
  loss: [l1]
"""

RECORDING_PROBE = '''
import hashlib
import json
from mimbench.plugin import hookimpl

class Record:
    """Writes what it was given to fit and to score on."""
    def __call__(self, context):
        train = [b.cpu() for b, _ in context.train.batches(1000)]
        digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in train)).hexdigest()
        test_count = sum(len(l) for _, l in context.test.batches(1000))
        labels = [l.cpu() for _, l in context.train.batches(1000)]
        import torch
        counts = torch.cat(labels).bincount().tolist()
        with open({log!r}, "a") as f:
            f.write(json.dumps({{"seed": context.seed, "digest": digest, "train": len(context.train),
                                "counts": counts, "test": test_count}}) + "\\n")
        return {{}}

@hookimpl
def mimbench_register_probes(register):
    register("record", Record)
'''


def summary(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "tiny" / "summary.csv")


def test_class_balanced_indices_are_a_function_of_labels_count_and_seed():
    labels = torch.arange(60) % 6
    first = class_balanced_indices(labels, 4, seed=0)
    assert len(first) == 24 and torch.equal(first, first.sort().values)
    assert labels[first].bincount().tolist() == [4] * 6
    assert torch.equal(first, class_balanced_indices(labels, 4, seed=0))
    assert not torch.equal(first, class_balanced_indices(labels, 4, seed=1))
    assert set(class_balanced_indices(labels, 2, seed=0).tolist()) <= set(range(60))
    with pytest.raises(ValueError, match="class 0 has only 10 labelled train images"):
        class_balanced_indices(labels, 11, seed=0)


def test_every_run_and_baseline_of_a_seed_fits_on_the_same_subset_and_scores_on_the_whole_test_split(tmp_path):
    log = tmp_path / "seen.jsonl"
    plugin = tmp_path / "record_probe.py"
    plugin.write_text(RECORDING_PROBE.format(log=str(log)))
    suite = write_suite_file(tmp_path, SUITE.replace("seeds: [0]", "seeds: [0, 1]"))
    result = run_cli("run", str(suite), "--out", str(tmp_path / "out"), "--plugin", str(plugin),
                     "--set", "eval.probes=[record]", "--set", "eval.labels_per_class=5")
    assert result.exit_code == 0, result.output
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(seen) == 2 * (2 + 2)  # per seed: 2 runs, random-init, pixels
    for seed in (0, 1):
        mine = [s for s in seen if s["seed"] == seed]
        assert len({s["digest"] for s in mine}) == 1  # one subset for every run and baseline of the seed
        assert all(s["train"] == 30 and s["counts"] == [5] * 6 and s["test"] == 240 for s in mine)
    assert len({s["digest"] for s in seen}) == 2  # another seed draws another subset
    table = summary(tmp_path / "out")
    assert (table["eval.labels_per_class"] == 5).all() and (table.probe_labels_per_class == 5).all()


def test_block_choice_uses_only_the_label_subset():
    """``layer: all`` picks its block on a part of the probe's train subset, never on test images."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (60, 1, 4, 4), generator=generator, dtype=torch.uint8)
    labels = torch.arange(60) % 6
    full = DeviceImages(images, labels, 6)
    train = full.subset(class_balanced_indices(labels, 5, seed=0))
    test = DeviceImages(images[:50], labels[:50], 6)

    class TwoBlocks(torch.nn.Module):
        out_dim, stride = 16, 4

        def forward(self, x, mask=None):
            return x.flatten(1)[:, :, None, None]

        def blocks(self, x):
            return [x.flatten(1)[:, :, None, None] * 2, self.forward(x)]

    calls = []

    def score(train_x, train_y, eval_x, eval_y, classes):
        calls.append((len(train_x), len(eval_x)))
        return 0.5, {}

    context = ProbeContext(TwoBlocks(), train, test, Normalizer(torch.zeros(1), torch.ones(1)),
                           torch.device("cpu"), 0)
    layerwise(context, "all", "spy", score)
    choosing = [c for c in calls if c[0] != 30]
    assert choosing == [(27, 3), (27, 3)]  # 10% of the 30 subset images held out, per block
    assert all(c == (30, 50) for c in calls if c[0] == 30)  # the test split only scores


def test_a_label_sweep_added_to_a_finished_suite_trains_nothing_again(tmp_path):
    suite, out = write_suite_file(tmp_path, SUITE), tmp_path / "out"
    assert run_cli("run", str(suite), "--out", str(out)).exit_code == 0
    before = summary(out)
    trained = {p: p.stat().st_mtime_ns for p in (out / "tiny" / "runs").glob("*/encoder.pt")}
    assert len(trained) == 2

    swept = run_cli("run", str(suite), "--out", str(out), "--set", "sweep={eval.labels_per_class: [null, 5, 10]}")
    assert swept.exit_code == 0, swept.output
    assert swept.output.count("already finished, skipped") == len(before) == 4
    assert {p: p.stat().st_mtime_ns for p in (out / "tiny" / "runs").glob("*/encoder.pt")} == trained
    table = summary(out)
    assert len(table) == 12 and (table.status == "done").all()
    runs = table[table.pretrained]
    assert sorted(runs["eval.labels_per_class"].fillna(0).astype(int)) == [0, 0, 5, 5, 10, 10]
    # the same pre-training behind every label count: reconstruction and training columns carried over
    for masker, group in runs.groupby("masker"):
        assert group.recon_psnr.nunique() == 1 and group.train_seconds.nunique() == 1, masker
    few = runs[runs["eval.labels_per_class"] == 5]
    for _, row in few.iterrows():
        metrics = json.loads((out / "tiny" / "runs" / row.run_id / "metrics.json").read_text())
        assert metrics["pretrained_in"] in set(before.run_id)
        assert not (out / "tiny" / "runs" / row.run_id / "encoder.pt").exists()
    baselines = table[~table.pretrained]
    assert sorted(baselines["eval.labels_per_class"].fillna(0).astype(int)) == [0, 0, 5, 5, 10, 10]
    assert baselines[baselines["eval.labels_per_class"] == 5].probe_labels_per_class.eq(5).all()


def test_a_fresh_label_sweep_pretrains_each_configuration_once(tmp_path):
    suite, out = write_suite_file(tmp_path, SUITE), tmp_path / "out"
    result = run_cli("run", str(suite), "--out", str(out), "--set", "sweep={eval.labels_per_class: [5, 10]}",
                     "--set", "eval.probes=[{name: knn, params: {k: 3}}]")
    assert result.exit_code == 0, result.output
    assert len(list((out / "tiny" / "runs").glob("*/encoder.pt"))) == 2
    table = summary(out)
    runs = table[table.pretrained]
    assert len(runs) == 4 and (runs.status == "done").all() and runs.knn_acc.notna().all()
    assert "labels_per_class=5" in result.output and "labels_per_class=10" in result.output
    again = run_cli("run", str(suite), "--out", str(out), "--set", "sweep={eval.labels_per_class: [5, 10]}",
                    "--set", "eval.probes=[{name: knn, params: {k: 3}}, linear]")
    assert again.exit_code == 0, again.output
    assert again.output.count("added probes linear") == 8  # 4 runs (2 of them evaluation-only) + 4 baselines
    assert summary(out).linear_acc.notna().all()


def test_too_many_labels_per_class_is_refused_before_training(tmp_path):
    suite = write_suite_file(tmp_path, SUITE)
    result = run_cli("run", str(suite), "--dry-run", "--set", "eval.labels_per_class=41")
    assert result.exit_code == 2
    assert "eval.labels_per_class 41: the labelled train split has only 40 images in its smallest class" in result.output
    bad = run_cli("run", str(suite), "--dry-run", "--set", "sweep={eval.labels_per_class: [5, many]}")
    assert bad.exit_code == 2 and "'many' is not null or an int in 1..2147483647" in bad.output


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists(),
                    reason="needs the full Fashion-MNIST (apt install dataset-fashion-mnist)")
def test_the_packaged_label_efficiency_suite_lists_its_runs():
    result = run_cli("run", "label-efficiency", "--dry-run", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "60000 train / 10000 test images" in result.output
    lines = [line for line in result.output.splitlines()[1:] if not line.startswith("seeds: ")]
    assert len(lines) == 2 * 3 * 3 + 6 * 3  # runs: 2 maskers x 3 label counts x 3 seeds; baselines: 2 per seed and count
    assert sum(bool(re.search(r"labels(_per_class)?=10\b", line)) for line in lines) == 6 + 6
