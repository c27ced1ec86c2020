"""``mimbench export``: each encoder's backbone loads, strict, into its target model (built by the
Python in the exported JSON) and gives mimbench's features on the same images."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from mimbench import folder as store
from mimbench.folder import RunFolder
from mimbench.plugins import load_plugins
from mimbench.registry import Registry

from helpers import run_cli

REGISTRY = Registry(load_plugins(use_env=False))
HAS_TIMM = importlib.util.find_spec("timm") is not None
needs_timm = pytest.mark.skipif(not HAS_TIMM, reason="the timm extra is not installed (pip install -e '.[timm]')")


def pooled(encoder: torch.nn.Module, model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """model(x) [B, D] against mimbench's grid mean-pooled (what its probes use)."""
    return model(x), encoder(x).mean(dim=(2, 3))


def grid(encoder, model, x):
    """model(x) is the grid itself."""
    return model(x), encoder(x)


def timm_tokens(encoder, model, x):
    """timm's patch tokens after the final norm against mimbench's grid, as tokens."""
    return model.forward_features(x)[:, model.num_prefix_tokens:], encoder(x).flatten(2).transpose(1, 2)


CASES = [  # encoder, params, channels, image size, library, how to compare
    ("cnn", {"hidden_dim": 8}, 1, 16, "torch", grid),
    ("resnet", {}, 1, 32, "torchvision", pooled),
    ("resnet", {"small_stem": False}, 3, 64, "torchvision", pooled),
    ("swin", {}, 1, 32, "torchvision", pooled),
    ("swin", {"depths": [2, 2, 2], "heads": [2, 4, 8], "embed_dim": 16}, 3, 64, "torchvision", pooled),
    pytest.param("vit", {"dim": 32, "depth": 2, "heads": 2}, 1, 16, "timm", pooled, marks=needs_timm),
    pytest.param("vit", {"dim": 32, "depth": 2, "heads": 4, "pos_embed": "learned", "patch_size": 8}, 3, 32, "timm",
                 pooled, marks=needs_timm),
    pytest.param("mae", {"dim": 32, "depth": 2, "heads": 2}, 1, 16, "timm", pooled, marks=needs_timm),
    pytest.param("timm", {"model_args": {"depth": 2}, "patch_size": 4}, 3, 16, "timm", timm_tokens, marks=needs_timm),
]


def fake_run(folder: Path, name: str, params: dict, channels: int, size: int) -> torch.nn.Module:
    """A run folder as a finished run leaves it, with an encoder whose weights (and BatchNorm
    statistics) moved away from their initialisation."""
    torch.manual_seed(0)
    resolved = REGISTRY.resolve_params("encoder", name, params)
    encoder = REGISTRY.build("encoder", name, resolved, in_channels=channels, image_size=size)
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
        encoder.train()(torch.randn(8, channels, size, size))  # BatchNorm running statistics
    encoder.eval()
    folder.mkdir(parents=True)
    RunFolder(folder).save_encoder(encoder)
    store.write_json(folder / store.CONFIG_FILE, {
        "run_id": folder.name, "suite": "tiny", "label": f"{name}/linear/patch/l1 seed=0", "seed": 0,
        "image_size": size, "dataset": {"name": "shapes", "params": {}},
        "encoder": {"name": name, "params": resolved},
        "normalization": {"mean": [0.5] * channels, "std": [0.25] * channels}})
    return encoder


@pytest.mark.parametrize("name, params, channels, size, library, compare", CASES)
def test_exported_backbone_loads_strict_and_gives_the_same_features(tmp_path, monkeypatch, name, params, channels,
                                                                   size, library, compare):
    run_dir = tmp_path / "runs" / "0123456789ab"
    encoder = fake_run(run_dir, name, params, channels, size)
    result = run_cli("export", str(run_dir))
    assert result.exit_code == 0, result.output
    description = json.loads((run_dir / "backbone.json").read_text())
    assert description["library"] == library and description["weights"] == "backbone.pt"
    assert description["normalization"] == {"mean": [0.5] * channels, "std": [0.25] * channels}
    assert description["run_id"] == run_dir.name and description["encoder"]["name"] == name
    state = torch.load(run_dir / "backbone.pt")
    assert not any("mask_token" in key for key in state)
    monkeypatch.chdir(run_dir)  # the JSON's code loads the weights by their file name
    namespace: dict = {}
    exec(description["python"], namespace)  # builds the model and loads it with strict=True
    model = namespace["model"]
    x = torch.randn(4, channels, size, size)
    with torch.no_grad():
        theirs, ours = compare(encoder, model, x)
    assert theirs.shape == ours.shape
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_export_to_another_file_and_the_cli_prints_how_to_load_it(tmp_path):
    run_dir = tmp_path / "run"
    fake_run(run_dir, "cnn", {"hidden_dim": 8}, 1, 16)
    target = tmp_path / "exported" / "cnn-backbone.pt"
    target.parent.mkdir()
    result = run_cli("export", str(run_dir), "--out", str(target))
    assert result.exit_code == 0, result.output
    assert target.exists() and (tmp_path / "exported" / "cnn-backbone.json").exists()
    assert "model.load_state_dict(torch.load('cnn-backbone.pt', map_location='cpu', weights_only=True), strict=True)" in result.output
    assert not (run_dir / "backbone.pt").exists()


PLAIN_ENCODER = '''
import torch
from mimbench.plugin import hookimpl


class NoBackbone(torch.nn.Module):
    """An encoder without backbone()."""

    out_dim, stride = 4, 4

    def __init__(self, in_channels: int, image_size: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, 4, 4, stride=4)

    def forward(self, images, mask=None):
        return self.conv(images)


@hookimpl
def mimbench_register_encoders(register):
    register("plain", NoBackbone)
'''


def test_bad_input_exits_2_in_one_line(tmp_path):
    run_dir = tmp_path / "run"
    fake_run(run_dir, "cnn", {"hidden_dim": 8}, 1, 16)
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    store.write_json(baseline / store.CONFIG_FILE, {"baseline": "pixels", "image_size": 16})
    untrained = tmp_path / "untrained"
    fake_run(untrained, "cnn", {"hidden_dim": 8}, 1, 16)
    (untrained / store.ENCODER_FILE).unlink()
    plugin = tmp_path / "plain_encoder.py"
    plugin.write_text(PLAIN_ENCODER)
    plain = tmp_path / "plain"
    plain.mkdir()
    torch.save({"conv.weight": torch.zeros(4, 1, 4, 4), "conv.bias": torch.zeros(4)}, plain / store.ENCODER_FILE)
    store.write_json(plain / store.CONFIG_FILE, {"image_size": 16, "encoder": {"name": "plain", "params": {}},
                                                 "normalization": {"mean": [0.5], "std": [0.25]}})
    cases = [
        ([str(tmp_path / "nowhere")], "run folder not found"),
        ([str(tmp_path)], "no config.json in"),
        ([str(baseline)], "is a baseline: it has no pre-trained encoder to export"),
        ([str(untrained)], "no encoder.pt in"),
        ([str(plain), "--plugin", str(plugin)], "encoder 'plain' cannot be exported as a backbone"),
        ([str(run_dir), "--out", str(tmp_path / "b.json")], "its .json description is written next to it"),
        ([str(run_dir), "--out", str(tmp_path / "missing" / "b.pt")], "folder"),
    ]
    for args, error in cases:
        result = run_cli("export", *args)
        assert result.exit_code == 2 and "error: " in result.output and error in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_a_swin_whose_last_grid_is_smaller_than_its_window_has_no_torchvision_match(tmp_path):
    run_dir = tmp_path / "run"
    fake_run(run_dir, "swin", {"window_size": 8}, 1, 32)  # stage grids 16 and 8: windows of 8 in both
    assert run_cli("export", str(run_dir)).exit_code == 0
    small = tmp_path / "small"
    fake_run(small, "swin", {"window_size": 16}, 1, 32)  # the last stage's 8x8 grid attends as one window
    result = run_cli("export", str(small))
    assert result.exit_code == 2 and "no torchvision SwinTransformer matches" in result.output, result.output
