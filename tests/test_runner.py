"""End to end: real (tiny) suites through the CLI, results on disk, failures and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import run_cli, write_suite_file

TINY_SUITE = """
name: tiny
dataset: {name: shapes, params: {num_images: 96}}
image_size: 16
seeds: [0]
train: {epochs: 1, batch_size: 32, log_every: 1}
eval: {reference_masker: {name: patch, params: {ratio: 0.5, mask_patch_size: 4}}, batch_size: 40, probes: []}
grid:
  encoder: [{name: cnn, params: {hidden_dim: 8}}]
  decoder: [linear]
  masker: [pixel, {name: patch, params: {mask_patch_size: 4}}]
  loss: [l1]
"""

BAD_MASKER = '''
import torch
from mimbench.plugin import hookimpl

class HalfSizeMasker:
    """Returns a mask of half the image size: breaks the contract."""
    def __call__(self, images, generator=None):
        b, _, h, w = images.shape
        return torch.zeros(b, h // 2, w // 2, dtype=torch.bool)

@hookimpl
def mimbench_register_maskers(register):
    register("half", HalfSizeMasker)
'''


def write_suite(tmp_path: Path, text: str = TINY_SUITE, name: str = "suite.yaml") -> Path:
    return write_suite_file(tmp_path, text, name)


def summary(out: Path, suite: str = "tiny") -> pd.DataFrame:
    return pd.read_csv(out / suite / "summary.csv")


def test_a_suite_run_leaves_complete_results(tmp_path):
    out = tmp_path / "results"
    result = run_cli("run", str(write_suite(tmp_path)), "--out", str(out))
    assert result.exit_code == 0, result.output
    table = summary(out)
    assert list(table.masker) == ["pixel", "patch"]
    assert (table.status == "done").all()
    for column in ("recon_mse", "recon_psnr", "ref_mse", "ref_psnr", "train_seconds", "images_per_second"):
        assert table[column].notna().all() and (table[column] > 0).all(), column
    assert ((table.recon_psnr > 3) & (table.recon_psnr < 60)).all()
    # the pixel masker hides ~60% of pixels; the patch masker ceil(16 * 0.6) = 10 of 16 cells
    assert abs(table.mask_ratio_actual[0] - 0.6) < 0.02
    assert table.mask_ratio_actual[1] == 10 / 16
    # the reference masker is the same for both runs, so its numbers are comparable: here the
    # patch-trained run was trained on the same kind of mask as the reference
    assert table["masker.mask_patch_size"][1] == 4 and table["masker.ratio"][0] == 0.6
    assert (out / "tiny" / "suite.yaml").exists()

    run_dir = out / "tiny" / "runs" / table.run_id[0]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["masker"] == {"name": "pixel", "params": {"ratio": 0.6}}
    assert len(config["normalization"]["mean"]) == 3 and config["versions"]["torch"] == torch.__version__
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history.columns) == ["epoch", "loss", "lr", "images_per_second", "seconds"]
    assert len(history) == 1 and history.loss[0] > 0
    state = torch.load(run_dir / "encoder.pt")
    assert state["stages.0.weight"].shape == (8, 3, 3, 3)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "done" and metrics["recon_mse"] == pytest.approx(table.recon_mse[0])
    assert (run_dir / "reconstructions.png").stat().st_size > 0
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*"))


def test_same_seed_gives_the_same_numbers(tmp_path):
    suite = write_suite(tmp_path)
    run_cli("run", str(suite), "--out", str(tmp_path / "a"))
    run_cli("run", str(suite), "--out", str(tmp_path / "b"))
    a, b = summary(tmp_path / "a"), summary(tmp_path / "b")
    assert list(a.run_id) == list(b.run_id)
    assert a.recon_mse.tolist() == b.recon_mse.tolist()
    other_seed = run_cli("run", str(suite), "--out", str(tmp_path / "c"), "--set", "seeds=[1]")
    assert other_seed.exit_code == 0
    assert summary(tmp_path / "c").recon_mse.tolist() != a.recon_mse.tolist()


def test_resume_skips_finished_runs_and_fresh_starts_over(tmp_path):
    suite, out = write_suite(tmp_path), tmp_path / "results"
    run_cli("run", str(suite), "--out", str(out))
    metrics_files = sorted((out / "tiny" / "runs").glob("*/metrics.json"))
    stamps = [p.stat().st_mtime_ns for p in metrics_files]
    again = run_cli("run", str(suite), "--out", str(out))
    assert again.exit_code == 0 and again.output.count("already finished, skipped") == 2
    assert [p.stat().st_mtime_ns for p in metrics_files] == stamps
    assert len(summary(out)) == 2
    fresh = run_cli("run", str(suite), "--out", str(out), "--fresh")
    assert fresh.exit_code == 0 and "skipped" not in fresh.output
    assert [p.stat().st_mtime_ns for p in metrics_files] != stamps


def test_a_contract_breaking_plugin_fails_only_its_own_runs(tmp_path):
    plugin = tmp_path / "half_masker.py"
    plugin.write_text(BAD_MASKER)
    suite = write_suite(tmp_path, TINY_SUITE.replace("masker: [pixel, ", "masker: [half, pixel, "))
    out = tmp_path / "results"
    result = run_cli("run", str(suite), "--out", str(out), "--plugin", str(plugin))
    assert result.exit_code == 1
    table = summary(out)
    assert table.set_index("masker").status.to_dict() == {"half": "failed", "pixel": "done", "patch": "done"}
    failed = table[table.masker == "half"].iloc[0]
    error = (out / "tiny" / "runs" / failed.run_id / "error.txt").read_text()
    assert "Traceback" in error and "expected torch.bool [32, 16, 16]" in error
    assert "expected torch.bool [32, 16, 16]" in failed.error
    assert not (out / "tiny" / "runs" / failed.run_id / "metrics.json").exists()
    # a second invocation retries the failed run and skips the finished ones
    again = run_cli("run", str(suite), "--out", str(out), "--plugin", str(plugin))
    assert again.exit_code == 1 and again.output.count("skipped") == 2 and "FAILED" in again.output


def test_a_diverging_run_is_recorded_as_diverged(tmp_path):
    plugin = tmp_path / "nan_loss.py"
    plugin.write_text(textwrap.dedent('''
        from mimbench.plugin import hookimpl

        class NanLoss:
            """A loss that turns non-finite."""
            def __call__(self, pred, target, mask):
                return (pred - target).abs().mean() * float("nan")

        @hookimpl
        def mimbench_register_losses(register):
            register("nan", NanLoss)
    '''))
    suite = write_suite(tmp_path, TINY_SUITE.replace("loss: [l1]", "loss: [nan]"))
    result = run_cli("run", str(suite), "--out", str(tmp_path / "r"), "--plugin", str(plugin))
    assert result.exit_code == 0
    table = summary(tmp_path / "r")
    assert (table.status == "diverged").all()
    assert table.recon_mse.isna().all()


def test_run_finished_hook_sees_every_run(tmp_path):
    log = tmp_path / "finished.log"
    plugin = tmp_path / "logger_plugin.py"
    plugin.write_text(textwrap.dedent(f'''
        from mimbench.plugin import hookimpl

        @hookimpl
        def mimbench_run_finished(run_dir, record):
            with open({str(log)!r}, "a") as f:
                f.write(f"{{run_dir.name}} {{record['run_id']}} {{record['status']}} {{record['recon_psnr']:.3f}}\\n")
    '''))
    run_cli("run", str(write_suite(tmp_path)), "--out", str(tmp_path / "r"), "--plugin", str(plugin))
    lines = log.read_text().splitlines()
    table = summary(tmp_path / "r")
    assert [line.split()[:3] for line in lines] == [[r, r, "done"] for r in table.run_id]


def test_kill_9_mid_suite_then_rerun_completes_without_recomputing(tmp_path):
    suite = write_suite(tmp_path, TINY_SUITE.replace("num_images: 96", "num_images: 480")
                        .replace("epochs: 1", "epochs: 3")
                        .replace("masker: [pixel, ", "masker: [region, pixel, "))
    out = tmp_path / "results"
    command = [str(Path(sys.executable).parent / "mimbench"), "run", str(suite), "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    runs = out / "tiny" / "runs"
    deadline = time.time() + 120
    while time.time() < deadline and not list(runs.glob("*/metrics.json")):
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/metrics.json")}
    assert 1 <= len(finished) < 3, "the kill did not land mid-suite"

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    table = summary(out)
    assert len(table) == 3 and (table.status == "done").all()
    assert {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/metrics.json") if p.parent.name in finished} == finished
    assert rerun.stdout.count("already finished, skipped") == len(finished)


def test_a_masker_that_raises_fails_its_runs_not_the_dry_run(tmp_path):
    plugin = tmp_path / "crash_masker.py"
    plugin.write_text(textwrap.dedent('''
        from mimbench.plugin import hookimpl

        class CrashMasker:
            """Raises when called."""
            def __call__(self, images, generator=None):
                raise RuntimeError("boom in masker")

        @hookimpl
        def mimbench_register_maskers(register):
            register("crash", CrashMasker)
    '''))
    suite = write_suite(tmp_path, TINY_SUITE.replace("masker: [pixel, ", "masker: [crash, pixel, "))
    dry = run_cli("run", str(suite), "--dry-run", "--plugin", str(plugin))
    assert dry.exit_code == 0 and "masker=crash" in dry.output
    result = run_cli("run", str(suite), "--out", str(tmp_path / "r"), "--plugin", str(plugin))
    assert result.exit_code == 1
    table = summary(tmp_path / "r")
    assert table.set_index("masker").status.to_dict() == {"crash": "failed", "pixel": "done", "patch": "done"}
    assert table[table.masker == "crash"].error.iloc[0] == "RuntimeError: boom in masker"


def test_results_are_readable_and_params_keep_their_types(tmp_path):
    out = tmp_path / "results"
    old = os.umask(0o022)
    try:
        run_cli("run", str(write_suite(tmp_path)), "--out", str(out))
    finally:
        os.umask(old)
    for path in [out / "tiny" / "summary.csv", *(out / "tiny" / "runs").glob("*/metrics.json")]:
        assert path.stat().st_mode & 0o777 == 0o644, path
    header, pixel_row, patch_row = (out / "tiny" / "summary.csv").read_text().splitlines()
    columns = header.split(",")
    patch = dict(zip(columns, patch_row.split(",")))
    assert patch["masker.mask_patch_size"] == "4" and patch["seed"] == "0" and patch["pretrained"] == "True"
    assert dict(zip(columns, pixel_row.split(",")))["masker.mask_patch_size"] == ""


def test_running_another_version_of_a_suite_says_so(tmp_path):
    suite, out = write_suite(tmp_path), tmp_path / "results"
    run_cli("run", str(suite), "--out", str(out))
    changed = run_cli("run", str(suite), "--out", str(out), "--set", "grid.masker=[pixel]")
    assert "held another version of suite 'tiny'" in changed.output
    assert len(summary(out)) == 1
    assert len(list((out / "tiny" / "runs").iterdir())) == 2  # the earlier run is still on disk


PROBED_SUITE = TINY_SUITE.replace("probes: []", "probes: [linear, {name: knn, params: {k: 5}}]") \
    .replace("num_images: 96", "num_images: 160")


def test_probes_and_baselines_land_in_the_summary(tmp_path):
    suite = write_suite(tmp_path, PROBED_SUITE.replace("seeds: [0]", "seeds: [0, 1]"))
    out = tmp_path / "results"
    result = run_cli("run", str(suite), "--out", str(out))
    assert result.exit_code == 0, result.output
    table = summary(out)
    runs, baselines = table[table.pretrained], table[~table.pretrained]
    assert len(runs) == 4 and (table.status == "done").all()
    # one random-init per (encoder config, seed) however many maskers, one pixels row per seed
    assert sorted(zip(baselines.baseline, baselines.encoder, baselines.seed)) == [
        ("pixels", "pixels", 0), ("pixels", "pixels", 1), ("random-init", "cnn", 0), ("random-init", "cnn", 1)]
    assert baselines.masker.isna().all() and baselines.recon_psnr.isna().all()
    assert (baselines[baselines.baseline == "random-init"]["encoder.hidden_dim"] == 8).all()
    for column in ("linear_acc", "knn_acc", "linear_steps", "probe_seconds", "wall_seconds"):
        assert table[column].notna().all(), column
    # shapes has 6 classes: on 160 tiny images the probes are above chance on average, not much more
    assert table.linear_acc.between(0, 1).all() and table.knn_acc.between(0, 1).all()
    assert table.linear_acc.mean() > 1 / 6 and table.knn_acc.mean() > 1 / 6
    pixels = baselines[baselines.baseline == "pixels"]
    assert pixels.linear_acc.nunique() == 1 and pixels.knn_acc.nunique() == 1
    assert "cnn (random-init) seed=1" in result.output
    check_design(out / "tiny", table)


def check_design(suite_dir: Path, table: pd.DataFrame) -> None:
    """design.json names every run of the summary with the label of its config.json, its configuration
    (the seeds of one share it) and, for a trained run, its baselines of the same seed by kind."""
    design = json.loads((suite_dir / "design.json").read_text())
    runs = design["runs"]
    assert set(runs) == set(table.run_id) and design["version"] == 2
    for run_id, run in runs.items():
        config = json.loads((suite_dir / "runs" / run_id / "config.json").read_text())
        assert run["label"] == config["label"] and run["seed"] == config["seed"]
        configuration = design["configurations"][run["configuration"]]
        assert run["label"] == f"{configuration['label']} seed={run['seed']}" and run["seed"] in configuration["seeds"]
        row = table.set_index("run_id").loc[run_id]
        assert run["kind"] == ("run" if row.pretrained else row.baseline)
        if run["kind"] != "run":
            assert run["partners"] == {}
            continue
        assert set(run["partners"]) == {"random-init", "pixels"}
        for kind, partner in run["partners"].items():
            assert runs[partner]["kind"] == kind and runs[partner]["seed"] == run["seed"]
        assert json.loads((suite_dir / "runs" / run["partners"]["random-init"] / "config.json").read_text())[
            "encoder"] == config["encoder"]
    trained = [r for r in runs.values() if r["kind"] == "run"]
    assert len({r["configuration"] for r in trained}) == len(trained) // 2  # two seeds per configuration
    for run in trained:
        entry = design["configurations"][run["configuration"]]
        assert entry["partners"] == {kind: runs[p]["configuration"] for kind, p in run["partners"].items()}
    if (suite_dir / "table.csv").is_file():  # the report's rows are named by the design's table view
        named = {c["labels"]["table"]["label"] for c in design["configurations"].values()}
        assert set(pd.read_csv(suite_dir / "table.csv")["label"]) <= named


def test_random_init_baseline_is_the_pretrained_runs_starting_point(tmp_path):
    """Baseline and run build the encoder from the same seed, first: the same initial weights."""
    from mimbench.expansion import expand
    from mimbench.runtime import Runtime
    from mimbench.specs import BaselineSpec
    from mimbench.suite import load_suite

    runtime = Runtime(device="cpu")
    run = expand(load_suite(str(write_suite(tmp_path, PROBED_SUITE))), runtime.registry)[0]
    torch.manual_seed(run.seed)
    started = runtime.components(run, 3).encoder.state_dict()
    torch.manual_seed(run.seed)
    baseline = BaselineSpec("random-init", run.dataset, run.image_size, run.seed, run.eval, run.encoder, run.data)
    built = runtime.encoder(baseline, 3)
    assert all(torch.equal(started[k], v) for k, v in built.state_dict().items())


def test_probes_need_labels(tmp_path):
    suite = write_suite(tmp_path, PROBED_SUITE)
    result = run_cli("run", str(suite), "--dry-run", "--set", "eval.dataset={name: shapes, params: {seed: 3}}")
    assert result.exit_code == 0, result.output  # another labelled dataset for the probes is fine
    assert "2 baselines" in result.output
    gray = run_cli("run", str(suite), "--dry-run", "--set", "eval.dataset=fashion-mnist-mini")
    assert gray.exit_code == 2 and "has 1 channels, but the encoders are pre-trained on 3-channel" in gray.output
    bad = run_cli("run", str(suite), "--dry-run", "--set", "eval.probes=[linear, linear]")
    assert bad.exit_code == 2 and "probe 'linear' is listed twice" in bad.output


def test_unlabelled_pretraining_needs_a_labelled_eval_dataset(tmp_path):
    from PIL import Image

    folder = tmp_path / "photos" / "day1"
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for i in range(40):
        pixels = torch.randint(0, 256, (20, 20, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
    text = PROBED_SUITE.replace("{name: shapes, params: {num_images: 160}}",
                                f"{{name: unlabeled-folder, params: {{root: {tmp_path / 'photos'}}}}}")
    suite = write_suite(tmp_path, text)
    bad = run_cli("run", str(suite), "--dry-run")
    assert bad.exit_code == 2
    assert "dataset 'unlabeled-folder' has no class labels, so eval.probes cannot run on it" in bad.output
    out = tmp_path / "r"
    good = run_cli("run", str(suite), "--out", str(out), "--set", "eval.dataset={name: shapes, params: {num_images: 64}}")
    assert good.exit_code == 0, good.output
    table = summary(out)
    assert (table.status == "done").all() and table.knn_acc.notna().all() and len(table) == 4


def test_a_probe_added_later_runs_on_the_saved_encoders_without_retraining(tmp_path):
    out = tmp_path / "results"
    suite = write_suite(tmp_path, PROBED_SUITE.replace("probes: [linear, {name: knn, params: {k: 5}}]", "probes: [knn]"))
    assert run_cli("run", str(suite), "--out", str(out)).exit_code == 0
    before = summary(out)
    histories = {p: p.stat().st_mtime_ns for p in (out / "tiny" / "runs").glob("*/history.csv")}
    assert "linear_acc" not in before.columns and before.knn_acc.notna().all()

    more = run_cli("run", str(suite), "--out", str(out), "--set", "eval.probes=[knn, linear]")
    assert more.exit_code == 0, more.output
    assert more.output.count("added probes linear") == len(before) == 4
    after = summary(out)
    assert list(after.run_id) == list(before.run_id)  # the same runs: the probe list is not in the id
    assert after.knn_acc.tolist() == before.knn_acc.tolist()
    assert after.linear_acc.notna().all() and after.linear_acc.between(0, 1).all()
    assert {p: p.stat().st_mtime_ns for p in histories} == histories  # nothing was trained again
    # the probe on the reloaded encoder gives what a fresh run computes
    fresh = run_cli("run", str(suite), "--out", str(tmp_path / "fresh"), "--set", "eval.probes=[knn, linear]")
    assert fresh.exit_code == 0
    assert summary(tmp_path / "fresh").linear_acc.tolist() == pytest.approx(after.linear_acc.tolist(), abs=1e-6)
    again = run_cli("run", str(suite), "--out", str(out), "--set", "eval.probes=[knn, linear]")
    assert again.output.count("already finished, skipped") == 4


def test_dry_run_checks_probe_layers_and_the_output_folder(tmp_path):
    suite = write_suite(tmp_path, PROBED_SUITE)
    bad = run_cli("run", str(suite), "--dry-run", "--set", "eval.probes=[{name: linear, params: {layer: 5}}]")
    assert bad.exit_code == 2
    assert "probe 'linear': layer 5: encoder 'cnn' has 2 blocks (0..1)" in bad.output
    ok = run_cli("run", str(suite), "--dry-run", "--set", "eval.probes=[{name: knn, params: {layer: 1}}]")
    assert ok.exit_code == 0, ok.output
    (tmp_path / "afile").write_text("x")
    blocked = run_cli("run", str(suite), "--out", str(tmp_path / "afile" / "sub"))
    assert blocked.exit_code == 2 and "not a folder (a file is in the way)" in blocked.output


def test_probe_numbers_do_not_depend_on_what_ran_before_in_the_process(tmp_path):
    """A fine-tuning head is initialised from torch's global generator: reseeded before the probes,
    so a run gives the same numbers whether it pre-trained its encoder or loaded it from a run of
    the same pre-training, and in whatever order its process ran jobs."""
    suite = write_suite(tmp_path, PROBED_SUITE.replace("probes: [linear, {name: knn, params: {k: 5}}]",
                                                       "probes: [{name: finetune, params: {epochs: 1}}], baselines: []"))
    swept = run_cli("run", str(suite), "--out", str(tmp_path / "swept"), "--set", "grid.masker=[pixel]",
                    "--set", "sweep={eval.labels_per_class: [5, 10]}")
    alone = run_cli("run", str(suite), "--out", str(tmp_path / "alone"), "--set", "grid.masker=[pixel]",
                    "--set", "eval.labels_per_class=10")
    assert swept.exit_code == 0 and alone.exit_code == 0, swept.output + alone.output
    evaluated = summary(tmp_path / "swept").set_index("eval.labels_per_class").finetune_acc[10]
    assert summary(tmp_path / "alone").finetune_acc.iloc[0] == evaluated  # here it pre-trained itself
