"""The ``timm`` encoder: a timm ViT trained on CPU by a suite, exported, loaded back into timm."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from mimbench import testing
from mimbench.plugins import load_plugins
from mimbench.registry import Registry

from helpers import run_cli, write_suite_file

timm = pytest.importorskip("timm", reason="the timm extra is not installed (pip install -e '.[timm]')")

REGISTRY = Registry(load_plugins(use_env=False))
ENCODER = REGISTRY.get("encoder", "timm").factory
SUITE = """
name: vit-timm
dataset: {name: shapes, params: {num_images: 64}}
image_size: 32
seeds: [0]
train: {epochs: 1, batch_size: 32, log_every: 1}
eval: {batch_size: 64, probes: [{name: knn, params: {layer: all}}], baselines: []}
grid:
  encoder: [{name: timm, params: {model: vit_tiny_patch16_224, patch_size: 8}}]
  decoder: [linear]
  masker: [{name: patch, params: {mask_patch_size: 8}}]
  loss: [l1]
"""


def test_a_timm_vit_trains_on_cpu_and_its_export_loads_into_timm_strict(tmp_path):
    out = tmp_path / "out"
    result = run_cli("run", str(write_suite_file(tmp_path, SUITE)), "--out", str(out), "--set", "execution.threads=1")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "vit-timm" / "summary.csv")
    assert list(table.status) == ["done"] and table["encoder.model"][0] == "vit_tiny_patch16_224"
    assert table.recon_psnr[0] > 3 and "knn_acc@11" in table.columns  # a probe on each of the 12 blocks
    run_dir = out / "vit-timm" / "runs" / table.run_id[0]

    exported = run_cli("export", str(run_dir), "--out", str(tmp_path / "vit.pt"))
    assert exported.exit_code == 0, exported.output
    description = json.loads((tmp_path / "vit.json").read_text())
    model = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8, in_chans=3)
    model.load_state_dict(torch.load(tmp_path / "vit.pt"), strict=True)
    model.eval()

    config = json.loads((run_dir / "config.json").read_text())
    encoder = REGISTRY.build("encoder", "timm", config["encoder"]["params"], in_channels=3, image_size=32)
    encoder.load_state_dict(torch.load(run_dir / "encoder.pt"))
    encoder.eval()
    assert "mask_token" in dict(encoder.named_parameters()) and "mask_token" not in torch.load(tmp_path / "vit.pt")
    fresh = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8, in_chans=3)
    assert not torch.equal(fresh.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)  # what it loaded trained

    images = REGISTRY.build("dataset", "shapes", {"num_images": 8}, split="test", image_size=32)
    x = torch.stack([images[i][0] for i in range(8)])  # [8, 3, 32, 32] in [0, 1]
    mean, std = (torch.tensor(description["normalization"][k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    x = (x - mean) / std
    with torch.no_grad():
        ours = encoder(x).flatten(2).transpose(1, 2)  # [8, 16, 192]
        theirs = model.forward_features(x)[:, model.num_prefix_tokens:]
    assert ours.shape == (8, 16, 192)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_the_default_model_conforms():
    testing.check_encoder(ENCODER, {}, image_size=32)  # vit_tiny_patch16_224 with its 16 px patches: 2 x 2 tokens


def test_blocks_and_layer_decay_depths():
    encoder = ENCODER(in_channels=1, image_size=16, patch_size=4, model_args={"depth": 3}).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        blocks = encoder.blocks(x)
        assert [tuple(b.shape) for b in blocks] == [(2, 192, 4, 4)] * 3
        torch.testing.assert_close(blocks[-1], encoder(x))
    depths, count = encoder.param_depths()
    assert count == 3 and depths["vit.blocks.2.mlp.fc2.weight"] == 3 and depths["vit.norm.weight"] == 4
    assert depths["mask_token"] == depths["vit.cls_token"] == depths["vit.patch_embed.proj.weight"] == 0


def test_a_pooling_head_with_parameters_is_frozen_and_still_exported():
    params = {"patch_size": 4, "model_args": {"depth": 1, "global_pool": "avg"}}  # fc_norm: a LayerNorm after pooling
    testing.check_encoder(ENCODER, params, image_size=16)
    encoder = ENCODER(in_channels=3, image_size=16, **params)
    assert not encoder.vit.fc_norm.weight.requires_grad
    backbone = encoder.backbone()
    model = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=16, patch_size=4, depth=1,
                              global_pool="avg", in_chans=3)
    model.load_state_dict(backbone.state_dict, strict=True)


@pytest.mark.parametrize("params, error", [
    ({"model": "vit_tiny_patch16"}, "unknown timm model 'vit_tiny_patch16'; did you mean"),
    ({"model": "resnet18"}, "is not a timm VisionTransformer"),
    ({"patch_size": 5}, "image_size 32 is not divisible by the patch size"),
    ({"model_args": {"depth": "deep"}}, "encoder 'timm'"),
])
def test_bad_params_exit_2_in_one_line(tmp_path, params, error):
    spec = json.dumps({"name": "timm", "params": params})
    result = run_cli("run", str(write_suite_file(tmp_path, SUITE)), "--dry-run", "--set", f"grid.encoder=[{spec}]")
    assert result.exit_code == 2 and error in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_pretrained_weights_that_cannot_be_downloaded_exit_2(tmp_path):
    spec = '{name: timm, params: {pretrained: true, patch_size: 8}}'
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # an empty cache, no network
    result = subprocess.run([str(Path(sys.executable).parent / "mimbench"), "run", str(write_suite_file(tmp_path, SUITE)),
                             "--dry-run", "--set", f"grid.encoder=[{spec}]"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr
    assert "error: encoder 'timm': timm model 'vit_tiny_patch16_224' (pretrained=True)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_without_timm_the_encoder_asks_for_the_extra(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "timm" else real(name, *a))
    result = run_cli("run", str(write_suite_file(tmp_path, SUITE)), "--dry-run")
    assert result.exit_code == 2 and "error: encoder 'timm' needs timm" in result.output
    assert "pip install 'mimbench[timm]'" in result.output
