"""Prediction targets: the built-ins against their papers and independent implementations, the
contract the core keeps with any target, and suites that sweep them."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mimbench import testing
from mimbench.contract import mask_on_grid
from mimbench.jobs import PluginSources
from mimbench.runtime import Runtime
from mimbench.specs import hash_config
from mimbench.steps import MaskedModel
from mimbench.train import Components
from mimbench_plugins.ema_teacher import EMATeacher
from mimbench_plugins.hog_target import HOGTarget
from mimbench_plugins.losses import MSELoss, norm_pix_target
from mimbench_plugins.pixel_targets import FourierTarget, NormPixTarget, PixelsTarget
from mimbench_plugins.vit import ViTEncoder

from helpers import run_cli, write_suite_file

FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
EMBEDDED = Path(__file__).parents[1] / "mimbench_plugins" / "data"


def real_images(count: int = 40) -> np.ndarray:
    """``count`` real Fashion-MNIST test images as float64 [N, 28, 28] in 0..255 (the embedded
    subset when the Debian package is not installed)."""
    path = FASHION if FASHION.exists() else next(EMBEDDED.glob("*/t10k-images-idx3-ubyte.gz"))
    raw = gzip.open(path).read()[16:]
    return np.frombuffer(raw, np.uint8).reshape(-1, 28, 28)[:count].astype(np.float64)


def small_vit(channels: int = 1, size: int = 16) -> ViTEncoder:
    torch.manual_seed(0)
    return ViTEncoder(channels, size, patch_size=4, dim=16, depth=2, heads=2)


# -- the built-ins -------------------------------------------------------------------------------

def test_the_five_builtins_are_listed_with_their_params():
    result = run_cli("plugins", "--kind", "target", "--params")
    assert result.exit_code == 0, result.output
    for name in ("pixels", "norm_pix", "hog", "fourier", "ema_teacher"):
        assert name in result.output
    for param in ("cell_size", "gaussian_window", "top_k", "momentum_end", "patch_size"):
        assert param in result.output


@pytest.mark.parametrize("factory, params", [
    (PixelsTarget, {}), (NormPixTarget, {"patch_size": 4}), (HOGTarget, {}), (HOGTarget, {"gradient": "central"}),
    (FourierTarget, {"patch_size": 8}), (EMATeacher, {"top_k": 2, "momentum": 0.9}),
])
def test_builtin_targets_conform(factory, params):
    testing.check_target(factory, params)


def test_hog_equals_scikit_image_on_real_images():
    from skimage import feature
    images = real_images()  # 0..255: scikit-image's eps (1e-5) in the L2 norm is then negligible
    target = HOGTarget(1, 28, cell_size=4, bins=9, gaussian_window=0, gradient="central").double()
    ours = target(torch.from_numpy(images)[:, None]).permute(0, 2, 3, 1).numpy()  # [N, 7, 7, 9]
    for image, mine in zip(images, ours):
        theirs = feature.hog(image, orientations=9, pixels_per_cell=(4, 4), cells_per_block=(1, 1),
                             block_norm="L2", feature_vector=False)[:, :, 0, 0, :]
        np.testing.assert_allclose(mine, theirs, atol=1e-6)


def test_hog_by_hand_a_vertical_edge_votes_in_the_horizontal_bin_with_sobel_weights():
    image = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    image[..., 4:] = 1.0  # a step along x: gradient (gx > 0, gy = 0), orientation 0
    hog = HOGTarget(1, 8, cell_size=4, bins=9, gaussian_window=0).double()(image)  # [1, 9, 2, 2]
    assert torch.equal(hog[0, 0], torch.ones(2, 2, dtype=torch.float64))  # every cell: all in bin 0, norm 1
    assert hog[0, 1:].abs().sum() == 0
    ramp = torch.tensor([[float(i + j) for j in range(12)] for i in range(12)], dtype=torch.float64)
    hog = HOGTarget(1, 12, cell_size=4, bins=9, gaussian_window=0).double()(ramp[None, None])
    assert hog[0, 2, 1, 1] == 1.0  # the inner cell: orientation 45 degrees, bin 2 of 20-degree bins


def test_hog_gaussian_window_is_maskfeats():
    from mimbench_plugins.hog_target import gaussian_kernel

    window = gaussian_kernel(16)
    n = (torch.arange(16, dtype=torch.float64) - 7.5) / 8  # mmpretrain's HOGGenerator: std = size // 2
    expected = torch.exp(-0.5 * n**2)
    expected = expected[:, None] * expected[None, :]
    assert torch.allclose(window, expected / expected.sum())


def test_fourier_is_the_per_patch_orthonormal_spectrum_and_inverts_exactly():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 8, 8)
    target = FourierTarget(3, 8, patch_size=4)
    out = target(images)
    assert out.shape == (2, 3 * 4 * 3 * 2, 2, 2) and target.channels == 72 and target.stride == 4
    patch = images[1, 2, 4:8, 0:4].numpy()  # channel 2, cell (1, 0)
    spectrum = np.fft.rfft2(patch, norm="ortho")  # [4, 3]
    got = out[1].view(3, 4, 3, 2, 2, 2)[2, :, :, :, 1, 0].numpy()
    np.testing.assert_allclose(got[..., 0], spectrum.real, atol=1e-5)
    np.testing.assert_allclose(got[..., 1], spectrum.imag, atol=1e-5)
    assert torch.allclose(target.to_image(out, images), images, atol=1e-5)


def test_norm_pix_target_is_the_norm_pix_loss_in_another_place():
    torch.manual_seed(0)
    images, pred = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    mask = torch.rand(2, 8, 8) < 0.5
    target = NormPixTarget(1, 8, patch_size=4)
    assert torch.equal(target(images), norm_pix_target(images, 4))
    assert torch.equal(MSELoss()(pred, target(images), mask), MSELoss(norm_pix=True)(pred, images, mask))


def test_the_teacher_gets_no_gradient_and_follows_the_ema_formula_exactly():
    student = small_vit()
    teacher = EMATeacher(1, 16, student, top_k=2, momentum=0.9, momentum_end=0.99, anneal_share=0.5)
    assert teacher.momentum_at(1, 10) == pytest.approx(0.918) and teacher.momentum_at(7, 10) == 0.99
    decoder = torch.nn.Conv2d(16, 16, 1)
    decoder.forward_ = decoder.forward
    parts = Components(student, _GridDecoder(16, 16), None, MSELoss(), teacher)
    model = MaskedModel(parts).train()
    optimizer = torch.optim.SGD(list(student.parameters()) + list(parts.decoder.parameters()), lr=0.1)
    images = torch.randn(4, 1, 16, 16)
    mask = torch.zeros(4, 16, 16, dtype=torch.bool)
    mask[:, :8] = True
    before = [p.clone() for p in teacher.teacher.parameters()]
    model(images, mask).backward()
    assert all(p.grad is None for p in teacher.parameters())
    optimizer.step()
    teacher.update(student, 1, 10)
    for old, new, s in zip(before, teacher.teacher.parameters(), student.parameters()):
        assert torch.allclose(new, 0.918 * old + 0.082 * s, atol=1e-7)
    assert not teacher.teacher.training and model.training


def test_teacher_target_averages_the_top_blocks_normalised_per_token():
    student = small_vit()
    teacher = EMATeacher(1, 16, student, top_k=2)
    images = torch.randn(2, 1, 16, 16)
    grids = student.eval().blocks(images)[-2:]
    normed = [torch.nn.functional.layer_norm(g.movedim(1, -1), (16,)).movedim(-1, 1) for g in grids]
    assert torch.allclose(teacher(images), (normed[0] + normed[1]) / 2, atol=1e-5)


def test_a_teacher_on_blocks_of_other_grids_is_refused_with_what_to_do():
    from mimbench_plugins.encoders import ConvEncoder

    with pytest.raises(ValueError, match="lower top_k"):
        EMATeacher(1, 16, ConvEncoder(1, 16), top_k=2)


# -- the contract the core keeps ------------------------------------------------------------------

class _GridDecoder(torch.nn.Module):
    """A 1x1 conv: features [B, D, h, w] -> [B, out, h, w] (encoder stride = target stride)."""

    def __init__(self, in_dim: int, out: int):
        super().__init__()
        self.head = torch.nn.Conv2d(in_dim, out, 1)

    def forward(self, features, mask=None):
        return self.head(features)


def test_a_cell_is_hidden_only_when_all_its_pixels_are():
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, :4, :4] = True  # one whole cell
    mask[0, 4:, 4:7] = True  # three quarters of another
    assert mask_on_grid(mask, 4).tolist() == [[[True, False], [False, False]]]
    assert mask_on_grid(mask, 1) is mask


RUNTIME = Runtime(PluginSources(), "cpu")


@pytest.mark.parametrize("target", ["pixels", "norm_pix", "hog", "fourier", "ema_teacher"])
def test_the_encoder_never_sees_hidden_pixels_under_any_target(target):
    from mimbench.specs import Component

    encoder = small_vit()
    seen = []
    encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    built = RUNTIME.build("target", Component(target, RUNTIME.registry.resolve_params("target", target, {})),
                          in_channels=1, image_size=16, encoder=encoder)
    seen.clear()  # a teacher's build-time check ran its own copy, not this encoder
    decoder = _GridDecoder(16, built.channels) if built.stride == 4 else None
    if decoder is None:
        decoder = RUNTIME.build("decoder", Component("linear", {}), in_dim=16, stride=4, out_channels=built.channels,
                                image_size=16)
    model = MaskedModel(Components(encoder, decoder, None, MSELoss(), built))
    images = torch.randn(4, 1, 16, 16) + 5.0  # no pixel is 0 by chance
    mask = torch.zeros(4, 16, 16, dtype=torch.bool)
    mask[:, 4:12, 4:12] = True
    loss = model(images, mask, check=True)
    assert math.isfinite(loss.item()) and len(seen) == 1
    assert (seen[0][mask.unsqueeze(1).expand_as(seen[0])] == 0).all()
    assert (seen[0][~mask.unsqueeze(1).expand_as(seen[0])] != 0).all()


def test_pixels_is_the_default_and_leaves_run_ids_unchanged():
    config = {"encoder": {"name": "vit", "params": {}}, "train": {"epochs": 1}, "eval": {"probes": []}}
    with_pixels = {**config, "target": {"name": "pixels", "params": {}}}
    assert hash_config(with_pixels) == hash_config(config)
    assert hash_config({**config, "target": {"name": "hog", "params": {"cell_size": 4}}}) != hash_config(config)


# -- suites ---------------------------------------------------------------------------------------

TARGETS_SUITE = """
name: targets
dataset: {{name: fashion-mnist-mini}}
image_size: 16
seeds: [0]
train: {{epochs: 1, batch_size: 64, log_every: 1, warmup_epochs: 0}}
eval: {{reference_masker: {{name: patch, params: {{ratio: 0.5, mask_patch_size: 4}}}}, batch_size: 256,
       probes: [knn]}}
grid:
  encoder: [{{name: vit, params: {{patch_size: 4, dim: 32, depth: 2, heads: 2}}}}]
  decoder: [linear]
  masker: [{{name: patch, params: {{ratio: 0.5, mask_patch_size: 4}}}}]
  loss: [l1]
  target: {targets}
"""


def test_a_grid_of_targets_runs_every_configuration_to_done(tmp_path):
    suite = write_suite_file(tmp_path, TARGETS_SUITE.format(
        targets="[pixels, hog, fourier, {name: ema_teacher, params: {momentum: 0.99}}, norm_pix]"))
    result = run_cli("run", str(suite), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / "targets" / "summary.csv")
    runs = table[table["baseline"].isna()].set_index("target")
    assert sorted(runs.index) == ["ema_teacher", "fourier", "hog", "norm_pix", "pixels"]
    assert (table["status"] == "done").all() and runs["knn_acc"].notna().all()
    assert runs.loc[["hog", "ema_teacher"], "recon_psnr"].isna().all()  # not in pixel space: no PSNR
    assert runs.loc[["pixels", "fourier", "norm_pix"], "recon_psnr"].notna().all()
    assert runs.loc[["hog", "ema_teacher", "fourier", "norm_pix"], "target_loss"].gt(0).all()
    assert runs.loc[["hog", "ema_teacher", "fourier", "norm_pix"], "ref_target_loss"].gt(0).all()
    assert math.isnan(runs.loc["pixels", "target_loss"])
    assert runs.loc["norm_pix", "recon_uses_target_stats"] and not runs.loc["fourier", "recon_uses_target_stats"]
    teacher_run = tmp_path / "out" / "targets" / "runs" / runs.loc["ema_teacher", "run_id"]
    saved = torch.load(teacher_run / "target.pt")
    assert any(key.startswith("teacher.") for key in saved)
    encoder = torch.load(teacher_run / "encoder.pt")
    assert not torch.equal(saved["teacher.patch_embed.weight"], encoder["patch_embed.weight"])  # EMA lags
    config = json.loads((teacher_run / "config.json").read_text())
    assert config["target"]["name"] == "ema_teacher"
    flops = runs["flops_per_image"]
    assert flops["ema_teacher"] > flops["pixels"] * 1.2  # the teacher's forward is part of the step
    assert "target" in (tmp_path / "out" / "targets" / "report.md").read_text()


@pytest.mark.parametrize("change, message", [
    ("masker: [{name: pixel, params: {ratio: 0.5}}]\n  target: [hog]",
     "target 'hog' predicts 4x4 cells"),
    ("masker: [{name: patch, params: {ratio: 0.5, mask_patch_size: 4}}]\n  target: [{name: fourier, params: {patch_size: 8}}]",
     "encoder stride 4"),
    ("masker: [{name: patch, params: {ratio: 0.5, mask_patch_size: 4}}]\n  target: [hog]\n  loss: [{name: l1, params: {norm_pix: true}}]",
     "write target: norm_pix"),
])
def test_targets_that_cannot_work_exit_2_before_training(tmp_path, change, message):
    text = TARGETS_SUITE.format(targets="[pixels]").replace(
        "  masker: [{name: patch, params: {ratio: 0.5, mask_patch_size: 4}}]\n  loss: [l1]\n  target: [pixels]\n",
        "  loss: [l1]\n  " + change + "\n")
    if "loss: [{name: l1" in change:
        text = text.replace("  loss: [l1]\n", "", 1)
    suite = write_suite_file(tmp_path, text)
    result = run_cli("run", str(suite), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def readme_target(folder: Path) -> Path:
    """The docs' example target (docs/plugins.md), as the file a user would save."""
    from docs_examples import plugin_file

    path = folder / "my_targets.py"
    path.write_text(plugin_file("my_targets.py"))
    return path


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_target_in_a_plugin_file_passes_check_target_and_runs_in_executors(tmp_path, executor, request):
    plugin = readme_target(tmp_path)
    assert len(plugin.read_text().strip().splitlines()) <= 25
    import importlib.util

    spec = importlib.util.spec_from_file_location("my_targets_check", plugin)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    testing.check_target(module.CellMean)
    images = torch.randn(2, 1, 8, 8)
    assert torch.allclose(module.CellMean(1, 8)(images)[0, 0, 1, 0], images[0, 0, 4:8, 0:4].mean())
    args = []
    if executor == "ray":
        request.getfixturevalue("ray_instance")
        args = ["--executor", "ray", "--set", "execution.cpus_per_run=1"]
    suite = write_suite_file(tmp_path, TARGETS_SUITE.format(targets="[cell_mean]"))
    result = run_cli("run", str(suite), "--out", str(tmp_path / "out"), "--plugin", str(plugin), *args)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / "targets" / "summary.csv")
    assert (table["status"] == "done").all() and table["target_loss"].dropna().gt(0).all()


def test_a_teacher_trained_on_two_ddp_processes_matches_one_process(tmp_path):
    text = TARGETS_SUITE.format(targets="[{name: ema_teacher, params: {momentum: 0.9}}]").replace(
        "probes: [knn]", "probes: [], baselines: []")
    suite = write_suite_file(tmp_path, text)
    folders = []
    for devices in (1, 2):
        out = tmp_path / f"out{devices}"
        result = run_cli("run", str(suite), "--out", str(out), "--device", "cpu", "--set", f"train.devices={devices}")
        assert result.exit_code == 0, result.output
        (folder,) = (out / "targets" / "runs").iterdir()
        folders.append(folder)
    one, two = (torch.load(folder / "target.pt") for folder in folders)
    assert one.keys() == two.keys()
    for key in one:  # rank 0's teacher came back, and followed the same student
        assert torch.allclose(one[key], two[key], atol=1e-4, rtol=1e-3), key
    losses = [json.loads((folder / "metrics.json").read_text())["target_loss"] for folder in folders]
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)
