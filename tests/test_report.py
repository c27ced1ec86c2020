"""Publishing a finished suite: aggregation, tables, plots and the report, on a hand-made suite folder.

The suite folder is written by hand (no training): 2 encoders x 2 maskers x a 2-value
``masker.ratio`` sweep x 3 seeds, ``random-init`` and ``pixels`` baselines, one failed and one
diverged run. Its metrics are simple sums, so the expected numbers below are worked out by hand.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from mimbench import columns
from mimbench.cli import cli
from mimbench.columns import MetricColumn
from mimbench.report.labelled import ensure_labelled, view
from mimbench.report.results import labelled_runs

SEEDS = (0, 1, 2)
ENCODERS = {"cnn": {"hidden_dim": 8}, "vit": {"depth": 2, "dim": 32, "patch_size": 4}}
MASKERS = {"pixel": {}, "patch": {"mask_patch_size": 4}}
RATIOS = (0.4, 0.6)
# linear_acc = encoder + masker + ratio + seed offsets; knn_acc = linear_acc - 0.05
LINEAR = {"cnn": 0.70, "vit": 0.60, "pixel": 0.0, "patch": 0.05, 0.4: 0.0, 0.6: 0.02}
SEED_OFFSET = {0: 0.0, 1: 0.01, 2: 0.03}
RANDOM_INIT = {"cnn": [0.50, 0.52, 0.51], "vit": [0.40, 0.40, 0.43]}
PIXELS = [0.45, 0.46, 0.44]
# recon_psnr = encoder + masker - ratio + seed offsets (dB); ref_psnr = recon_psnr - 0.5
PSNR = {"cnn": 20.0, "vit": 22.0, "pixel": 2.0, "patch": 0.0, 0.4: 0.0, 0.6: 1.0}
PSNR_SEED = {0: 0.0, 1: 0.1, 2: -0.1}
FAILED = ("vit", "pixel", 0.4, 2)
DIVERGED = ("vit", "patch", 0.6, 1)
ERROR = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
TRAIN = {"epochs": 5, "batch_size": 32, "lr": 0.001, "weight_decay": 0.05, "warmup_epochs": 1.0,
         "grad_clip": 5.0, "log_every": 50}
SUITE = {
    "name": "hand", "description": "hand-made results for the report tests", "dataset": {"name": "shapes", "params": {}},
    "image_size": 16, "seeds": list(SEEDS), "train": TRAIN,
    "eval": {"mask_seed": 0, "batch_size": 64, "probes": [{"name": "linear", "params": {}}, {"name": "knn", "params": {}}],
             "baselines": ["random-init", "pixels"], "dataset": None,
             "reference_masker": {"name": "patch", "params": {"ratio": 0.6, "mask_patch_size": 4}}},
    "grid": {"encoder": [{"name": n, "params": p} for n, p in ENCODERS.items()],
             "decoder": [{"name": "linear", "params": {}}],
             "masker": [{"name": n, "params": p} for n, p in MASKERS.items()],
             "loss": [{"name": "l1", "params": {}}]},
    "sweep": {"masker.ratio": list(RATIOS)},
}
#: What the driver writes to columns.json for this suite: the core's columns, then each probe's.
DECLARED = columns.merge(columns.RECONSTRUCTION_COLUMNS, columns.accuracy_columns("linear_acc", "linear", "all"),
                         columns.accuracy_columns("knn_acc", "kNN", latex="$k$-NN"))
VERSIONS = {"mimbench": "0.1.0", "torch": "2.5.1", "python": "3.11.2", "platform": "Linux-test-x86_64",
            "plugins": {"mimbench:maskers": "mimbench 0.1.0"}}


def linear_acc(encoder: str, masker: str, ratio: float, seed: int) -> float:
    return round(LINEAR[encoder] + LINEAR[masker] + LINEAR[ratio] + SEED_OFFSET[seed], 6)


def recon_psnr(encoder: str, masker: str, ratio: float, seed: int) -> float:
    return round(PSNR[encoder] + PSNR[masker] - PSNR[ratio] + PSNR_SEED[seed], 6)


def _run_rows() -> list[dict]:
    rows = []
    for seed in SEEDS:
        for encoder, encoder_params in ENCODERS.items():
            for masker, masker_params in MASKERS.items():
                for ratio in RATIOS:
                    key = (encoder, masker, ratio, seed)
                    row = {"run_id": f"r{len(rows):02d}{encoder}{masker}{int(ratio * 10)}s{seed}", "status": "done",
                           "dataset": "shapes", "encoder": encoder, "decoder": "linear", "masker": masker, "loss": "l1",
                           "seed": seed, "pretrained": True, "baseline": None}
                    if key == FAILED:
                        row.update(status="failed", error=ERROR)
                    elif key == DIVERGED:
                        row.update(status="diverged", epochs_completed=3, final_loss=float("nan"),
                                   train_seconds=4.0, images_per_second=900.0, wall_seconds=4.5)
                    else:
                        acc, psnr = linear_acc(*key), recon_psnr(*key)
                        row.update(mask_ratio_actual=ratio, mask_avgdist_px=1.5, recon_mse=10 ** (-psnr / 10),
                                   recon_psnr=psnr, ref_mse=10 ** (-(psnr - 0.5) / 10), ref_psnr=psnr - 0.5,
                                   linear_acc=acc, knn_acc=round(acc - 0.05, 6), linear_acc_best=acc,
                                   linear_best_block=1, **{"linear_acc@0": round(acc - 0.1, 6), "linear_acc@1": acc},
                                   recon_uses_target_stats=False, train_seconds=10.0, images_per_second=1000.0,
                                   probe_seconds=1.5, wall_seconds=12.0, epochs_completed=5, final_loss=0.3)
                    row.update({f"encoder.{k}": v for k, v in encoder_params.items()})
                    row.update({f"masker.{k}": v for k, v in masker_params.items()}, **{"masker.ratio": ratio})
                    row.update({"loss.masked_only": True}, **{f"train.{k}": v for k, v in TRAIN.items()})
                    rows.append(row)
    return rows


def _baseline_rows() -> list[dict]:
    rows = []
    for seed in SEEDS:
        for encoder, encoder_params in ENCODERS.items():
            acc = RANDOM_INIT[encoder][seed]
            rows.append({"run_id": f"b{encoder}s{seed}", "status": "done", "dataset": "shapes", "encoder": encoder,
                         "seed": seed, "pretrained": False, "baseline": "random-init", "linear_acc": acc,
                         "knn_acc": round(acc - 0.05, 6), "probe_seconds": 1.0, "wall_seconds": 1.2,
                         **{f"encoder.{k}": v for k, v in encoder_params.items()}})
        rows.append({"run_id": f"bpixelss{seed}", "status": "done", "dataset": "shapes", "encoder": "pixels",
                     "seed": seed, "pretrained": False, "baseline": "pixels", "linear_acc": PIXELS[seed],
                     "knn_acc": round(PIXELS[seed] - 0.05, 6), "probe_seconds": 0.5, "wall_seconds": 0.6})
    return rows


def _run_files(folder: Path, row: dict) -> None:
    folder.mkdir(parents=True)
    config = {"run_id": row["run_id"], "suite": "hand", "dataset": {"name": "shapes", "params": {}}, "image_size": 16,
              "seed": row["seed"], "device": "cuda:0 (NVIDIA H200)", "versions": VERSIONS}
    if row["pretrained"]:
        config.update(train=TRAIN, encoder={"name": row["encoder"], "params": ENCODERS[row["encoder"]]},
                      decoder={"name": "linear", "params": {}}, loss={"name": "l1", "params": {"masked_only": True}},
                      masker={"name": row["masker"], "params": {**MASKERS[row["masker"]], "ratio": row["masker.ratio"]}})
    else:
        config["baseline"] = row["baseline"]
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if row["status"] == "failed":
        (folder / "error.txt").write_text(f"Traceback (most recent call last):\n  File \"x.py\", line 1\n{ERROR}\n")
        return
    (folder / "metrics.json").write_text(json.dumps({k: row.get(k) for k in ("status", "linear_acc")}))
    if row["pretrained"]:
        epochs = row.get("epochs_completed", 5)
        losses = [0.5 * 0.8 ** e + 0.01 * row["seed"] for e in range(1, epochs + 1)]
        if row["status"] == "diverged":
            losses[-1] = float("nan")
        history = pd.DataFrame({"epoch": range(1, epochs + 1), "loss": losses, "lr": 1e-3,
                                "images_per_second": 1000.0, "seconds": 2.0})
        history.to_csv(folder / "history.csv", index=False)
    if row["status"] == "done" and row["pretrained"]:
        rng = np.random.default_rng(len(row["run_id"]) + row["seed"])
        picture = rng.integers(0, 255, (4 * 100 + 4, 8 * 100 + 4, 3), dtype=np.uint8)  # 8 x 4 images of 96 px
        Image.fromarray(picture).save(folder / "reconstructions.png")


def make_suite(root: Path, declared: list[MetricColumn] | None = DECLARED, extra=None) -> Path:
    """A finished suite folder, written by hand; returns it. ``declared`` goes to columns.json
    (None: no columns.json, as in folders written before it existed); ``extra(row)`` returns
    more summary columns for a row."""
    suite_dir = root / "hand"
    rows = _run_rows() + _baseline_rows()
    for row in rows:
        _run_files(suite_dir / "runs" / row["run_id"], row)
        if extra is not None and row["status"] == "done":
            row.update(extra(row))
    table = pd.DataFrame(rows).convert_dtypes()  # as store.write_summary does
    (suite_dir / "summary.csv").write_text(table.to_csv(index=False))
    (suite_dir / "suite.yaml").write_text(yaml.safe_dump(SUITE, sort_keys=False))
    if declared is not None:
        (suite_dir / "columns.json").write_text(columns.dumps(declared))
    return suite_dir


@pytest.fixture
def suite_dir(tmp_path) -> Path:
    return make_suite(tmp_path)


def run_cli(*args: str):
    result = CliRunner().invoke(cli, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture
def declared(suite_dir):
    from mimbench.report import load_summary
    from mimbench.folder import SuiteFolder
    return SuiteFolder(suite_dir).read_columns(list(load_summary(suite_dir).columns))


@pytest.fixture
def runs(suite_dir):
    from mimbench.report.results import labelled_runs
    return labelled_runs(suite_dir)


@pytest.fixture
def table(suite_dir, declared):
    from mimbench.report import aggregate
    return aggregate(view(labelled_runs(suite_dir), "table"), declared=declared).set_index("label", drop=False)


def expected(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1))


# ---------------------------------------------------------------- aggregation


def test_configurations_are_grouped_over_seeds_with_mean_std_and_count(table):
    row = table.loc["cnn / patch"].set_index("masker.ratio").loc[0.6]
    accs = [0.77, 0.78, 0.80]  # 0.70 + 0.05 + 0.02 + seed offsets 0, 0.01, 0.03
    assert row["linear_acc_mean"] == pytest.approx(expected(accs)[0]) == pytest.approx(0.783333, abs=1e-6)
    assert row["linear_acc_std"] == pytest.approx(expected(accs)[1]) == pytest.approx(0.015275, abs=1e-6)
    assert row["linear_acc_n"] == 3 and row["n_runs"] == 3 and row["n_done"] == 3
    assert row["knn_acc_mean"] == pytest.approx(0.733333, abs=1e-6)
    assert row["recon_psnr_mean"] == pytest.approx(19.0) and row["recon_psnr_std"] == pytest.approx(0.1)
    assert row["ref_psnr_mean"] == pytest.approx(18.5)
    assert row["seeds_done"] == "0,1,2"
    assert row["linear_acc@0_mean"] == pytest.approx(0.683333, abs=1e-6)  # per-block columns are aggregated too


def test_failed_and_diverged_runs_are_counted_not_averaged(table):
    failed = table.loc["vit / pixel"].set_index("masker.ratio").loc[0.4]
    assert (failed["n_runs"], failed["n_done"], failed["n_failed"], failed["n_diverged"]) == (3, 2, 1, 0)
    assert failed["linear_acc_mean"] == pytest.approx(np.mean([0.60, 0.61]))
    assert failed["linear_acc_std"] == pytest.approx(np.std([0.60, 0.61], ddof=1))
    assert failed["seeds_done"] == "0,1"
    diverged = table.loc["vit / patch"].set_index("masker.ratio").loc[0.6]
    assert (diverged["n_runs"], diverged["n_done"], diverged["n_failed"], diverged["n_diverged"]) == (3, 2, 0, 1)
    assert diverged["recon_psnr_n"] == 2 and diverged["recon_psnr_mean"] == pytest.approx(np.mean([21.0, 20.9]))


def test_gain_over_random_init_is_paired_by_seed(table):
    cnn = table.loc["cnn / patch"].set_index("masker.ratio").loc[0.6]
    diffs = np.array([0.77, 0.78, 0.80]) - np.array(RANDOM_INIT["cnn"])  # 0.27, 0.26, 0.29
    assert cnn["linear_acc_gain_mean"] == pytest.approx(diffs.mean()) == pytest.approx(0.273333, abs=1e-6)
    assert cnn["linear_acc_gain_std"] == pytest.approx(diffs.std(ddof=1)) == pytest.approx(0.015275, abs=1e-6)
    assert cnn["linear_acc_gain_n"] == 3
    # the diverged seed 1 has no pair: seeds 0 and 2 only, 0.67-0.40 and 0.70-0.43
    vit = table.loc["vit / patch"].set_index("masker.ratio").loc[0.6]
    assert vit["linear_acc_gain_n"] == 2
    assert vit["linear_acc_gain_mean"] == pytest.approx(0.27) and vit["linear_acc_gain_std"] == pytest.approx(0.0, abs=1e-9)
    # a gain against the vit baseline, not the cnn one: unpaired means would give 0.633 - 0.41
    vit_pixel = table.loc["vit / pixel"].set_index("masker.ratio").loc[0.6]
    assert vit_pixel["linear_acc_gain_mean"] == pytest.approx(np.mean(np.array([0.62, 0.63, 0.65]) - [0.40, 0.40, 0.43]))
    assert table.loc["cnn (random-init)", "linear_acc_gain_mean"] != table.loc["cnn (random-init)", "linear_acc_gain_mean"]


def test_baselines_are_rows_of_their_own_sorted_after_their_encoder(table):
    assert list(dict.fromkeys(table["label"])) == [
        "cnn / pixel", "cnn / patch", "cnn (random-init)", "vit / pixel", "vit / patch", "vit (random-init)",
        "raw pixels (baseline)"]
    assert list(table["masker.ratio"].iloc[:4]) == [0.4, 0.6, 0.4, 0.6]  # suite order within an encoder
    random_init = table.loc["vit (random-init)"]
    assert random_init["linear_acc_mean"] == pytest.approx(np.mean(RANDOM_INIT["vit"]))
    assert random_init["linear_acc_std"] == pytest.approx(np.std(RANDOM_INIT["vit"], ddof=1))
    assert not random_init["pretrained"] and random_init["n_done"] == 3
    pixels = table.loc["raw pixels (baseline)"]
    assert pixels["linear_acc_mean"] == pytest.approx(0.45) and pixels["linear_acc_std"] == pytest.approx(0.01)
    assert pd.isna(pixels["recon_psnr_mean"])
    assert len(table) == 8 + 3


def test_labels_show_only_the_params_that_vary(runs):
    labels = set(runs.loc[runs["pretrained"], "label"])
    assert labels == {f"{e} / {m}(ratio={r})" for e in ENCODERS for m in MASKERS for r in RATIOS}
    assert set(runs.loc[~runs["pretrained"], "label"]) == {"cnn (random-init)", "vit (random-init)", "raw pixels (baseline)"}


def test_failures_lists_every_unfinished_run_with_its_reason(runs):
    from mimbench.report import failures

    bad = failures(runs).set_index("status")
    assert sorted(bad.index) == ["diverged", "failed"]
    assert bad.loc["failed", "reason"] == ERROR
    assert bad.loc["failed", "label"] == "vit / pixel(ratio=0.4)" and bad.loc["failed", "seed"] == 2
    # an old-style record: epochs_completed 3 counted the epoch that diverged (its loss NaN)
    assert "non-finite" in bad.loc["diverged", "reason"] and "after 2 finished epochs" in bad.loc["diverged", "reason"]


def test_summaries_without_baseline_columns_still_aggregate(suite_dir):
    from mimbench.report import aggregate, load_summary

    summary = pd.read_csv(suite_dir / "summary.csv")
    old = summary[summary["baseline"].isna()].drop(columns=["baseline", "pretrained", "linear_acc", "knn_acc"])
    old.to_csv(suite_dir / "summary.csv", index=False)
    table = aggregate(load_summary(suite_dir))
    assert len(table) == 8 and table["pretrained"].all()
    assert "linear_acc_gain_mean" not in table.columns


# ---------------------------------------------------------------- tables


def test_tables_are_written_as_csv_markdown_latex_and_parquet(suite_dir, declared):
    from mimbench.report import write_report

    report = write_report(suite_dir)
    markdown = (suite_dir / "table.md").read_text()
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| encoder | masker | masker.ratio | n | PSNR (dB) | ref. PSNR (dB) | linear | Δ linear |")
    # the Δ with its 95% interval over the 3 paired seeds; no test with 3 seeds, so no bold either (the best
    # linear beats its runner-up in every seed, but 3 seeds cannot make a Holm-adjusted test say so)
    found = pd.read_csv(suite_dir / "comparisons.csv").set_index(["metric", "configuration", "reference"])
    gain = found.loc[("linear_acc", "cnn / patch(ratio=0.6)", "cnn (random-init)")]
    assert gain.n == 3 and gain.ci_low < gain.mean_diff < gain.ci_high
    assert (f"| cnn | patch | 0.6 | 3 | 19.00 ± 0.10 | 18.50 ± 0.10 | 0.783 ± 0.015 | "
            f"{gain.mean_diff:+.3f} [{gain.ci_low:+.3f}, {gain.ci_high:+.3f}] |") in markdown
    assert "**" not in "".join(lines)
    assert "| vit | pixel | 0.4 | 2/3 |" in markdown and "| vit | patch | 0.6 | 2/3 |" in markdown
    assert "| raw pixels | baseline | – | 3 | – | – | 0.450 ± 0.010 |" in markdown
    assert "ddof = 1" in markdown
    assert "best block" not in markdown  # linear_acc_best equals linear_acc: the last block was the best
    tex = (suite_dir / "table.tex").read_text()
    for piece in ("\\toprule", "\\midrule", "\\bottomrule", "\\begin{tabular}{lllrrrrrrrr}",
                  "cnn & patch & 0.6 & 3 & $19.00 \\pm 0.10$ & $18.50 \\pm 0.10$ & $0.783 \\pm 0.015$",
                  "$\\Delta$ linear", "masker.ratio"):
        assert piece in tex, piece
    assert "±" not in tex and "_" not in tex.replace("\\_", "")
    from mimbench.report import aggregate, load_summary
    from mimbench.report.tables import to_markdown

    table = aggregate(load_summary(suite_dir), declared=declared)
    table["linear_acc_best_mean"] += 0.01  # an earlier block was better: its column is shown
    assert "| linear, best block |" in to_markdown(table, declared=declared).splitlines()[0] + "|"
    csv = pd.read_csv(suite_dir / "table.csv")
    assert len(csv) == 11 and {"label", "n_done", "n_failed", "linear_acc_mean", "linear_acc_std", "linear_acc_n",
                               "linear_acc_gain_mean", "train_seconds_mean"} <= set(csv.columns)
    if "summary.parquet" in report.files:
        parquet = pd.read_parquet(suite_dir / "summary.parquet")
        assert len(parquet) == 24 + 9 and parquet["linear_acc"].sum() == pytest.approx(
            pd.read_csv(suite_dir / "summary.csv")["linear_acc"].sum())
    else:
        assert any("parquet" in w for w in report.warnings)


# ---------------------------------------------------------------- declared metric columns

#: A third-party probe's declaration: shown exactly like a built-in probe's.
CUSTOM = MetricColumn("mycustom_acc", "custom", "custom accuracy (top-1, fraction)", "accuracy")


def _custom_metrics(row: dict) -> dict:
    """What a third-party probe returns: an accuracy it declares (linear_acc - 0.1) and a score it does not."""
    return {"mycustom_acc": round(row["linear_acc"] - 0.1, 6), "mycustom_score": 0.5}


@pytest.fixture(scope="module")
def custom_suite(tmp_path_factory) -> Path:
    from mimbench.report import write_report

    suite_dir = make_suite(tmp_path_factory.mktemp("custom"), [*DECLARED, CUSTOM], _custom_metrics)
    write_report(suite_dir)
    return suite_dir


def test_a_declared_third_party_accuracy_is_shown_like_the_built_in_ones(custom_suite):
    from mimbench.report.plots import probe_accuracy_figure, psnr_vs_accuracy_figure
    from mimbench.folder import SuiteFolder

    markdown = (custom_suite / "table.md").read_text()
    header = markdown.splitlines()[0]
    assert header.startswith("| encoder | masker | masker.ratio | n | PSNR (dB) | ref. PSNR (dB) | linear | Δ linear | "
                             "kNN | Δ kNN | custom | Δ custom |")
    # the same seeds and offsets as linear, so the same gain over random-init, paired by seed (0.273)
    # (no bold: 3 seeds cannot make a Holm-adjusted test say which is best)
    row = next(line for line in markdown.splitlines() if line.startswith("| cnn | patch | 0.6 |"))
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    gain = cells[7]
    assert gain.startswith("+0.273 [") and cells[3:12] == ["3", "19.00 ± 0.10", "18.50 ± 0.10", "0.783 ± 0.015", gain,
                                                           "0.733 ± 0.015", gain, "0.683 ± 0.015", gain]
    assert "$\\Delta$ custom" in (custom_suite / "table.tex").read_text()
    assert "| custom |" in (custom_suite / "report.md").read_text()  # the baselines table too
    csv = pd.read_csv(custom_suite / "table.csv").set_index("label")
    assert csv.loc["cnn (random-init)", "mycustom_acc_mean"] == pytest.approx(np.mean(RANDOM_INIT["cnn"]) - 0.1)

    from mimbench.report import load_summary
    summary = load_summary(custom_suite)
    declared = SuiteFolder(custom_suite).read_columns(list(summary.columns))
    assert declared[-1] == CUSTOM and "mycustom_score" not in {c.key for c in declared}
    fig = probe_accuracy_figure(ensure_labelled(summary), declared)
    assert [ax.get_ylabel() for ax in fig.axes] == ["linear accuracy (top-1, fraction)",
                                                    "kNN accuracy (top-1, fraction)", CUSTOM.axis]
    custom = fig.axes[2]
    assert "custom accuracy" in custom.get_title() and len(custom.patches) == 4 * 2
    assert max(p.get_height() for p in custom.patches) == pytest.approx(0.683333, abs=1e-6)
    assert {line.get_label().split(":")[0] for line in custom.lines if line.get_gid() == "baseline"} == {
        "cnn (random-init)", "vit (random-init)", "raw pixels (baseline)"}
    from mimbench.report import aggregate
    assert psnr_vs_accuracy_figure(aggregate(ensure_labelled(summary), declared=declared), declared).axes[2] \
        .get_ylabel() == CUSTOM.axis
    assert (custom_suite / "figures" / "probe_accuracy.png").is_file()


def test_a_column_returned_but_not_declared_is_in_table_csv_only(custom_suite):
    csv = pd.read_csv(custom_suite / "table.csv")
    assert {"mycustom_score_mean", "mycustom_score_std", "mycustom_score_n"} <= set(csv.columns)
    assert "mycustom_score_gain_mean" not in csv.columns  # not an accuracy: no gain
    for name in ("table.md", "table.tex", "report.md"):
        text = (custom_suite / name).read_text()
        assert "mycustom_score" not in text and "0.500" not in text, name


def test_a_folder_without_columns_json_infers_the_columns_from_the_summary(tmp_path):
    """Results written before columns.json existed: every ``<name>_acc`` column is an accuracy
    named after its prefix, so the table is the same but for the probes' display names."""
    from mimbench.report import load_summary, write_report
    from mimbench.report.results import read_results
    from mimbench.report.tables import to_markdown
    from mimbench.folder import SuiteFolder

    old = make_suite(tmp_path / "old", declared=None)
    write_report(old)
    summary = load_summary(old)
    assert SuiteFolder(old).read_columns(list(summary.columns)) == columns.inferred(list(summary.columns))
    new = make_suite(tmp_path / "new")
    table = read_results(new).table
    expected = to_markdown(table, ["masker.ratio"], DECLARED).replace("kNN", "knn")
    markdown = (old / "table.md").read_text()
    assert markdown.startswith(expected)
    assert markdown.splitlines()[0].startswith("| encoder | masker | masker.ratio | n | PSNR (dB) | ref. PSNR (dB) | "
                                               "linear | Δ linear | knn | Δ knn |")
    assert "best block" not in markdown
    assert list(pd.read_csv(old / "table.csv").columns) == [c for c in table.columns if c != "config_id"]


def test_the_report_imports_neither_torch_nor_the_plugins():
    import subprocess
    import sys

    code = ("import sys; from mimbench.report import write_report, aggregate, load_summary; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('mimbench_plugins')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------- plots


def test_probe_accuracy_figure_has_a_bar_per_setup_and_encoder_and_baseline_lines(runs, declared):
    from mimbench.report.plots import probe_accuracy_figure

    fig = probe_accuracy_figure(runs, declared)
    assert [ax.get_ylabel() for ax in fig.axes] == ["linear accuracy (top-1, fraction)",
                                                    "kNN accuracy (top-1, fraction)"]
    ax = fig.axes[0]
    assert ax.get_xlabel() == "masker" and "linear accuracy" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["pixel(ratio=0.4)", "pixel(ratio=0.6)",
                                                            "patch(ratio=0.4)", "patch(ratio=0.6)"]
    assert len(ax.patches) == 4 * 2
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights[-1] == pytest.approx(0.783333, abs=1e-6) and heights[0] == pytest.approx(0.605)
    baselines = {line.get_label().split(":")[0]: line.get_ydata()[0] for line in ax.lines if line.get_gid() == "baseline"}
    assert baselines == pytest.approx({"cnn (random-init)": 0.51, "vit (random-init)": 0.41,
                                       "raw pixels (baseline)": 0.45})
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:2] == ["cnn", "vit"] and len(legend) == 5


def test_psnr_figure_has_own_and_reference_masker_panels(runs, declared):
    from mimbench.report.plots import psnr_figure

    fig = psnr_figure(runs, declared)
    assert len(fig.axes) == 2
    assert [ax.get_ylabel() for ax in fig.axes] == ["PSNR, own masker (dB)", "PSNR, reference masker (dB)"]
    for ax in fig.axes:  # a point with its interval per configuration, no bars (the axis does not start at 0)
        assert len(ax.containers) == 8 and not ax.patches
    means = [c.lines[0].get_ydata()[0] for c in fig.axes[0].containers]
    assert max(means) == pytest.approx(24.05)  # vit/pixel 0.4, seeds 0 and 1
    assert fig.axes[0].get_ylim()[0] > 0  # zoomed in: a tenth of a dB must show


def test_psnr_vs_accuracy_figure_has_a_point_per_configuration(runs, declared):
    from mimbench.report import aggregate
    from mimbench.report.plots import psnr_vs_accuracy_figure

    fig = psnr_vs_accuracy_figure(aggregate(runs, declared=declared), declared)
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert ax.get_xlabel() == "PSNR, reference masker (dB)" and ax.get_ylabel().startswith("linear accuracy")
    assert len(ax.containers) == 8  # one errorbar per pre-trained configuration
    point = next(c for c in ax.containers if c.get_label() == "cnn / patch(ratio=0.6)").lines[0]
    assert point.get_xdata()[0] == pytest.approx(18.5) and point.get_ydata()[0] == pytest.approx(0.783333, abs=1e-6)
    assert "Spearman" in ax.get_title()


def test_sweep_figure_draws_a_line_per_configuration_over_the_swept_values(table, declared):
    from mimbench.report.plots import sweep_figure

    fig = sweep_figure(table, "masker.ratio", declared)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_ylabel() for ax in visible] == ["linear accuracy (top-1, fraction)",
                                                   "kNN accuracy (top-1, fraction)", "PSNR, reference masker (dB)",
                                                   "PSNR, own masker (dB)"]
    ax = visible[0]
    assert ax.get_xlabel() == "mask ratio (fraction hidden)"
    assert list(ax.get_xticks()) == pytest.approx([0.4, 0.6])
    assert len(ax.containers) == 4  # cnn/pixel, cnn/patch, vit/pixel, vit/patch
    line = ax.containers[1].lines[0]  # cnn / patch
    assert list(line.get_xdata()) == [0.4, 0.6]
    assert list(line.get_ydata()) == pytest.approx([0.763333, 0.783333], abs=1e-6)
    assert sweep_figure(table, "masker.mask_patch_size", declared) is None  # one value: nothing to sweep


def test_loss_curves_figure_has_a_line_per_configuration(suite_dir, runs):
    from mimbench.report.results import histories as _histories
    from mimbench.report.curves import loss_curves_figure

    fig = loss_curves_figure(_histories(suite_dir, runs))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "epoch" and "l1" in ax.get_ylabel()
    assert len(ax.lines) == 8
    cnn = next(line for line in ax.lines if line.get_label() == "cnn / patch(ratio=0.6)")
    assert list(cnn.get_xdata()) == [1, 2, 3, 4, 5]
    assert cnn.get_ydata()[0] == pytest.approx(0.4 + 0.01)  # 0.5 * 0.8 + 0.01 * mean seed (1)
    # losses on different targets never share an axis: a panel per (loss, target)
    mixed = _histories(suite_dir, runs)
    mixed.loc[mixed["label"] == "cnn / patch(ratio=0.6)", "target"] = "hog"
    panels = loss_curves_figure(mixed).axes
    assert [ax.get_ylabel() for ax in panels] == ["training loss (l1, normalised pixels)",
                                                  "training loss (l1, units of the hog target)"]
    assert [line.get_label() for line in panels[1].lines] == ["cnn / patch(ratio=0.6)"]


def test_reconstruction_montage_has_a_panel_per_configuration(suite_dir, runs):
    from mimbench.report.results import montage_images as _montage_images
    from mimbench.report.curves import reconstruction_montage

    images = _montage_images(suite_dir, runs)
    assert len(images) == 8 and images[0][0] == "cnn / pixel(ratio=0.4) (seed 0)"
    fig = reconstruction_montage(images)
    ax, = fig.axes
    titles = [t.get_text().replace("\n", " ") for t in ax.texts]  # long labels are wrapped
    assert titles[:8] == [label for label, _ in images] and "original" in titles[8]
    picture, = ax.images  # the eight pictures (404 x 804 px each) in 4 rows of 2, at their own resolution
    assert picture.get_array().shape[1] == 2 * 804 + 18
    first = picture.get_array()[75 + 45:75 + 45 + 404, :804]  # below the header and the first title
    assert (first == np.asarray(Image.open(images[0][1]), dtype=np.float32) / 255).all()


# ---------------------------------------------------------------- report and command line


def test_mimbench_report_writes_a_self_contained_report(suite_dir):
    result = run_cli("report", str(suite_dir))
    assert result.exit_code == 0, result.output
    assert f"report: {suite_dir / 'report.md'}" in result.output
    for name in ("table.csv", "table.md", "table.tex", "report.md", "report.html"):
        assert (suite_dir / name).is_file(), name
    figures = sorted(p.name for p in (suite_dir / "figures").iterdir())
    assert figures == ["comparisons.pdf", "comparisons.png", "loss_curves.pdf", "loss_curves.png", "probe_accuracy.pdf", "probe_accuracy.png", "psnr.pdf",
                       "psnr.png", "psnr_vs_accuracy.pdf", "psnr_vs_accuracy.png", "reconstructions.png",
                       "sweep_masker_ratio.pdf", "sweep_masker_ratio.png"]
    markdown = (suite_dir / "report.md").read_text()
    for heading in ("# hand: mimbench report", "## Setup", "## Environment", "## Results", "## Baselines",
                    "## Figures", "## Failures"):
        assert heading in markdown, heading
    assert "cuda:0 (NVIDIA H200)" in markdown and "**torch**: 2.5.1" in markdown
    assert "ddof = 1" in markdown and "n = number of finished seeds" in markdown
    assert "r20vitpixel4s2" in markdown and ERROR in markdown and "diverged" in markdown
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown):
        assert (suite_dir / image).is_file(), image
    html = (suite_dir / "report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == 7
    assert 'src="figures/' not in html and "<table>" in html and "0.783 ± 0.015" in html
    assert not list(suite_dir.rglob(".*.tmp"))  # every file went through write_atomic


def test_report_of_a_suite_where_every_run_failed(suite_dir):
    summary = pd.read_csv(suite_dir / "summary.csv")
    summary["status"] = "failed"
    summary["error"] = "ValueError: boom"
    summary.to_csv(suite_dir / "summary.csv", index=False)
    result = run_cli("report", str(suite_dir))
    assert result.exit_code == 0, result.output
    markdown = (suite_dir / "report.md").read_text()
    assert "33 of 33 runs did not finish" in markdown and "Nothing to plot" in markdown


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_report_of_a_folder_without_results_is_a_one_line_error(tmp_path, case):
    folder = tmp_path / "results"
    if case == "empty":
        make_suite(folder)  # results/hand/summary.csv: the user passed the parent folder
    result = run_cli("report", str(folder))
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error: ")
    assert "not found" in result.output if case == "missing" else "no summary.csv" in result.output
    if case == "empty":
        assert str(folder / "hand") in result.output


def test_a_report_failure_after_a_run_is_a_warning(tmp_path, monkeypatch, capsys):
    import mimbench.cli
    import mimbench.report

    def broken(suite_dir):
        raise RuntimeError("disk full\nmore lines")

    monkeypatch.setattr(mimbench.report, "write_report", broken)
    mimbench.cli._report_after_run(tmp_path)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning: the report could not be written (RuntimeError: disk full)" in err


TINY_SUITE = """
name: tiny-report
dataset: {name: shapes, params: {num_images: 64}}
image_size: 16
seeds: [0]
train: {epochs: 1, batch_size: 32}
eval: {probes: [], batch_size: 32, reference_masker: {name: patch, params: {ratio: 0.5, mask_patch_size: 4}}}
grid: {encoder: [{name: cnn, params: {hidden_dim: 8}}], decoder: [linear], masker: [pixel], loss: [l1]}
"""


def test_mimbench_run_writes_the_report_at_the_end(tmp_path):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY_SUITE)
    result = run_cli("run", str(suite), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "tiny-report"
    assert f"report: {folder / 'report.html'}" in result.output
    assert (folder / "report.md").is_file() and (folder / "figures" / "reconstructions.png").is_file()
    assert "| cnn | pixel | 1 |" in (folder / "table.md").read_text()


# ---------------------------------------------------------------- label efficiency

#: A label-efficiency suite, by hand: one encoder, 2 maskers, probes fitted on 10, 100 and all
#: (None) labels per class, 3 seeds; both baselines per seed and label count; the run
#: (patch, 100, seed 2) failed. linear_acc = masker + count + seed offsets; knn_acc = linear - 0.05;
#: finetune_acc = linear + 0.05 (pre-trained) or + 0.10 (random-init: from scratch); pixels have no
#: fine-tune. With all labels the probes saw 600 images per class (probe_labels_per_class).
COUNTS = (10, 100, None)
LE_MASKERS = {"pixel": {}, "patch": {"mask_patch_size": 4}}
LE_LINEAR = {"pixel": 0.50, "patch": 0.55, 10: 0.0, 100: 0.10, None: 0.20}
LE_RANDOM = {10: [0.20, 0.22, 0.21], 100: [0.30, 0.33, 0.31], None: [0.40, 0.40, 0.44]}
LE_PIXELS = {10: [0.25, 0.26, 0.24], 100: [0.35, 0.36, 0.34], None: [0.45, 0.46, 0.44]}
LE_FAILED = ("patch", 100, 2)
ALL_PER_CLASS = 600
LPC = "eval.labels_per_class"
LE_DECLARED = columns.merge(columns.RECONSTRUCTION_COLUMNS, columns.accuracy_columns("linear_acc", "linear"),
                            columns.accuracy_columns("knn_acc", "kNN", latex="$k$-NN"),
                            columns.accuracy_columns("finetune_acc", "fine-tune", trains_encoder=True))
LE_SUITE = {
    **SUITE, "name": "labels", "description": "hand-made label-efficiency results",
    "eval": {**SUITE["eval"], "labels_per_class": None,
             "probes": [*SUITE["eval"]["probes"], {"name": "finetune", "params": {}}]},
    "grid": {**SUITE["grid"], "encoder": [{"name": "cnn", "params": ENCODERS["cnn"]}],
             "masker": [{"name": n, "params": {**p, "ratio": 0.6}} for n, p in LE_MASKERS.items()]},
    "sweep": {LPC: list(COUNTS)},
}


def le_linear(masker: str, count: int | None, seed: int) -> float:
    return round(LE_LINEAR[masker] + LE_LINEAR[count] + SEED_OFFSET[seed], 6)


def _le_rows() -> list[dict]:
    """The summary's rows in the pipeline's order: seed by seed, grid then sweep; baselines last."""
    rows, baselines = [], []
    probed = {}
    for seed in SEEDS:
        for masker, params in LE_MASKERS.items():
            for count in COUNTS:
                probed = {"probe_labels_per_class": count or ALL_PER_CLASS}
                row = {"run_id": f"r{masker}{count}s{seed}", "status": "done", "dataset": "shapes", "encoder": "cnn",
                       "decoder": "linear", "masker": masker, "loss": "l1", "seed": seed, "pretrained": True,
                       "baseline": None}
                if (masker, count, seed) == LE_FAILED:
                    row.update(status="failed", error=ERROR)
                else:
                    acc, psnr = le_linear(masker, count, seed), 20.0 + (masker == "patch") + PSNR_SEED[seed]
                    row.update(recon_psnr=psnr, ref_psnr=psnr - 0.5, linear_acc=acc, knn_acc=round(acc - 0.05, 6),
                               finetune_acc=round(acc + 0.05, 6), **probed)
                row.update({"encoder.hidden_dim": 8, **{f"masker.{k}": v for k, v in params.items()},
                            "masker.ratio": 0.6, LPC: count})
                rows.append(row)
        for count in COUNTS:
            acc = LE_RANDOM[count][seed]
            probed = {"probe_labels_per_class": count or ALL_PER_CLASS}
            baselines.append({"run_id": f"bcnn{count}s{seed}", "status": "done", "dataset": "shapes", "encoder": "cnn",
                              "seed": seed, "pretrained": False, "baseline": "random-init", "linear_acc": acc,
                              "knn_acc": round(acc - 0.05, 6), "finetune_acc": round(acc + 0.10, 6), **probed,
                              "encoder.hidden_dim": 8, LPC: count})
            acc = LE_PIXELS[count][seed]
            baselines.append({"run_id": f"bpixels{count}s{seed}", "status": "done", "dataset": "shapes",
                              "encoder": "pixels", "seed": seed, "pretrained": False, "baseline": "pixels",
                              "linear_acc": acc, "knn_acc": round(acc - 0.05, 6), **probed, LPC: count})
    return rows + baselines


def make_label_suite(root: Path, keep=lambda row: True, suite: dict | None = None, drop=()) -> Path:
    """A finished label-efficiency suite folder (summary.csv, columns.json, suite.yaml; no run
    folders): the rows ``keep`` accepts, without the columns ``drop``."""
    suite_dir = root / "labels"
    suite_dir.mkdir(parents=True)
    table = pd.DataFrame([row for row in _le_rows() if keep(row)]).drop(columns=list(drop)).convert_dtypes()
    (suite_dir / "summary.csv").write_text(table.to_csv(index=False))
    (suite_dir / "suite.yaml").write_text(yaml.safe_dump(suite or LE_SUITE, sort_keys=False))
    (suite_dir / "columns.json").write_text(columns.dumps(LE_DECLARED))
    return suite_dir


@pytest.fixture(scope="module")
def label_suite(tmp_path_factory) -> Path:
    from mimbench.report import write_report

    suite_dir = make_label_suite(tmp_path_factory.mktemp("labels"))
    write_report(suite_dir)
    return suite_dir


@pytest.fixture(scope="module")
def label_runs_(label_suite):
    from mimbench.report.results import labelled_runs
    return labelled_runs(label_suite)


def test_the_table_has_a_row_per_configuration_and_label_count(label_suite):
    from mimbench.report import aggregate

    table = aggregate(view(labelled_runs(label_suite), "table"), declared=LE_DECLARED)
    pretrained = table[table["pretrained"]]
    assert len(pretrained) == 2 * 3 and len(table) == 2 * 3 + 2 * 3  # random-init and pixels, per count
    assert list(pretrained["label"]) == ["cnn / pixel"] * 3 + ["cnn / patch"] * 3  # the count is a column
    assert [None if pd.isna(k) else int(k) for k in pretrained[LPC]] == [10, 100, None] * 2
    patch = pretrained[pretrained["label"] == "cnn / patch"].set_index(LPC, drop=False)
    assert patch.loc[10, "linear_acc_mean"] == pytest.approx(np.mean([0.55, 0.56, 0.58]))
    failed = patch.loc[100]
    assert (failed["n_runs"], failed["n_done"], failed["linear_acc_mean"]) == (3, 2, pytest.approx(0.655))
    everything = patch[patch[LPC].isna()].iloc[0]
    assert everything["linear_acc_mean"] == pytest.approx(0.763333, abs=1e-6)
    assert everything["probe_labels_per_class_mean"] == ALL_PER_CLASS
    random_init = table[table["baseline"] == "random-init"].set_index(LPC, drop=False)
    assert random_init.loc[100, "linear_acc_mean"] == pytest.approx(np.mean(LE_RANDOM[100]))


def test_the_gain_pairs_each_run_with_the_baseline_of_its_seed_and_label_count(label_suite):
    from mimbench.report import aggregate

    table = aggregate(view(labelled_runs(label_suite), "table"), declared=LE_DECLARED)
    patch = table[table["label"] == "cnn / patch"].set_index(LPC, drop=False)
    diffs = np.array([0.55, 0.56, 0.58]) - LE_RANDOM[10]  # 0.35, 0.34, 0.37: not the k=100 or all-label baselines
    assert patch.loc[10, "linear_acc_gain_mean"] == pytest.approx(diffs.mean()) == pytest.approx(0.353333, abs=1e-6)
    assert patch.loc[10, "linear_acc_gain_std"] == pytest.approx(diffs.std(ddof=1))
    assert patch.loc[10, "linear_acc_gain_n"] == 3
    assert patch.loc[100, "linear_acc_gain_n"] == 2  # the failed seed 2 has no pair
    assert patch.loc[100, "linear_acc_gain_mean"] == pytest.approx(np.mean([0.65 - 0.30, 0.66 - 0.33]))
    pixel_all = table[(table["label"] == "cnn / pixel") & table[LPC].isna()].iloc[0]
    assert pixel_all["linear_acc_gain_mean"] == pytest.approx(0.30) and pixel_all["linear_acc_gain_std"] == pytest.approx(0.01)
    # from scratch: fine-tuning the pre-trained encoder against fine-tuning the random one, same seed and count
    assert patch.loc[10, "finetune_acc_gain_mean"] == pytest.approx(np.mean(np.array([0.60, 0.61, 0.63])
                                                                            - [0.30, 0.32, 0.31]))


def test_labels_name_the_label_count_unless_hidden(label_runs_):
    labels = set(label_runs_["label"])
    assert "cnn / patch / labels_per_class=10" in labels and "cnn / pixel / labels_per_class=all" in labels
    assert {"cnn (random-init, labels_per_class=100)", "raw pixels (baseline, labels_per_class=all)"} <= labels
    from mimbench.report import failures
    assert failures(label_runs_)["label"].to_list() == ["cnn / patch / labels_per_class=100"]


def test_label_efficiency_figure_draws_a_line_per_configuration_and_baseline(label_runs_):
    from mimbench.report.curves import label_efficiency_figure

    fig = label_efficiency_figure(label_runs_, LE_DECLARED)
    assert [ax.get_ylabel() for ax in fig.axes] == ["linear accuracy (top-1, fraction)",
                                                    "kNN accuracy (top-1, fraction)",
                                                    "fine-tune accuracy (top-1, fraction)"]
    linear, _, finetune = fig.axes
    assert linear.get_xscale() == "log" and "images per class" in linear.get_xlabel()
    assert [t.get_text() for t in linear.get_xticklabels()] == ["10", "100", f"all ({ALL_PER_CLASS})"]
    lines = {line.get_label(): line for line in linear.lines if line.get_gid() == "configuration"}
    assert list(lines) == ["cnn / pixel", "cnn / patch"]  # one per configuration, every label count on it
    for line in lines.values():
        assert list(line.get_xdata()) == [10, 100, ALL_PER_CLASS]
    assert list(lines["cnn / pixel"].get_ydata()) == pytest.approx([0.513333, 0.613333, 0.713333], abs=1e-6)
    assert list(lines["cnn / patch"].get_ydata()) == pytest.approx([0.563333, 0.655, 0.763333], abs=1e-6)
    assert len(linear.collections) == 4  # a ± 1 std band per line
    baselines = {line.get_label(): line for line in linear.lines if line.get_gid() == "baseline"}
    assert list(baselines) == ["cnn (random-init)", "raw pixels (baseline)"]
    assert list(baselines["cnn (random-init)"].get_ydata()) == pytest.approx([np.mean(LE_RANDOM[k]) for k in COUNTS])
    assert baselines["cnn (random-init)"].get_linestyle() == "--" and baselines["raw pixels (baseline)"].get_linestyle() == ":"
    assert list(baselines["raw pixels (baseline)"].get_ydata()) == pytest.approx([0.25, 0.35, 0.45])
    scratch = [line for line in finetune.lines if line.get_gid() == "baseline"]  # pixels: nothing to fine-tune
    assert [line.get_label() for line in scratch] == ["cnn from scratch (random-init + fine-tune)"]
    assert list(scratch[0].get_ydata()) == pytest.approx([np.mean(LE_RANDOM[k]) + 0.1 for k in COUNTS])
    legend = [t.get_text() for t in finetune.get_legend().get_texts()]
    assert legend == ["cnn / pixel", "cnn / patch", "cnn from scratch (random-init + fine-tune)"]


def test_all_labels_sit_right_of_the_largest_count_without_probe_labels_per_class(label_runs_):
    from mimbench.report.curves import label_efficiency_figure

    fig = label_efficiency_figure(label_runs_.drop(columns="probe_labels_per_class"), LE_DECLARED)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "100", "all"]
    assert list(ax.lines[0].get_xdata()) == [10, 100, 1000]


def test_mimbench_report_draws_the_label_efficiency_figure(label_suite):
    figures = sorted(p.name for p in (label_suite / "figures").iterdir())
    assert "label_efficiency.png" in figures and "label_efficiency.pdf" in figures
    assert not any(name.startswith("sweep_") for name in figures)  # the label-efficiency figure is that sweep
    markdown = (label_suite / "report.md").read_text()
    assert "### Label efficiency" in markdown and "](figures/label_efficiency.png)" in markdown
    assert "class-balanced subset" in markdown and "full test split" in markdown
    assert "The runs whose probes saw all labels" in markdown  # the other figures show one label count
    assert "36 runs (35 done, 1 failed), 18 of them pre-trained, 2 pre-trained configurations × 3 label counts × " \
           "3 seeds" in markdown
    assert markdown.index("### Label efficiency") < markdown.index("### Probe accuracy per masker")
    assert "`eval.labels_per_class` ∈ {10, 100, all}" in markdown
    table = (label_suite / "table.md").read_text()
    header = table.splitlines()[0]
    assert header.startswith("| encoder | masker | eval.labels_per_class | n | PSNR (dB) | ref. PSNR (dB) | linear | "
                             "Δ linear | kNN | Δ kNN | fine-tune | Δ fine-tune |")
    # bold would be decided among the rows of one label count; with 3 seeds there is none
    assert "| cnn | patch | 10 | 3 | 21.00 ± 0.10 | 20.50 ± 0.10 | 0.563 ± 0.015 | +0.353 [" in table
    assert "**" not in table.split("\n\n")[0]
    assert "| cnn | patch | 100 | 2/3 |" in table and "| cnn | pixel | all | 3 |" in table
    assert "| cnn | random-init (baseline) | 10 | 3 | – | – | 0.210 ± 0.010 |" in table
    assert "| raw pixels | baseline | all | 3 | – | – | 0.450 ± 0.010 |" in table
    assert "same seed and the same labels per class" in table
    assert "| baseline | encoder | eval.labels_per_class | n | linear | kNN | fine-tune |" in markdown
    assert "| random-init | cnn | 100 | 3 | 0.313 ± 0.015 |" in markdown
    assert "eval.labels\\_per\\_class" in (label_suite / "table.tex").read_text()


def test_the_other_figures_show_one_label_count(label_suite, label_runs_):
    from mimbench.report import aggregate
    from mimbench.report.figure_plan import figure_plan as _figure_plan

    table = aggregate(view(labelled_runs(label_suite), "table"), declared=LE_DECLARED)
    plan = {f.name: f for f in _figure_plan(label_suite, label_runs_, table, [LPC], LE_SUITE, LE_DECLARED)}
    ax = plan["probe_accuracy"].draw().axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["pixel", "patch"]
    assert sorted(round(p.get_height(), 6) for p in ax.patches) == pytest.approx([0.713333, 0.763333], abs=1e-6)
    baselines = {line.get_label().split(":")[0]: line.get_ydata()[0] for line in ax.lines if line.get_gid() == "baseline"}
    assert baselines == pytest.approx({"cnn (random-init)": np.mean(LE_RANDOM[None]), "raw pixels (baseline)": 0.45})


def test_a_label_count_set_differently_without_a_sweep_is_a_column_too(tmp_path):
    from mimbench.report import write_report

    suite = {k: v for k, v in LE_SUITE.items() if k != "sweep"}
    suite_dir = make_label_suite(tmp_path, suite=suite)
    write_report(suite_dir)
    assert "| encoder | masker | eval.labels_per_class | n |" in (suite_dir / "table.md").read_text()
    assert (suite_dir / "figures" / "label_efficiency.png").is_file()


def test_no_label_efficiency_figure_with_one_label_count_or_none(tmp_path, runs, declared):
    from mimbench.report import write_report
    from mimbench.report.results import labelled_runs
    from mimbench.report.curves import label_efficiency_figure

    assert label_efficiency_figure(runs, declared) is None  # a suite without the column
    suite = {**{k: v for k, v in LE_SUITE.items() if k != "sweep"}, "eval": {**LE_SUITE["eval"], "labels_per_class": 10}}
    suite_dir = make_label_suite(tmp_path, keep=lambda row: row[LPC] == 10, suite=suite)
    assert label_efficiency_figure(labelled_runs(suite_dir), LE_DECLARED) is None
    write_report(suite_dir)
    assert not (suite_dir / "figures" / "label_efficiency.png").exists()
    markdown = (suite_dir / "report.md").read_text()
    assert "Label efficiency" not in markdown and "**labels per class** for the probes: 10" in markdown
    assert (suite_dir / "table.md").read_text().startswith("| encoder | masker | n |")  # one value: no column
