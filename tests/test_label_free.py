"""Issue 34: the diagnostics per run (the ``diagnostics`` probe, a ViT's attention recomputed from
queries and keys), the ``supervised`` control, and ``predictors.csv`` (does a label-free number pick
the run the probes prefer?)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mimbench import diagnostics
from mimbench.columns import MetricColumn
from mimbench.data import DeviceImages, Normalizer
from mimbench.probing import ProbeContext, RawPixels
from mimbench.report import predictors
from mimbench_plugins.diagnostics_probe import DiagnosticsProbe
from mimbench_plugins.vit import MAEEncoder, ViTEncoder

CPU = torch.device("cpu")


def _images(count: int, size: int = 16, seed: int = 0) -> DeviceImages:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 1, size, size), generator=g, dtype=torch.uint8)
    return DeviceImages(images, torch.randint(0, 3, (count,), generator=g), 3)


@pytest.mark.parametrize("encoder_class", [ViTEncoder, MAEEncoder])
def test_recomputed_attention_is_what_the_fused_kernel_applies(encoder_class):
    torch.manual_seed(0)
    encoder = encoder_class(1, 16, patch_size=4, dim=32, depth=3, heads=4).eval()
    images = torch.randn(5, 1, 16, 16)
    maps = encoder.attention_maps(images)
    assert len(maps) == 3 and all(m.shape == (5, 4, 16, 16) for m in maps)
    assert all(torch.allclose(m.sum(-1), torch.ones(5, 4, 16)) for m in maps)
    # each block's output rebuilt from its map: map @ v, projected, equals the fused attention's
    x = encoder.embed(images) + encoder.pos_embed
    for layer, attention in zip(encoder.transformer.layers, maps):
        h = layer.norm1(x)
        b, n, d = h.shape
        v = layer.qkv(h).view(b, n, 3, 4, d // 4).permute(2, 0, 3, 1, 4)[2]
        rebuilt = layer.proj((attention @ v).transpose(1, 2).reshape(b, n, d))
        assert torch.allclose(rebuilt, layer.attention(h), atol=1e-5)
        x = layer(x)
    assert torch.allclose(encoder.transformer.norm(x), encoder.transformer.each(encoder.embed(images)
                                                                                + encoder.pos_embed)[-1])


class _KnownAttention(nn.Module):
    """An encoder whose blocks attend as told: identity in block 0, uniform in block 1; its two
    blocks' features are the same up to a rotation and scale."""

    out_dim, stride = 4, 4

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return F.avg_pool2d(torch.cat([images, images ** 2, images.flip(-1), images.flip(-2)], dim=1), 4)

    def blocks(self, images: torch.Tensor) -> list[torch.Tensor]:
        grid = self(images)
        return [3.0 * grid.flip(1), grid]

    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        b, tokens = len(images), (images.shape[-1] // 4) ** 2
        identity = torch.eye(tokens).expand(b, 2, tokens, tokens)
        return [identity, torch.full((b, 2, tokens, tokens), 1.0 / tokens)]


def test_the_diagnostics_probe_gives_the_known_answers():
    train, test = _images(300), _images(50, seed=1)
    context = ProbeContext(_KnownAttention(), train, test, Normalizer.measure(train), CPU, seed=0, batch_size=64)
    columns = DiagnosticsProbe(images=100)(context)
    features = context.features("last").train
    assert columns["rankme"] == pytest.approx(diagnostics.rankme(features))
    assert (columns["alpha_req"], columns["alpha_req_r2"]) == pytest.approx(diagnostics.alpha_req(features))
    assert columns["cka@0"] == pytest.approx(1.0) and columns["cka@1"] == pytest.approx(1.0)
    assert columns["cka"] == pytest.approx(1.0)
    assert columns["attn_distance@0"] == pytest.approx(0.0) and columns["attn_entropy@0"] == pytest.approx(0.0)
    centres = [(4.0 * (i // 4), 4.0 * (i % 4)) for i in range(16)]  # a 4 x 4 grid, 4 px apart
    uniform = sum(math.dist(a, b) for a in centres for b in centres) / 256
    assert columns["attn_distance@1"] == pytest.approx(uniform) == columns["attn_distance"]
    assert columns["attn_entropy@1"] == pytest.approx(math.log(16)) == columns["attn_entropy"]
    assert columns["head_diversity@0"] == pytest.approx(0.0, abs=1e-9)  # both heads attend alike
    # the pixels baseline has no blocks and no attention: RankMe and alpha-ReQ only
    pixels = DiagnosticsProbe()(ProbeContext(RawPixels(1, 16), train, test, Normalizer.measure(train), CPU, seed=0))
    assert set(pixels) == {"rankme", "alpha_req", "alpha_req_r2"} and pixels["rankme"] > 1


def test_the_diagnostics_probe_reads_no_label():
    train, test = _images(200), _images(40, seed=1)
    shuffled = DeviceImages(train.images, train.labels.flip(0), 3)
    encoder = ViTEncoder(1, 16, patch_size=4, dim=16, depth=2, heads=2).eval()
    scores = [DiagnosticsProbe(images=50)(ProbeContext(encoder, data, test, Normalizer.measure(train), CPU, seed=0))
              for data in (train, shuffled)]
    assert scores[0] == scores[1]
    with pytest.raises(ValueError, match="one layer"):
        DiagnosticsProbe(layer="all")


def _runs(rows: list[tuple[str, int, float, float, float]], **extra) -> pd.DataFrame:
    """Labelled runs: (configuration, seed, rankme, final_loss, linear_acc) per row."""
    from mimbench.labels import LABEL_FIELDS

    frame = pd.DataFrame(rows, columns=["config_id", "seed", "rankme", "final_loss", "linear_acc"])
    names = {column: frame["config_id"] for field in LABEL_FIELDS for column in (field, f"budget:{field}")}
    return frame.assign(**names, pretrained=True, status="done", run_id=[f"r{i}" for i in range(len(frame))],
                        encoder="vit", loss="l1", **extra)


DECLARED = [MetricColumn("linear_acc", "linear", kind="accuracy")]


def test_predictors_rank_and_regret_by_hand():
    # rankme orders a < b < c as the accuracy does; the loss prefers a, the worst
    rows = [(c, s, rank + 0.1 * s, loss, acc + 0.01 * s)
            for c, rank, loss, acc in [("a", 1.0, 0.1, 0.50), ("b", 2.0, 0.2, 0.60), ("c", 3.0, 0.3, 0.70)]
            for s in range(3)]
    frame = predictors.predictors(_runs(rows), DECLARED)
    rankme = frame[frame["predictor"] == "rankme"].iloc[0]
    assert rankme["kendall_tau"] == pytest.approx(1.0) and rankme["picked"] == rankme["best"] == "c"
    assert rankme["regret"] == 0 and bool(rankme["picked_well"])
    loss = frame[frame["predictor"] == "final_loss"].iloc[0]
    assert loss["kendall_tau"] == pytest.approx(-1.0) and loss["picked"] == "a"
    assert loss["regret"] == pytest.approx(0.20)
    # best - picked is 0.20 on every seed: an interval of one value, resolved above 0
    assert loss["regret_ci_low"] == pytest.approx(0.20) and not bool(loss["picked_well"])
    assert set(frame["predictor"]) == {"rankme", "final_loss"}  # no alpha_req or ref_psnr column


def test_a_predictor_is_not_compared_across_what_makes_it_incomparable():
    rows = [(c, s, 1.0 + s + (c == "b"), 0.1 * (c == "b"), 0.5 + 0.1 * (c == "b")) for c in "ab" for s in range(2)]
    runs = _runs(rows)
    runs.loc[runs["config_id"] == "b", "loss"] = "l2"  # losses of two kinds are not one scale
    frame = predictors.predictors(runs, DECLARED)
    assert set(frame["predictor"]) == {"rankme"}
    runs.loc[runs["config_id"] == "b", "encoder"] = "cnn"  # nor is RankMe across architectures
    assert predictors.predictors(runs, DECLARED).empty


def test_a_pick_within_the_noise_of_the_best_picked_well():
    rows = [("a", 0, 2.0, 0.1, 0.70), ("a", 1, 2.0, 0.1, 0.60), ("b", 0, 1.0, 0.1, 0.62), ("b", 1, 1.0, 0.1, 0.70)]
    row = predictors.predictors(_runs(rows), DECLARED).set_index("predictor").loc["rankme"]
    assert row["picked"] == "a" and row["best"] == "b" and row["regret"] == pytest.approx(0.01)
    assert row["regret_ci_low"] < 0 < row["regret_ci_high"] and bool(row["picked_well"])
    text = predictors.selection_lines(predictors.predictors(_runs(rows), DECLARED), {"linear_acc": "linear"})
    assert any("RankMe (higher) for linear" in line and "it picked well" in line for line in text)


SUITE = """
name: lf
dataset: {name: fashion-mnist-mini}
image_size: 16
seeds: [0, 1]
train: {epochs: 1, batch_size: 256, warmup_epochs: 0.2}
eval: {probes: [linear], baselines: [random-init, supervised]}
grid:
  encoder: [{name: vit, params: {patch_size: 4, dim: 16, depth: 2, heads: 2}}]
  decoder: [linear]
  masker: [{name: patch, params: {ratio: 0.5, mask_patch_size: 4}}, {name: region, params: {ratio: 0.5}}]
  loss: [l1]
"""


def test_diagnostics_on_a_finished_suite_with_its_supervised_control(tmp_path):
    """The done-when: ``--set eval.diagnostics=true`` writes ``rankme``, the attention columns and
    ``predictors.csv``; on a finished suite it measures the saved encoders, the supervised control's too."""
    from helpers import run_cli, write_suite_file

    path = write_suite_file(tmp_path, SUITE)
    first = run_cli("run", str(path), "--out", str(tmp_path / "out"))
    assert first.exit_code == 0, first.output
    folder = tmp_path / "out" / "lf"
    before = pd.read_csv(folder / "summary.csv")
    supervised = before[before["baseline"] == "supervised"]
    assert len(supervised) == 2 and supervised["final_loss"].notna().all() and supervised["train_steps"].eq(19).all()
    assert (folder / "runs" / supervised["run_id"].iloc[0] / "encoder.pt").is_file()
    assert "rankme" not in before.columns and not (folder / "predictors.csv").exists()
    second = run_cli("run", str(path), "--out", str(tmp_path / "out"), "--set", "eval.diagnostics=true")
    assert second.exit_code == 0, second.output
    assert second.output.count("added probes diagnostics") == 8  # no run trained again
    after = pd.read_csv(folder / "summary.csv")
    assert sorted(after["run_id"]) == sorted(before["run_id"])
    attention = [f"attn_distance@{i}" for i in range(2)]
    assert after[["rankme", "alpha_req", "cka", "attn_distance", *attention]].notna().all().all()
    by_kind = after.set_index(after["baseline"].fillna("run"))
    # trained on the labels, the control's features are no longer its untrained encoder's
    assert (by_kind.loc["supervised", "rankme"].to_numpy() != by_kind.loc["random-init", "rankme"].to_numpy()).all()
    picked = pd.read_csv(folder / "predictors.csv")
    assert set(picked["predictor"]) == {"rankme", "alpha_req", "final_loss"} and set(picked["metric"]) == {"linear_acc"}
    assert picked["n_configurations"].eq(2).all() and picked["n_seeds"].eq(2).all()
    contrasts = pd.read_csv(folder / "diagnostics.csv")
    assert set(contrasts["reference"]) == {"vit (supervised)", "vit (random-init)"} and len(contrasts) == 4
    comparisons = pd.read_csv(folder / "comparisons.csv")
    assert (comparisons["reference"] == "vit (supervised)").sum() == 2  # linear, against the control
    report = (folder / "report.md").read_text()
    assert "## Label-free selection and diagnostics" in report and "attention_distance.png" in report
    assert (folder / "figures" / "cka.png").is_file()
