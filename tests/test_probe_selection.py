"""Probe protocols: the attentive probe, and hyper-parameters chosen on held-out train data only."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mimbench.data import DeviceImages, Normalizer
from mimbench.errors import ConfigError
from mimbench.plugins import load_plugins
from mimbench.probing import ProbeContext, RawPixels
from mimbench.registry import Registry
from mimbench.selection import as_grid, choose, held_out_split
from mimbench_plugins.attentive_probe import AttentiveProbe, EfficientPooling, head_parameters
from mimbench_plugins.probes import FineTuneProbe, KNNProbe, LinearProbe

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(load_plugins())


def located_class_images(n: int, seed: int, size: int = 16) -> DeviceImages:
    """4 classes told apart by *where* a bright 4 px square sits (one of 4 corners) on noise: a
    mean over the tokens loses most of it, attention over the tokens keeps it."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.randint(0, 60, (n, 1, size, size), generator=g)
    for i, label in enumerate(labels.tolist()):
        y, x = divmod(label, 2)
        images[i, :, y * (size - 4):y * (size - 4) + 4, x * (size - 4):x * (size - 4) + 4] = 250
    return DeviceImages(images.to(torch.uint8), labels, 4)


class PatchGrid(nn.Module):
    """A fixed 'encoder': each 4 px patch's mean brightness and its position (x, y in [-1, 1]), as a
    3-channel grid [B, 3, h, w]. Averaged over the grid, the position channels are 0 for every image."""

    out_dim, stride = 3, 4

    def forward(self, images, mask=None):
        pooled = nn.functional.avg_pool2d(images, 4)
        b, _, h, w = pooled.shape
        y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        return torch.cat([pooled, x.expand(b, 1, h, w), y.expand(b, 1, h, w)], dim=1)


def context(encoder: nn.Module, train: DeviceImages, test: DeviceImages, seed: int = 0) -> ProbeContext:
    return ProbeContext(encoder, train, test, Normalizer.measure(train), CPU, seed, batch_size=64)


def shuffled_labels(images: DeviceImages, seed: int = 1) -> DeviceImages:
    order = torch.randperm(len(images.labels), generator=torch.Generator().manual_seed(seed))
    return DeviceImages(images.images, images.labels[order], images.num_classes)


def test_efficient_pooling_with_uniform_attention_is_mean_pooling_then_linear():
    torch.manual_seed(0)
    dim, queries, classes = 12, 3, 5
    pooling = EfficientPooling(dim, queries)
    classifier = nn.Linear(pooling.out_dim, classes)
    with torch.no_grad():
        pooling.queries.zero_()  # every query attends uniformly
    tokens = torch.randn(7, 10, dim)
    attentive = classifier(pooling(tokens))
    # the same map as one linear layer on the mean token: W_classifier @ V
    linear = nn.Linear(dim, classes)
    with torch.no_grad():
        linear.weight.copy_(classifier.weight @ pooling.values.weight)
        linear.bias.copy_(classifier.bias)
    assert torch.allclose(attentive, linear(tokens.mean(1)), atol=1e-6)
    assert torch.allclose(pooling.attention(tokens), torch.full((7, queries, 10), 0.1))


def test_efficient_pooling_shapes_and_parameters():
    pooling = EfficientPooling(64, 16)
    assert pooling(torch.randn(2, 49, 64)).shape == (2, 64)  # 16 queries x 4-wide slices
    assert sum(p.numel() for p in pooling.parameters()) == 16 * 64 + 64 * 64
    assert EfficientPooling(16, 32).out_dim == 32  # more queries than channels: one value each
    head = nn.Sequential(EfficientPooling(24, 5), nn.Linear(EfficientPooling(24, 5).out_dim, 7))
    assert head_parameters(24, 5, 7) == sum(p.numel() for p in head.parameters())


def test_attentive_reads_where_the_signal_is_and_reports_its_size():
    train, test = located_class_images(400, 0), located_class_images(200, 1)
    probe = AttentiveProbe(lr=0.1, weight_decay=1e-4, queries=4, steps=300)
    result = probe(context(PatchGrid(), train, test))
    assert result["attentive_acc"] > 0.95
    # the mean over the grid is the same for every class here: pooled features cannot tell them apart
    assert LinearProbe(weight_decay=1e-3)(context(PatchGrid(), train, test))["linear_acc"] < 0.5
    assert result["attentive_params"] == 4 * 3 + 3 * 4 * 1 + (4 + 1) * 4  # queries, values, classifier
    assert {c.key for c in probe.metric_columns()} <= set(result)


@pytest.mark.parametrize("encoder", ["vit", "mae", "swin", "cnn", "resnet", "timm", "pixels"])
def test_attentive_runs_on_every_kind_of_grid(registry, encoder):
    torch.manual_seed(0)
    train, test = located_class_images(64, 0), located_class_images(32, 1)
    if encoder == "timm":
        pytest.importorskip("timm", reason="the timm extra is not installed")
    if encoder == "pixels":
        model = RawPixels(1, 16)
    else:
        params = {"vit": {"dim": 32, "depth": 2, "heads": 2, "patch_size": 4},
                  "mae": {"dim": 32, "depth": 1, "heads": 2, "patch_size": 4},
                  "timm": {"patch_size": 4, "model_args": {"depth": 1}}}.get(encoder, {})
        model = registry.build("encoder", encoder, params, in_channels=1, image_size=16)
    probe = AttentiveProbe(layer="all" if encoder == "vit" else "last", lr=0.01, weight_decay=0.0, queries=2, steps=5)
    result = probe(context(model, train, test))
    assert 0 <= result["attentive_acc"] <= 1 and result["attentive_hp_queries"] == 2
    if encoder == "vit":
        assert {"attentive_acc@0", "attentive_acc@1", "attentive_best_block", "attentive_acc_best"} <= set(result)


def test_tokens_are_float16_extracted_once_and_shared_with_the_dense_probes():
    calls = []

    class Counting(PatchGrid):
        def forward(self, images, mask=None):
            calls.append(len(images))
            return super().forward(images)

    probe_context = context(Counting(), located_class_images(128, 0), located_class_images(64, 1))
    tokens = probe_context.token_features()
    assert tokens.train.dtype == torch.float16 and tokens.train.shape == (128, 16, 3)
    AttentiveProbe(lr=0.01, weight_decay=0.0, queries=2, steps=3)(probe_context)
    assert probe_context.grids("test") is probe_context.grids("test")
    assert sum(calls) == 128 + 64  # one pass over each split


@pytest.mark.parametrize("probe", [
    LinearProbe(layer="all"),
    KNNProbe(layer="all"),
    AttentiveProbe(lr=[0.01, 0.1], weight_decay=[0.0, 0.01], queries=[1, 4], steps=100),
], ids=["linear", "knn", "attentive"])
def test_shuffling_the_test_labels_changes_no_chosen_value(probe):
    train, test = located_class_images(200, 0), located_class_images(200, 1)
    honest = probe(context(PatchGrid(), train, test, seed=3))
    shuffled = probe(context(PatchGrid(), train, shuffled_labels(test), seed=3))
    chosen = {k: v for k, v in honest.items() if "_hp_" in k or k.endswith("_best_block")}
    assert chosen and chosen == {k: v for k, v in shuffled.items() if k in chosen}
    accuracy = next(k for k in honest if k.endswith("_acc"))
    if isinstance(probe, AttentiveProbe):
        assert honest[accuracy] > 0.9 and shuffled[accuracy] < 0.45  # chance is 0.25


def test_finetune_chooses_its_lr_on_train_data_only(registry):
    torch.manual_seed(0)
    encoder = registry.build("encoder", "vit", {"depth": 1, "dim": 16, "heads": 2, "patch_size": 4},
                             in_channels=1, image_size=16)
    train, test = located_class_images(64, 0), located_class_images(32, 1)
    probe = FineTuneProbe(epochs=1, lr=[1e-4, 3e-3], batch_size=16, warmup_epochs=0.0)
    torch.manual_seed(0)
    honest = probe(context(encoder, train, test))
    torch.manual_seed(0)
    shuffled = probe(context(encoder, train, shuffled_labels(test)))
    assert honest["finetune_hp_lr"] == shuffled["finetune_hp_lr"] in (1e-4, 3e-3)


def test_choose_takes_the_best_combination_and_the_first_of_ties():
    scores = {(1, "a"): 0.5, (1, "b"): 0.9, (2, "a"): 0.9, (2, "b"): 0.1}
    chosen = choose({"x": [1, 2], "y": ["a", "b"]}, lambda hp: scores[hp["x"], hp["y"]])
    assert chosen == {"x": 1, "y": "b"}
    assert choose({"x": [7]}, lambda hp: 1 / 0) == {"x": 7}  # one candidate: nothing to score


def test_the_held_out_share_is_drawn_from_train_with_the_seed():
    fit, held = held_out_split(100, seed=5)
    assert len(held) == 20 and len(fit) == 80 and not set(fit.tolist()) & set(held.tolist())
    assert torch.equal(held, held_out_split(100, seed=5)[1]) and not torch.equal(held, held_out_split(100, 6)[1])
    assert len(held_out_split(2, 0)[0]) == 1  # both parts keep an item
    assert as_grid("k", 3) == [3] and as_grid("k", (1, 2)) == [1, 2]


@pytest.mark.parametrize("name, params, message", [
    ("linear", {"weight_decay": []}, "empty grid"),
    ("knn", {"k": [5, 0]}, "param .k. item 1 must be >= 1"),
    ("attentive", {"queries": [0]}, "queries"),
    ("attentive", {"lr": "fast"}, "lr"),
    ("finetune", {"lr": [-1.0]}, "lr > 0"),
])
def test_bad_grids_are_config_errors(registry, name, params, message):
    with pytest.raises(ConfigError, match=message):
        registry.build("probe", name, params)
