"""Is the difference real? comparisons.csv against an independent computation from summary.csv, the
statistics' textbook properties, the table's intervals and bold rule, and a report that is the
same file for the same folder."""

from __future__ import annotations

import itertools
import re
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as scipy_stats

from mimbench import columns, stats
from mimbench.report.comparisons import COLUMNS

from helpers import run_cli

SEEDS = list(range(8))
MASKERS = ("pixel", "patch", "region")
DECLARED = columns.merge(columns.RECONSTRUCTION_COLUMNS, columns.accuracy_columns("linear_acc", "linear"),
                         columns.accuracy_columns("knn_acc", "kNN"))


def hand_suite(root, seeds=SEEDS, gains=None, noise=0.01, reference=None):
    """A finished suite folder written by hand (summary.csv, suite.yaml, columns.json): one cnn
    encoder pre-trained with 3 maskers, its random-init baseline, and raw pixels, over ``seeds``.
    Accuracies are a per-seed base + the masker's gain + noise, from a fixed generator."""
    rng = np.random.default_rng(7)
    gains = gains or {"pixel": 0.002, "patch": 0.04, "region": 0.045}
    rows = []
    for seed in seeds:
        base = 0.5 + 0.02 * rng.standard_normal()
        rows.append({"run_id": f"b{seed}", "status": "done", "dataset": "shapes", "encoder": "cnn", "seed": seed,
                     "pretrained": False, "baseline": "random-init", "linear_acc": round(base, 6),
                     "knn_acc": round(base - 0.03, 6), "encoder.hidden_dim": 8})
        rows.append({"run_id": f"p{seed}", "status": "done", "dataset": "shapes", "encoder": "pixels", "seed": seed,
                     "pretrained": False, "baseline": "pixels", "linear_acc": 0.45, "knn_acc": 0.44})
        for masker in MASKERS:
            acc = base + gains[masker] + noise * rng.standard_normal()
            psnr = 20 + {"pixel": 1.0, "patch": 0.0, "region": -0.2}[masker] + 0.1 * rng.standard_normal()
            rows.append({"run_id": f"{masker}{seed}", "status": "done", "dataset": "shapes", "encoder": "cnn",
                         "decoder": "linear", "masker": masker, "loss": "l1", "seed": seed, "pretrained": True,
                         "baseline": None, "recon_psnr": round(psnr, 6), "ref_psnr": round(psnr - 0.5, 6),
                         "linear_acc": round(acc, 6), "knn_acc": round(acc - 0.03 + noise * rng.standard_normal(), 6),
                         "encoder.hidden_dim": 8, "masker.ratio": 0.6, "loss.masked_only": True})
    folder = root / "hand"
    folder.mkdir(parents=True)
    pd.DataFrame(rows).convert_dtypes().to_csv(folder / "summary.csv", index=False)
    suite = {"name": "hand", "dataset": "shapes", "seeds": list(seeds),
             "grid": {"encoder": "cnn", "decoder": "linear", "masker": list(MASKERS), "loss": "l1"}}
    if reference:
        suite["report"] = {"reference": reference}
    (folder / "suite.yaml").write_text(yaml.safe_dump(suite))
    (folder / "columns.json").write_text(columns.dumps(DECLARED))
    return folder


def exact_sign_flip(diffs: np.ndarray) -> float:
    """Two-sided p by enumerating every sign pattern, written out without scipy."""
    observed = abs(diffs.mean())
    flips = [abs((diffs * np.array(signs)).mean()) >= observed - 1e-12
             for signs in itertools.product((1, -1), repeat=len(diffs))]
    return float(np.mean(flips))


def t_interval(diffs: np.ndarray, confidence: float) -> tuple[float, float]:
    """The textbook Student-t interval of the mean, written out."""
    half = scipy_stats.t.ppf(1 - (1 - confidence) / 2, len(diffs) - 1) * diffs.std(ddof=1) / math.sqrt(len(diffs))
    return diffs.mean() - half, diffs.mean() + half


def holm_by_hand(p: list[float]) -> list[float]:
    order = np.argsort(p)
    adjusted = np.empty(len(p))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def test_comparisons_agree_with_an_independent_computation_from_the_summary(tmp_path):
    folder = hand_suite(tmp_path)
    result = run_cli("report", str(folder), "--reference", "masker=patch")
    assert result.exit_code == 0, result.output
    found = pd.read_csv(folder / "comparisons.csv")
    assert list(found.columns) == COLUMNS
    summary = pd.read_csv(folder / "summary.csv")
    done = summary[summary.status == "done"]
    expected = []
    for family in ("random-init", "pixels"):  # the declared headline accuracies, against each baseline
        baseline = done[done.baseline == family].set_index("seed")
        for metric in ("linear_acc", "knn_acc"):
            for masker in MASKERS:
                runs = done[done.masker == masker].set_index("seed")
                expected.append((family, metric, masker, (runs[metric] - baseline[metric]).to_numpy()))
    patch = done[done.masker == "patch"].set_index("seed")
    # every headline metric against patch, but PSNR under each run's own masker: other maskers hide other pixels
    assert not ((found.metric == "recon_psnr") & (found.reference == "cnn / patch")).any()
    for metric in ("ref_psnr", "linear_acc", "knn_acc"):
        for masker in ("pixel", "region"):
            runs = done[done.masker == masker].set_index("seed")
            expected.append(("reference", metric, masker, (runs[metric] - patch[metric]).to_numpy()))
    assert len(found) == len(expected)
    references = {"random-init": "cnn (random-init)", "pixels": "raw pixels (baseline)", "reference": "cnn / patch"}
    for family in ("random-init", "pixels", "reference"):
        rows = [i for i, e in enumerate(expected) if e[0] == family]
        holm = holm_by_hand([exact_sign_flip(expected[i][3]) for i in rows])
        for i, adjusted in zip(rows, holm):
            _, metric, masker, diffs = expected[i]
            row = found[(found.metric == metric) & (found.configuration == f"cnn / {masker}")
                        & (found.reference == references[family])]
            assert len(row) == 1, (family, metric, masker)
            row = row.iloc[0]
            assert row.n == len(SEEDS)
            assert row.mean_diff == pytest.approx(diffs.mean(), abs=1e-12)
            assert row.p_value == pytest.approx(exact_sign_flip(diffs), abs=1e-12)  # exact: equal
            assert row.p_holm == pytest.approx(adjusted, abs=1e-12)
            assert bool(row.significant) == (adjusted < 0.05)
            sign = -1 if metric.endswith("mse") else 1
            assert row.p_improvement == pytest.approx(((sign * diffs > 0).sum() + 0.5 * (diffs == 0).sum()) / len(diffs))
            low, high = t_interval(diffs, 0.95)  # the skewness correction moves it, within limits
            width = high - low
            assert row.ci_low == pytest.approx(low, abs=0.3 * width) and row.ci_high == pytest.approx(high, abs=0.3 * width)
            assert row.ci_low <= row.mean_diff <= row.ci_high
            # the family-wise interval: Bonferroni over the family's rows, plain t
            family_low, family_high = t_interval(diffs, 1 - 0.05 / len(rows))
            assert (row.ci_low_family, row.ci_high_family) == pytest.approx((family_low, family_high), abs=1e-9)
            # 8 seeds: every family of 6 (or 4) comparisons has the seeds Holm needs, so the test decides
            assert bool(row.resolved) == (adjusted < 0.05)
    # patch's clear gain over random-init is significant after Holm; pixel's tiny one is not
    linear = found[(found.metric == "linear_acc") & (found.reference == "cnn (random-init)")]
    assert linear.set_index("configuration").significant.to_dict() == \
        {"cnn / pixel": False, "cnn / patch": True, "cnn / region": True}


def test_the_same_folder_reported_twice_gives_identical_files(tmp_path):
    folder = hand_suite(tmp_path, seeds=SEEDS[:3], reference={"masker": "patch"})
    assert run_cli("report", str(folder)).exit_code == 0
    skip = {"summary.csv", "suite.yaml", "columns.json"}
    first = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name not in skip}
    assert run_cli("report", str(folder)).exit_code == 0
    second = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name not in skip}
    assert sorted(map(str, first)) == sorted(map(str, second))
    changed = [str(path) for path in first if first[path] != second[path]]
    assert not changed
    assert {"comparisons.csv", "table.md", "report.md", "report.html", "figures/comparisons.png"} <= set(map(str, first))


def test_fewer_than_six_seeds_get_intervals_and_no_test_and_the_report_says_why(tmp_path):
    folder = hand_suite(tmp_path, seeds=[0, 1], reference={"masker": "patch"})
    assert run_cli("report", str(folder)).exit_code == 0
    found = pd.read_csv(folder / "comparisons.csv")
    assert found.n.eq(2).all() and found.p_value.isna().all() and found.p_holm.isna().all()
    assert found.significant.isna().all() and found.ci_low.notna().all()
    report = (folder / "report.md").read_text()
    assert "with fewer than 6 the exact sign-flip test cannot reach p < 0.05 (its smallest p is 2/2^2 = 0.5)" in report
    assert "would need" in report and "1-point difference" in report
    table = (folder / "table.md").read_text()
    assert "*" not in table.split("\n\n")[0].replace("**", "")  # no significance mark without a test


def test_the_table_shows_each_gain_with_its_interval_and_bold_only_a_clear_best(tmp_path):
    # region and patch tie within noise; both beat pixel clearly
    folder = hand_suite(tmp_path, gains={"pixel": 0.0, "patch": 0.05, "region": 0.051}, noise=0.01)
    assert run_cli("report", str(folder)).exit_code == 0
    table = (folder / "table.md").read_text()
    found = pd.read_csv(folder / "comparisons.csv").set_index(["metric", "configuration", "reference"])
    patch = found.loc[("linear_acc", "cnn / patch", "cnn (random-init)")]
    cell = f"{patch.mean_diff:+.3f} [{patch.ci_low:+.3f}, {patch.ci_high:+.3f}]" + ("*" if patch.significant else "")
    assert cell in table
    # cells: | encoder | masker | n | PSNR | ref. PSNR | linear | Δ linear | kNN | Δ kNN |
    rows = {line.split("|")[2].strip(): line.split("|") for line in table.splitlines() if line.startswith("| cnn |")}
    assert "**" not in rows["patch"][6] and "**" not in rows["region"][6]  # the best linear ties its runner-up
    assert "**" not in rows["pixel"][4]  # PSNR under each run's own masker: the maskers hide other pixels
    assert "**" in rows["pixel"][5]  # ref. PSNR: pixel is 1 dB above patch and region in every seed
    assert "Bold: the best mean of its column" in table


def test_a_clear_best_is_bold(tmp_path):
    folder = hand_suite(tmp_path, gains={"pixel": 0.0, "patch": 0.02, "region": 0.08}, noise=0.002)
    assert run_cli("report", str(folder)).exit_code == 0
    table = (folder / "table.md").read_text()
    region = next(line for line in table.splitlines() if line.startswith("| cnn | region"))
    assert region.split("|")[6].strip().startswith("**")  # linear


def test_a_reference_that_names_nothing_or_is_malformed_is_one_line_exit_2(tmp_path):
    folder = hand_suite(tmp_path, seeds=[0, 1])
    nothing = run_cli("report", str(folder), "--reference", "masker=square")
    assert nothing.exit_code == 2
    assert "report.reference {masker: square}: no finished configuration of this suite matches it" in nothing.output
    malformed = run_cli("report", str(folder), "--reference", "colour=red")
    assert malformed.exit_code == 2 and "--reference: unknown key 'colour'" in malformed.output
    no_value = run_cli("report", str(folder), "--reference", "masker")
    assert no_value.exit_code == 2 and "expected KEY=VALUE" in no_value.output


def test_a_suites_reference_is_checked_before_anything_trains(tmp_path):
    from helpers import write_suite_file

    text = """
    name: tiny
    dataset: {name: shapes, params: {num_images: 64}}
    image_size: 16
    train: {epochs: 1, batch_size: 32}
    eval: {probes: [], baselines: []}
    grid: {encoder: cnn, decoder: linear, masker: [pixel, patch], loss: l1}
    report: {reference: REF}
    """
    for reference, message in (("{masker: square}", "report.reference {masker: square}: no run of this suite has it"),
                               ("{colour: red}", "report.reference: unknown key 'colour'"),
                               ("{}", "report.reference: reference is empty")):
        suite = write_suite_file(tmp_path, text.replace("REF", reference))
        result = run_cli("run", str(suite), "--dry-run")
        assert result.exit_code == 2 and message in result.output, result.output
    suite = write_suite_file(tmp_path, text.replace("REF", "{masker: patch, masker.ratio: 0.6}"))
    assert run_cli("run", str(suite), "--dry-run").exit_code == 0


def test_the_python_api_returns_the_comparisons(tmp_path):
    import mimbench

    folder = hand_suite(tmp_path, seeds=[0, 1, 2])
    frame = mimbench.comparisons(folder, reference={"masker": "patch"})
    assert list(frame.columns) == COLUMNS
    assert set(frame.reference) == {"cnn (random-init)", "raw pixels (baseline)", "cnn / patch"}


# --- the statistics themselves -------------------------------------------------------------------

@pytest.mark.parametrize("n", range(2, 11))
def test_the_exact_sign_flip_floor_is_two_over_two_to_the_n(n):
    assert stats.sign_flip_p_value(np.full(n, 0.01) + np.arange(n) * 1e-4) == pytest.approx(2 / 2 ** n)
    assert stats.smallest_p_value(n) == pytest.approx(2 / 2 ** n)
    assert (stats.compare_paired(np.ones(n)).p_value is None) == (n < 6)


def test_holm_matches_the_textbook_example():
    # p sorted 0.01, 0.02, 0.03, 0.04 -> 4 x 0.01, 3 x 0.02, max(0.06, 2 x 0.03), max(0.06, 0.04)
    assert stats.holm([0.04, 0.01, None, 0.03, 0.02]) == pytest.approx([0.06, 0.04, None, 0.06, 0.06])


def test_probability_of_improvement_counts_ties_half_and_knows_which_way_is_better():
    assert stats.probability_of_improvement(np.array([1.0, 0.0, -1.0, 2.0])) == 0.625
    assert stats.probability_of_improvement(np.array([1.0, 0.0, -1.0, 2.0]), higher_is_better=False) == 0.375


def test_identical_differences_have_a_zero_width_interval():
    assert stats.mean_interval(np.full(4, 0.02)) == (0.02, 0.02)


def test_detectable_difference_and_seeds_needed_are_consistent():
    assert stats.detectable_difference(0.01, 5) is None  # 5 pairs cannot reach p < 0.05
    needed = stats.seeds_needed(0.01, 0.01)
    assert stats.detectable_difference(0.01, needed) <= 0.01 < stats.detectable_difference(0.01, needed - 1)
    assert stats.seeds_needed(0.0, 0.01) == 6 and not math.isnan(stats.detectable_difference(0.0, 6))


def test_a_reference_that_every_configuration_has_is_refused(tmp_path):
    folder = hand_suite(tmp_path, seeds=[0, 1])
    result = run_cli("report", str(folder), "--reference", "masker.ratio=0.6")  # every configuration has it
    assert result.exit_code == 2
    assert "every finished configuration of this suite matches it, so none is left to compare" in result.output


def test_one_seed_gives_no_interval_and_the_report_says_so(tmp_path):
    folder = hand_suite(tmp_path, seeds=[0], reference={"masker": "patch"})
    assert run_cli("report", str(folder)).exit_code == 0
    found = pd.read_csv(folder / "comparisons.csv")
    assert found.n.eq(1).all() and found.ci_low.isna().all() and found.p_value.isna().all()
    report = (folder / "report.md").read_text()
    assert "1 paired seed per comparison: a difference from one seed has no interval" in report
    assert "No difference has an interval: each comes from a single seed." in report
    assert "excludes 0" not in report.split("## Is the difference real?")[1].split("##")[0]


@pytest.mark.parametrize("m, seeds", [(1, 6), (2, 7), (6, 8), (10, 9), (24, 10), (32, 11)])
def test_a_family_needs_the_seeds_with_which_holm_can_reach_significance(m, seeds):
    assert stats.seeds_for_family(m) == seeds
    assert m * stats.smallest_p_value(seeds) < stats.ALPHA <= m * stats.smallest_p_value(seeds - 1) or seeds == 6


def test_six_agreeing_seeds_are_tested_and_the_report_says_holm_needs_more(tmp_path):
    folder = hand_suite(tmp_path, seeds=list(range(6)))
    assert run_cli("report", str(folder)).exit_code == 0
    found = pd.read_csv(folder / "comparisons.csv")
    family = found[found.reference == found.reference.iloc[0]]  # one baseline's table: 2 metrics x 3 maskers
    assert found.n.eq(6).all() and found.p_value.notna().all() and (found.p_holm >= stats.ALPHA).all()
    report = (folder / "report.md").read_text()
    assert (f"Holm's correction over this table's {len(family)} comparisons needs at least "
            f"{stats.seeds_for_family(len(family))} paired seeds before any of them can reach p_holm < 0.05, "
            "so none can be significant here") in report


def test_the_report_counts_only_resolved_differences_and_lists_the_rest_as_unresolved(tmp_path):
    for name, seeds in (("few", [0, 1, 2]), ("many", SEEDS)):  # 3 seeds: no test; 8: tested, Holm per table
        folder = hand_suite(tmp_path / name, seeds=seeds)
        assert run_cli("report", str(folder)).exit_code == 0
        found = pd.read_csv(folder / "comparisons.csv")
        report = (folder / "report.md").read_text()
        section = report.split("## Is the difference real?")[1].split("\n## ")[0]
        resolved = found[found.resolved]
        assert f"Resolved, with each table's comparisons taken together: {len(resolved)} of {len(found)} differences" \
            in section
        assert not re.search(r"\d+ of \d+ differences have a 95% interval", report)  # no unadjusted count
        unresolved = found[~found.resolved & ((found.ci_low > 0) | (found.ci_high < 0))]
        if len(unresolved):
            assert "Not resolved, though the interval taken on its own excludes 0" in section
        listed = section.split("Not resolved")[0]
        for row in resolved.itertuples():
            assert f"{row.configuration} vs {row.reference}" in listed


def test_the_written_conclusions_follow_the_rows_by_rule(tmp_path):
    folder = hand_suite(tmp_path, gains={"pixel": 0.0, "patch": 0.02, "region": 0.08}, noise=0.002)
    assert run_cli("report", str(folder)).exit_code == 0
    found = pd.read_csv(folder / "comparisons.csv")
    section = (folder / "report.md").read_text().split("## Conclusions")[1].split("\n## ")[0]
    sentence = next(line for line in section.splitlines() if line.startswith("- linear, against its random-init"))
    better, _, rest = sentence.partition("not separated:")
    for row in found[(found.metric == "linear_acc") & (found.reference == "cnn (random-init)")].itertuples():
        quoted = f"{row.configuration} {row.mean_diff:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"
        assert quoted in (better if row.resolved else rest), (quoted, sentence)
        assert row.resolved == (row.configuration != "cnn / pixel")  # pixel's gain is 0: never resolved
    # region beats patch and pixel in every seed: the best, by pairwise Holm-adjusted tests
    assert "- linear: cnn / region is the best, ahead of every other configuration and baseline pairwise" in section
    # PSNR under each run's own masker: no best is named across maskers
    assert "- PSNR (dB): no best is named, as the configurations do not compare on it" in section


def test_per_image_outcomes_give_one_seed_an_interval_and_mcnemars_test(tmp_path):
    """With the runs' predictions.npz, a single seed's comparison gets the test-set interval (t over
    the N per-image differences) and McNemar's exact test, both written out here independently."""
    import torch

    from mimbench.folder.run import RunFolder

    folder = hand_suite(tmp_path, seeds=[0])
    summary = pd.read_csv(folder / "summary.csv")
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, 2000)
    correct = {}
    for i, row in summary.iterrows():
        kept = {}
        for metric in ("linear_acc", "knn_acc"):
            right = rng.random(len(labels)) < row[metric]
            correct[row.run_id, metric] = right
            kept[metric] = torch.tensor(np.where(right, labels, (labels + 1) % 10))
            summary.loc[i, metric] = right.mean()  # the accuracy is what the predictions say
        (folder / "runs" / row.run_id).mkdir(parents=True)
        RunFolder(folder / "runs" / row.run_id).write_predictions(torch.tensor(labels), kept)
    summary.to_csv(folder / "summary.csv", index=False)
    assert run_cli("report", str(folder)).exit_code == 0
    found = pd.read_csv(folder / "comparisons.csv")
    assert found.n.eq(1).all() and found.n_images.eq(len(labels)).all() and found.p_value.notna().all()
    row = found[(found.metric == "linear_acc") & (found.configuration == "cnn / patch")
                & (found.reference == "cnn (random-init)")].iloc[0]
    mine, theirs = correct["patch0", "linear_acc"], correct["b0", "linear_acc"]
    d = mine.astype(float) - theirs.astype(float)
    half = scipy_stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    assert (row.ci_low, row.ci_high) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-9)
    assert row.mean_diff == pytest.approx(d.mean(), abs=1e-9)
    ahead, behind = int((mine & ~theirs).sum()), int((~mine & theirs).sum())
    assert row.p_value == pytest.approx(scipy_stats.binomtest(ahead, ahead + behind, 0.5).pvalue, abs=1e-12)
    report = (folder / "report.md").read_text()
    assert "two-level t interval over 1 paired seed and the 2,000 test images" in report
    assert ("1 paired seed and 2,000 test images per comparison, from the runs' per-image outcomes: each comparison is "
            "tested over both (McNemar's exact test, as there is one seed: seed-to-seed variation is not in it)") in report


def test_the_two_level_interval_covers_seed_and_test_image_variation():
    """Binary outcomes: images of varied difficulty, a per-seed shift of each configuration; the
    interval covers the difference of the two configurations' expected accuracies."""
    rng = np.random.default_rng(0)

    def sigmoid(x):
        return 1 / (1 + np.exp(-x))

    def truth(seed_sd):
        base = rng.normal(1.5, 1.5, 1_000_000)
        return float((sigmoid(base + rng.normal(0, seed_sd, base.size))
                      - sigmoid(base - 0.2 + rng.normal(0, seed_sd, base.size))).mean())

    for seed_sd, n in ((0.0, 1), (0.3, 2), (0.3, 3), (0.15, 5)):
        expected, hits, trials = truth(seed_sd), 0, 600
        for _ in range(trials):
            base = rng.normal(1.5, 1.5, 1000)
            mine = rng.random((n, 1000)) < sigmoid(base + rng.normal(0, seed_sd, (n, 1)))
            theirs = rng.random((n, 1000)) < sigmoid(base - 0.2 + rng.normal(0, seed_sd, (n, 1)))
            result = stats.compare_outcomes(mine, theirs)
            hits += result.ci_low <= expected <= result.ci_high
        assert hits / trials >= 0.92, (seed_sd, n, hits / trials)
