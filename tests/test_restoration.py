"""Restoration: the classical references next to every reconstruction (tested in test_metrics.py)
and the super-resolution probe against bicubic upsampling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mimbench import metrics
from mimbench.data import DeviceImages, Normalizer
from mimbench.probing import ProbeContext, RawPixels
from mimbench_plugins.restoration_probe import RestorationProbe, _cell_image, _cell_pixels, _ridge, upsampled

CPU = torch.device("cpu")


def _blobs(count: int, generator: torch.Generator, size: int = 32) -> DeviceImages:
    """Generated colour images: a few soft coloured discs with sharp rims (no colour dataset offline)."""
    ys, xs = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    images = torch.zeros(count, 3, size, size)
    for image in images:
        for _ in range(3):
            cx, cy, r = (torch.rand(3, generator=generator) * torch.tensor([size, size, size / 3])).tolist()
            colour = torch.rand(3, 1, 1, generator=generator)
            inside = ((xs - cx) ** 2 + (ys - cy) ** 2 < (r + 2) ** 2).float()
            image.copy_(torch.maximum(image, colour * inside))
    return DeviceImages((images * 255).round().to(torch.uint8), torch.zeros(count, dtype=torch.long), 1)


def test_cells_and_images_are_inverse_and_upsampling_keeps_a_constant_image():
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(_cell_image(_cell_pixels(x, (4, 4)), x.shape, (4, 4)), x)
    assert _cell_pixels(x, (4, 4)).shape == (2 * 16, 3 * 4)
    assert torch.allclose(upsampled(torch.full((1, 1, 8, 8), 0.3), 2), torch.full((1, 1, 8, 8), 0.3))
    with pytest.raises(ValueError, match="multiple of factor"):
        upsampled(torch.rand(1, 1, 9, 9), 2)


def test_ridge_is_least_squares_with_an_unpenalised_bias():
    g = torch.Generator().manual_seed(0)
    x, true = torch.randn(200, 5, generator=g), torch.randn(5, 2, generator=g)
    y = x @ true + 3.0
    weights = _ridge(x, y, 1e-12)
    assert torch.allclose(weights[:-1], true, atol=1e-4) and torch.allclose(weights[-1], torch.full((2,), 3.0), atol=1e-4)
    shrunk = _ridge(x, y, 10.0)
    assert shrunk[:-1].norm() < 0.2 * true.norm()  # strength shrinks the weights, not the bias
    assert torch.allclose(shrunk[-1], y.mean(0) - x.mean(0) @ shrunk[:-1], atol=1e-4)


def test_super_resolution_beats_bicubic_from_raw_pixels_and_not_from_constant_features():
    g = torch.Generator().manual_seed(1)
    train, test = _blobs(200, g), _blobs(60, g)
    normalize = Normalizer.measure(train)
    scores = RestorationProbe()(ProbeContext(RawPixels(3, 32), train, test, normalize, CPU, seed=0, batch_size=64))
    # the reference, by hand: the mean over test images of the bicubic upsampling's PSNR and SSIM
    x = test.images.float() / 255
    bicubic = F.interpolate(F.avg_pool2d(x, 2), size=32, mode="bicubic", align_corners=False).clamp(0, 1)
    assert scores["sr_bicubic_psnr"] == pytest.approx(metrics.psnr((bicubic - x).double().square().flatten(1).mean(1))
                                                      .mean().item(), rel=1e-5)
    assert scores["sr_bicubic_ssim"] == pytest.approx(metrics.ssim(bicubic, x).mean().item(), rel=1e-5)
    assert scores["sr_gain_psnr"] == pytest.approx(scores["sr_psnr"] - scores["sr_bicubic_psnr"])
    assert scores["sr_gain_psnr"] > 0.3 and scores["sr_ssim"] > scores["sr_bicubic_ssim"]
    assert scores["sr_hp_ridge"] in RestorationProbe().ridge

    class Constant(torch.nn.Module):
        out_dim, stride = 4, 4

        def forward(self, images, mask=None):
            return torch.ones(images.shape[0], 4, 8, 8)

    blind = RestorationProbe()(ProbeContext(Constant(), train, test, normalize, CPU, seed=0, batch_size=64))
    assert abs(blind["sr_gain_psnr"]) < 0.1  # the mean residual of each cell position, no more


def test_reconstructions_are_compared_with_biharmonic_inpainting_run_by_run(tmp_path):
    """comparisons.csv's ``biharmonic`` family: recon − inpaint of the same run, per configuration;
    none for a run de-normalised with the hidden patch's statistics; the classical columns
    themselves are never compared between configurations."""
    import numpy as np
    import pandas as pd
    import yaml

    from mimbench import api, columns

    rng = np.random.default_rng(0)
    rows = []
    for seed in range(6):
        for masker, gain, uses_stats in (("pixel", -1.0, False), ("patch", 0.5, False), ("region", 2.0, True)):
            inpaint = 18 + {"pixel": 4.0, "patch": 0.0, "region": -2.0}[masker]
            recon = inpaint + gain + 0.1 * rng.standard_normal()
            rows.append({"run_id": f"{masker}{seed}", "status": "done", "dataset": "shapes", "encoder": "cnn",
                         "decoder": "linear", "masker": masker, "loss": "l1", "seed": seed, "pretrained": True,
                         "baseline": None, "recon_psnr": recon, "inpaint_psnr": inpaint, "recon_ssim": 0.5,
                         "inpaint_ssim": 0.4, "meanfill_psnr": 10.0, "recon_uses_target_stats": uses_stats})
    folder = tmp_path / "hand"
    folder.mkdir()
    pd.DataFrame(rows).to_csv(folder / "summary.csv", index=False)
    (folder / "suite.yaml").write_text(yaml.safe_dump({"name": "hand", "dataset": "shapes", "seeds": list(range(6)),
                                                       "grid": {"encoder": "cnn", "decoder": "linear",
                                                                "masker": ["pixel", "patch", "region"], "loss": "l1"}}))
    (folder / "columns.json").write_text(columns.dumps(list(columns.RECONSTRUCTION_COLUMNS)))
    frame = api.comparisons(folder)
    inpainting = frame[frame["reference"] == "biharmonic inpainting"]
    assert sorted(inpainting["configuration"].unique()) == ["cnn / patch", "cnn / pixel"]  # region: norm_pix-like
    summary = pd.DataFrame(rows)
    for row in inpainting.itertuples():
        mine = summary[summary["masker"] == row.configuration.split(" / ")[1]]
        assert row.n == 6
        assert row.mean_diff == pytest.approx((mine[row.metric] - mine[row.metric.replace("recon", "inpaint")]).mean())
    pixel = inpainting[(inpainting["configuration"] == "cnn / pixel") & (inpainting["metric"] == "recon_psnr")]
    assert pixel["ci_high"].item() < 0 and bool(pixel["resolved"].item())  # 1 dB below inpainting, resolved
    assert not frame["metric"].isin(["inpaint_psnr", "inpaint_ssim", "meanfill_psnr", "inpaint_gain_psnr"]).any()


def test_classical_reference_false_skips_the_references_and_keeps_the_run_ids(tmp_path):
    import pandas as pd

    from helpers import run_cli, write_suite_file

    suite = """
name: plain
dataset: {name: fashion-mnist-mini}
image_size: 16
seeds: [0]
train: {epochs: 1, batch_size: 64, warmup_epochs: 0.2}
eval: {probes: [], baselines: [], classical_reference: false}
grid:
  encoder: [{name: vit, params: {patch_size: 4, dim: 16, depth: 1, heads: 2}}]
  decoder: [linear]
  masker: [{name: patch, params: {ratio: 0.5, mask_patch_size: 4}}]
  loss: [l1]
"""
    path = write_suite_file(tmp_path, suite)
    assert run_cli("run", str(path), "--out", str(tmp_path / "out")).exit_code == 0
    table = pd.read_csv(tmp_path / "out" / "plain" / "summary.csv")
    assert table["recon_psnr"].notna().all() and table["recon_ssim"].notna().all()
    assert table[["inpaint_psnr", "inpaint_ssim", "meanfill_psnr", "inpaint_gain_psnr"]].isna().all().all()
    on = run_cli("run", str(path), "--out", str(tmp_path / "out"), "--dry-run", "--set", "eval.classical_reference=true")
    assert on.exit_code == 0 and table["run_id"][0] in on.output  # the same run id
