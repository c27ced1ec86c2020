"""Probes: the linear probe, weighted k-NN, fine-tuning and layer-wise features, pinned by numbers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mimbench.data import DeviceImages, Normalizer
from mimbench.errors import ConfigError
from mimbench.plugins import load_plugins
from mimbench.probing import ProbeContext, RawPixels, layerwise
from mimbench.registry import Registry
from mimbench_plugins.probes import (FineTuneProbe, KNNProbe, LinearProbe, fit_logistic, knn_predict,
                                     layer_decayed_groups, standardize)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(load_plugins())


def gaussian_classes(n: int, dim: int, classes: int, separation: float, noise_seed: int):
    """Features [n, dim]: fixed class means ``separation`` apart, plus unit noise drawn from ``noise_seed``."""
    means = torch.randn(classes, dim, generator=torch.Generator().manual_seed(0)) * separation
    labels = torch.randperm(n, generator=torch.Generator().manual_seed(noise_seed)) % classes
    return means[labels] + torch.randn(n, dim, generator=torch.Generator().manual_seed(noise_seed + 1)), labels


def test_linear_probe_separates_linearly_encoded_labels():
    train_x, train_y = gaussian_classes(2000, 32, 10, separation=3.0, noise_seed=10)
    test_x, test_y = gaussian_classes(1000, 32, 10, separation=3.0, noise_seed=20)
    accuracy, extras, predicted = LinearProbe().score(train_x, train_y, test_x, test_y, num_classes=10)
    assert accuracy > 0.99
    assert accuracy == (predicted == test_y).float().mean().item()  # the predictions behind the accuracy
    assert 1 <= extras["linear_steps"] < 1000  # converged before the cap


def test_linear_probe_is_at_chance_on_random_features():
    g = torch.Generator().manual_seed(1)
    train_x, test_x = torch.randn(2000, 64, generator=g), torch.randn(2000, 64, generator=g)
    train_y, test_y = torch.randint(0, 10, (2000,), generator=g), torch.randint(0, 10, (2000,), generator=g)
    accuracy, _, _ = LinearProbe().score(train_x, train_y, test_x, test_y, num_classes=10)
    assert 0.06 < accuracy < 0.14  # chance is 0.10; 2000 samples give a std of ~0.007


def test_standardize_matches_batchnorm_without_affine():
    x = torch.randn(500, 16) * 3 + 5
    bn = nn.BatchNorm1d(16, affine=False, momentum=None, eps=1e-6).train()
    expected = bn(x)
    assert torch.allclose(standardize(x)[0], expected, atol=1e-4)
    bn.eval()  # at eval time BN uses the (unbiased) running variance of the one batch it saw
    other = torch.randn(10, 16)
    assert torch.allclose(standardize(x, other)[1], bn(other), rtol=2e-3, atol=2e-3)


def test_fit_logistic_equals_the_closed_problem_optimum():
    """The L-BFGS solution is a stationary point of mean CE + wd/2 ||W||^2."""
    x, y = gaussian_classes(300, 5, 3, separation=1.0, noise_seed=2)
    head, steps = fit_logistic(x, y, 3, weight_decay=1e-2, max_steps=1000)
    weight, bias = head.weight.clone().requires_grad_(), head.bias.clone().requires_grad_()
    loss = F.cross_entropy(x @ weight.T + bias, y) + 0.5 * 1e-2 * weight.pow(2).sum()
    loss.backward()
    assert weight.grad.abs().max() < 1e-4 and bias.grad.abs().max() < 1e-4
    assert steps < 1000


def brute_force_knn(train_x, train_y, test_x, classes, k, temperature):
    predictions = []
    for query in test_x:
        sims = [float(F.cosine_similarity(query, row, dim=0)) for row in train_x]
        nearest = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        votes = [0.0] * classes
        for i in nearest:
            votes[int(train_y[i])] += float(torch.exp(torch.tensor(sims[i] / temperature)))
        predictions.append(max(range(classes), key=lambda c: votes[c]))
    return torch.tensor(predictions)


@pytest.mark.parametrize("k, temperature", [(1, 0.07), (5, 0.07), (20, 0.5)])
def test_knn_equals_brute_force(k, temperature):
    g = torch.Generator().manual_seed(3)
    train_x, test_x = torch.randn(60, 8, generator=g), torch.randn(25, 8, generator=g)
    train_y = torch.randint(0, 4, (60,), generator=g)
    expected = brute_force_knn(train_x, train_y, test_x, 4, k, temperature)
    assert torch.equal(knn_predict(train_x, train_y, test_x, 4, k, temperature, chunk=7), expected)


def test_knn_weights_votes_by_similarity():
    """One very close neighbour of class 1 outvotes two distant ones of class 0 at a low temperature."""
    train_x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    train_y = torch.tensor([1, 0, 0])
    query = torch.tensor([[1.0, 0.05]])
    assert knn_predict(train_x, train_y, query, 2, k=3, temperature=0.07).item() == 1
    assert knn_predict(train_x, train_y, query, 2, k=3, temperature=100.0).item() == 0  # ~ plain majority


class TwoBlockEncoder(nn.Module):
    """Block 0 carries the label (channel 0 of the image), block 1 is noise: for layer tests."""

    out_dim, stride = 2, 4

    def __init__(self):
        super().__init__()
        self.calls = 0

    def blocks(self, images):
        self.calls += 1
        signal = images[:, :1].repeat(1, 2, 1, 1)[:, :, ::4, ::4]
        noise = torch.sin(images[:, :1] * 1000.0).repeat(1, 2, 1, 1)[:, :, ::4, ::4] * torch.tensor([1.0, -1.0]).view(1, 2, 1, 1)
        return [signal, noise]

    def forward(self, images, mask=None):
        return self.blocks(images)[-1]


def labelled_images(n: int, seed: int) -> DeviceImages:
    """Images whose brightness encodes one of 4 labels (plus noise)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    pixels = (labels.float().view(-1, 1, 1, 1) * 60 + torch.randint(0, 20, (n, 1, 8, 8), generator=g)).to(torch.uint8)
    return DeviceImages(pixels, labels, 4)


def context_for(encoder: nn.Module, seed: int = 0) -> ProbeContext:
    train, test = labelled_images(200, 0), labelled_images(100, 1)
    return ProbeContext(encoder, train, test, Normalizer.measure(train), CPU, seed, batch_size=64)


def test_layer_all_reports_every_block_and_picks_the_best_on_validation():
    encoder = TwoBlockEncoder()
    result = LinearProbe(layer="all")(context_for(encoder))
    assert set(result) >= {"linear_acc", "linear_acc@0", "linear_acc@1", "linear_best_block", "linear_acc_best"}
    assert result["linear_acc@0"] > 0.95 and result["linear_acc@1"] < 0.6
    assert result["linear_best_block"] == 0 and result["linear_acc_best"] == result["linear_acc@0"]
    assert result["linear_acc"] == result["linear_acc@1"]  # "last" is the encoder output = last block here


@pytest.mark.parametrize("layer", ["last", 0, "all"])
def test_probes_declare_the_columns_they_return(layer):
    context = context_for(TwoBlockEncoder())
    for probe, name in ((LinearProbe(layer=layer), "linear"), (KNNProbe(layer=layer), "kNN")):
        declared = probe.metric_columns()
        accuracies = [c for c in declared if c.kind == "accuracy"]
        assert accuracies[0].name == name and all("_hp_" in c.key for c in declared if c.kind != "accuracy")
        assert {c.key for c in declared} <= set(probe(context))  # every declared column is returned
        assert [c.key.endswith("_best") for c in accuracies] == ([False, True] if layer == "all" else [False])
    assert KNNProbe().metric_columns()[0].latex == "$k$-NN"
    assert [(c.key, c.name) for c in FineTuneProbe().metric_columns()] == [("finetune_acc", "fine-tune"),
                                                                           ("finetune_hp_lr", "fine-tune lr")]


def test_features_are_extracted_once_per_run_and_shared_by_probes():
    encoder = TwoBlockEncoder()
    context = context_for(encoder)
    KNNProbe(layer="all")(context)
    LinearProbe(layer=0)(context)
    LinearProbe(layer="all")(context)
    # one pass over train + test for all blocks (4 + 2 batches of 64), none after that: the output
    # equals the last block, which one batch checks (a forward and a blocks call)
    batches = 4 + 2
    assert encoder.calls == batches + 2


def test_block_index_and_pooling():
    encoder = TwoBlockEncoder()
    context = context_for(encoder)
    result = LinearProbe(layer=0)(context)
    assert set(result) == {"linear_acc", "linear_acc@0", "linear_steps", "linear_hp_weight_decay"}
    images = context.normalize(context.train.images)
    assert torch.allclose(context.features(0).train, encoder.blocks(images)[0].mean(dim=(2, 3)))
    with pytest.raises(ValueError, match="2 blocks"):
        context.features(2)


def test_raw_pixels_features_are_the_normalised_images():
    context = context_for(RawPixels(1, 8))
    assert context.features("last").train.shape == (200, 64)
    assert torch.equal(context.features("last").test, context.normalize(context.test.images).flatten(1))
    assert len(context.block_features()) == 1  # no blocks: the output counts as the only one


@pytest.mark.parametrize("name, params", [("linear", {"layer": "first"}), ("knn", {"k": 0}),
                                          ("finetune", {"layer_decay": 1.5})])
def test_bad_probe_params_are_config_errors(registry, name, params):
    with pytest.raises(ConfigError, match=name):
        registry.build("probe", name, params)


def test_layerwise_validation_never_looks_at_the_test_split():
    seen = []

    def score(train_x, train_y, eval_x, eval_y, classes):
        seen.append(eval_x.shape[0])
        return 0.5, {}

    layerwise(context_for(TwoBlockEncoder()), "all", "x", score)
    assert seen.count(100) == 3  # test split: each block + the output
    assert seen.count(20) == 2  # validation: 10% of the 200 train images, once per block


def test_finetune_learns_and_uses_layer_decay(registry):
    torch.manual_seed(0)
    encoder = registry.build("encoder", "vit", {"depth": 2, "dim": 32, "heads": 2, "patch_size": 4},
                             in_channels=1, image_size=8)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    result = FineTuneProbe(epochs=3, lr=3e-3, batch_size=32, warmup_epochs=0.5)(context_for(encoder))
    assert result["finetune_acc"] > 0.9  # brightness classes are easy once the encoder trains
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # a copy was trained

    head = nn.Linear(32, 4)
    groups = layer_decayed_groups(encoder, head, lr=1.0, layer_decay=0.5, weight_decay=0.05)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr_of[id(encoder.patch_embed.weight)] == 0.5 ** 3  # depth 0 of 2 blocks
    assert lr_of[id(encoder.transformer.layers[1].qkv.weight)] == 0.5 ** 1
    assert lr_of[id(head.weight)] == 1.0
    assert FineTuneProbe()(context_for(RawPixels(1, 8))) == {}  # nothing to fine-tune


def test_the_output_is_extracted_on_its_own_when_it_differs_from_the_last_block():
    class NormedOutput(TwoBlockEncoder):
        def forward(self, images, mask=None):
            return self.blocks(images)[-1] * 2.0

    encoder = NormedOutput()
    context = context_for(encoder)
    context.block_features()
    assert torch.allclose(context.features("last").test, 2 * context.features(1).test)


def test_a_block_index_on_an_encoder_without_blocks_reads_its_output():
    """The pixels baseline has no blocks: any index means its output, so layer: 1 suites still run."""
    context = context_for(RawPixels(1, 8))
    result = LinearProbe(layer=1)(context)
    assert result["linear_acc"] == LinearProbe()(context_for(RawPixels(1, 8)))["linear_acc"]
    with pytest.raises(ValueError, match="int >= 0"):
        LinearProbe(layer=-1)


def test_every_run_and_baseline_keeps_the_predictions_behind_its_accuracies(tmp_path):
    """predictions.npz: the test labels and, per accuracy column, one small integer per test image,
    from which the column's accuracy recomputes exactly."""
    import json

    import numpy as np

    from helpers import run_cli, write_suite_file

    suite = write_suite_file(tmp_path, """
    name: kept
    dataset: {name: shapes, params: {num_images: 96}}
    image_size: 16
    seeds: [0]
    train: {epochs: 1, batch_size: 32, warmup_epochs: 0.2}
    eval:
      probes: [{name: linear, params: {layer: all}}, knn, {name: finetune, params: {epochs: 1, min_steps: 2}}]
      baselines: [random-init, pixels]
    grid: {encoder: {name: vit, params: {dim: 32, depth: 2, heads: 2, patch_size: 4}}, decoder: linear,
           masker: patch, loss: l1}
    """)
    result = run_cli("run", str(suite), "--out", str(tmp_path / "out"), "--set", "execution.threads=1")
    assert result.exit_code == 0, result.output
    runs = sorted((tmp_path / "out" / "kept" / "runs").iterdir())
    assert len(runs) == 3
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        with np.load(run / "predictions.npz", allow_pickle=False) as kept:
            assert kept["labels"].dtype == np.uint8 and kept["labels"].shape == (len(kept["labels"]),)
            columns = set(kept.files) - {"labels"}
            expected = {"linear_acc", "linear_acc_best", "knn_acc"} | ({"finetune_acc"} if "finetune_acc" in metrics
                                                                        else set())
            assert columns == expected, (run.name, columns)
            for column in columns:
                assert kept[column].dtype == np.uint8
                assert (kept[column] == kept["labels"]).mean() == pytest.approx(metrics[column], abs=1e-12), column
