"""Protocol agreement: agreement.csv (Kendall's τ between probes), probe_gaps.csv, and the report's
flags on conclusions that hold under one probe only."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from helpers import run_cli, write_suite_file
from mimbench.columns import accuracy_columns
from mimbench.report import agreement, probe_gaps
from mimbench.report.agreement import kendall_with_interval, only_under, sign_disagreements

DECLARED = accuracy_columns("linear_acc", "linear") + accuracy_columns("attentive_acc", "attentive")


def scores(means: dict[str, tuple[float, float]], seeds: int, noise: float, rng_seed: int = 0) -> pd.DataFrame:
    """Per-seed scores of configurations around the given (linear, attentive) means."""
    rng = np.random.default_rng(rng_seed)
    rows = [{"config_id": config, "seed": seed, "linear_acc": a + noise * rng.standard_normal(),
             "attentive_acc": b + noise * rng.standard_normal()}
            for config, (a, b) in means.items() for seed in range(seeds)]
    return pd.DataFrame(rows)


def test_tau_is_scipys_on_the_mean_scores_and_inside_its_jackknife_interval():
    frame = scores({"a": (0.1, 0.5), "b": (0.2, 0.3), "c": (0.3, 0.6), "d": (0.4, 0.4), "e": (0.5, 0.7)}, 4, 0.05)
    tau, low, high, seeds = kendall_with_interval(frame, "linear_acc", "attentive_acc")
    means = frame.groupby("config_id")[["linear_acc", "attentive_acc"]].mean()
    assert tau == pytest.approx(scipy_stats.kendalltau(means["linear_acc"], means["attentive_acc"]).statistic)
    assert seeds == 4 and -1 <= low <= tau <= high <= 1

    # jackknife by hand: the τ of the means with each seed left out
    left_out = [scipy_stats.kendalltau(*frame[frame["seed"] != s].groupby("config_id")[["linear_acc", "attentive_acc"]]
                                       .mean().to_numpy().T).statistic for s in range(4)]
    se = math.sqrt(3 / 4 * sum((t - np.mean(left_out)) ** 2 for t in left_out))
    assert high == pytest.approx(min(1.0, tau + scipy_stats.t.ppf(0.975, 3) * se))


def test_one_seed_has_no_interval_and_a_perfect_agreement_is_one():
    frame = scores({"a": (0.1, 0.2), "b": (0.2, 0.4), "c": (0.3, 0.6)}, 1, 0.0)
    tau, low, high, seeds = kendall_with_interval(frame, "linear_acc", "attentive_acc")
    assert tau == 1.0 and seeds == 1 and math.isnan(low) and math.isnan(high)


def test_the_jackknife_interval_covers_the_tau_of_the_true_means():
    """Configurations with true means whose orders under the two probes agree partly (τ = 0.6);
    the interval should hold the τ of the true means in most repetitions (8 seeds, clear gaps)."""
    true = {"a": (0.1, 0.3), "b": (0.2, 0.1), "c": (0.3, 0.4), "d": (0.4, 0.5), "e": (0.5, 0.6)}
    target = scipy_stats.kendalltau([m[0] for m in true.values()], [m[1] for m in true.values()]).statistic
    held = [(lambda t: t[1] <= target <= t[2])(kendall_with_interval(scores(true, 8, 0.08, seed), "linear_acc",
                                                                      "attentive_acc")) for seed in range(200)]
    assert np.mean(held) >= 0.85


def comparison_frame() -> pd.DataFrame:
    rows = [("pixels", "linear_acc", "vit / patch", -0.10, True), ("pixels", "attentive_acc", "vit / patch", 0.05, True),
            ("random-init", "linear_acc", "vit / patch", -0.04, True),
            ("random-init", "attentive_acc", "vit / patch", -0.01, False)]
    reference = {"pixels": "raw pixels (baseline)", "random-init": "vit (random-init)"}
    return pd.DataFrame([{"family": f, "metric": m, "configuration": c, "reference": reference[f], "labels_per_class": None,
                          "mean_diff": d, "ci_low": d - 0.02, "ci_high": d + 0.02, "significant": r, "resolved": r}
                         for f, m, c, d, r in rows])


def test_comparisons_whose_sign_changes_with_the_probe_are_flagged():
    flipped = sign_disagreements(comparison_frame(), DECLARED)
    assert len(flipped) == 1 and set(flipped[0]["family"]) == {"pixels"}


def test_a_conclusion_under_one_probe_only_says_so():
    frame = comparison_frame()
    rows = list(frame.itertuples(index=False))
    assert only_under(rows[0], frame, DECLARED) == " (under linear only; attentive: the opposite)"
    assert only_under(rows[2], frame, DECLARED) == " (under linear only; attentive: not separated)"


SUITE = """
name: protocols
dataset: {name: DATASET, params: {num_images: 240}}
image_size: 16
seeds: [0, 1]
train: {epochs: 1, batch_size: 32, warmup_epochs: 0.2}
eval:
  probes: [linear, knn, {name: attentive, params: {steps: 60, lr: [0.01, 0.1], queries: [2, 8]}}]
  baselines: [random-init]
grid:
  encoder: {name: vit, params: {dim: 32, depth: 2, heads: 2, patch_size: 4}}
  decoder: linear
  masker: [pixel, patch, region]
  loss: l1
"""

SHUFFLED_TEST_LABELS = '''
import torch
from mimbench.plugin import TensorImageDataset, hookimpl
from mimbench_plugins.datasets import shapes


def shapes_shuffled_test(split, image_size=32, num_images=None, seed=0):
    data = shapes(split, image_size, num_images, seed)
    if split != "train":
        order = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(7))
        data = TensorImageDataset(data.images, data.labels[order], data.num_classes)
    return data


@hookimpl
def mimbench_register_datasets(register):
    register("shapes-shuffled-test", shapes_shuffled_test)
'''


@pytest.fixture(scope="module")
def protocol_suites(tmp_path_factory):
    """The suite run on shapes, and again with the test labels shuffled (the train split unchanged)."""
    tmp = tmp_path_factory.mktemp("protocols")
    plugin = tmp / "shuffled.py"
    plugin.write_text(SHUFFLED_TEST_LABELS)
    folders = {}
    for dataset in ("shapes", "shapes-shuffled-test"):
        suite = write_suite_file(tmp, SUITE.replace("DATASET", dataset), f"{dataset}.yaml")
        result = run_cli("run", str(suite), "--out", str(tmp / dataset), "--plugin", str(plugin),
                         "--set", "execution.threads=1")
        assert result.exit_code == 0, result.output
        folders[dataset] = tmp / dataset / "protocols"
    return folders


def test_a_suite_reports_attentive_accuracy_and_every_chosen_value(protocol_suites):
    summary = pd.read_csv(protocol_suites["shapes"] / "summary.csv")
    assert len(summary) == 8 and (summary["status"] == "done").all()
    for column in ("attentive_acc", "attentive_params", "linear_hp_weight_decay", "knn_hp_k", "knn_hp_temperature",
                   "attentive_hp_lr", "attentive_hp_weight_decay", "attentive_hp_queries"):
        assert summary[column].notna().all(), column
    declared = {c["key"] for c in json.loads((protocol_suites["shapes"] / "columns.json").read_text())["columns"]}
    assert {"attentive_acc", "attentive_hp_lr", "knn_hp_k", "linear_hp_weight_decay"} <= declared


def test_shuffled_test_labels_change_no_chosen_value_and_leave_attentive_at_chance(protocol_suites):
    honest, shuffled = (pd.read_csv(folder / "summary.csv").sort_values(["masker", "baseline", "seed"])
                        .reset_index(drop=True) for folder in protocol_suites.values())
    chosen = [c for c in honest.columns if "_hp_" in c]
    assert len(chosen) == 6
    pd.testing.assert_frame_equal(honest[chosen], shuffled[chosen])
    assert shuffled["attentive_acc"].mean() < 1 / 6 + 0.1 < honest["attentive_acc"].mean()  # 6 shapes


def test_agreement_csv_is_kendalls_tau_of_the_mean_scores(protocol_suites):
    folder = protocol_suites["shapes"]
    agreed = pd.read_csv(folder / "agreement.csv")
    assert list(agreed.columns) == agreement.COLUMNS
    assert set(zip(agreed["probe_a"], agreed["probe_b"])) == {("linear", "knn"), ("linear", "attentive"),
                                                             ("knn", "attentive")}
    summary = pd.read_csv(folder / "summary.csv")
    means = summary[summary["pretrained"]].groupby("masker")[["linear_acc", "knn_acc", "attentive_acc"]].mean()
    for row in agreed.itertuples(index=False):
        expected = scipy_stats.kendalltau(means[row.metric_a], means[row.metric_b]).statistic
        assert row.kendall_tau == pytest.approx(expected, abs=1e-9) and row.n_configurations == 3
        assert row.n_seeds == 2 and row.ci_low <= row.kendall_tau <= row.ci_high
    report = (folder / "report.md").read_text()
    assert "## Do the probes agree?" in report and "Comparisons whose difference changes sign" in report


def test_probe_gaps_pair_each_run_with_itself(protocol_suites):
    folder = protocol_suites["shapes"]
    gaps = pd.read_csv(folder / "probe_gaps.csv")
    assert list(gaps.columns) == probe_gaps.COLUMNS
    summary = pd.read_csv(folder / "summary.csv")
    row = gaps[(gaps["configuration"] == "vit / patch") & (gaps["metric"] == "attentive_acc")
               & (gaps["reference_metric"] == "linear_acc")].iloc[0]
    patch = summary[summary["masker"] == "patch"]
    assert row["mean_diff"] == pytest.approx((patch["attentive_acc"] - patch["linear_acc"]).mean(), abs=1e-12)
    assert row["n"] == 2 and row["n_images"] == 240 and row["ci_low"] <= row["mean_diff"] <= row["ci_high"]
    assert len(gaps) == 3 * 4  # 3 pairs of probes x (3 configurations + random-init)
