"""Every registered component passes mimbench.testing's conformance checks."""

import importlib.util

import pytest
import torch
from torch import nn

from mimbench import contract
from mimbench.errors import ContractError

from mimbench import testing
from mimbench.plugins import load_plugins
from mimbench.registry import Registry

REGISTRY = Registry(load_plugins(use_env=False))
#: Components whose library is an optional extra: (kind, name) -> (module, extra).
EXTRAS = {("encoder", "timm"): ("timm", "timm")}
CHECKS = {
    "masker": testing.check_masker,
    "encoder": testing.check_encoder,
    "decoder": testing.check_decoder,
    "loss": testing.check_loss,
}


@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize(
    "component",
    [c for c in REGISTRY.all() if c.kind in CHECKS],
    ids=lambda c: f"{c.kind}-{c.name}",
)
def test_component_conforms(component, image_size):
    module, extra = EXTRAS.get((component.kind, component.name), (None, None))
    if module is not None and importlib.util.find_spec(module) is None:
        pytest.skip(f"the {extra} extra is not installed (pip install -e '.[{extra}]')")
    if component.kind == "masker":
        testing.check_masker(component.factory, {}, image_size=image_size,
                             random=not getattr(component.factory, "deterministic", False))
    elif component.kind == "loss":
        testing.check_loss(component.factory, {}, image_size=image_size)
    else:
        CHECKS[component.kind](component.factory, {}, image_size=image_size)


def test_every_kind_has_builtins():
    for kind in (*CHECKS, "dataset"):
        assert REGISTRY.names(kind), f"no built-in {kind}"


@pytest.mark.parametrize("params", [{"masked_only": False}, {"masked_only": True}])
@pytest.mark.parametrize("name", ["l1", "mse"])
def test_losses_conform_both_ways(name, params):
    testing.check_loss(REGISTRY.get("loss", name).factory, params)


def test_check_masker_rejects_a_float_mask():
    class FloatMasker:
        def __call__(self, images, generator=None):
            return torch.rand(images.shape[0], *images.shape[2:], generator=generator)

    with pytest.raises(ContractError, match="expected torch.bool"):
        testing.check_masker(FloatMasker, {})


def test_check_masker_rejects_a_wrong_ratio():
    class HalfMasker:
        def __init__(self, ratio: float = 0.9):
            self.ratio = ratio

        def __call__(self, images, generator=None):
            b, _, h, w = images.shape
            return torch.rand(b, h, w, generator=generator) < 0.5

    with pytest.raises(AssertionError, match="ratio is 0.9"):
        testing.check_masker(HalfMasker, {})


class TinyEncoder(nn.Module):
    out_dim, stride = 4, 4

    def __init__(self, in_channels: int, image_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 4, stride=4)

    def forward(self, images, mask=None):
        return self.conv(images)


def test_check_encoder_catches_hidden_pixels_reaching_the_encoder(monkeypatch):
    testing.check_encoder(TinyEncoder, {})
    monkeypatch.setattr(contract, "hide", lambda images, mask: images)  # a core that forgot to hide
    with pytest.raises(AssertionError, match="depend on hidden pixels"):
        testing.check_encoder(TinyEncoder, {})


def test_check_encoder_catches_ignored_input_and_missing_gradients():
    class IgnoresInput(TinyEncoder):
        def forward(self, images, mask=None):
            return self.conv(torch.zeros_like(images))

    with pytest.raises(AssertionError, match="ignore visible pixels"):
        testing.check_encoder(IgnoresInput, {})

    class UnusedParameter(TinyEncoder):
        def __init__(self, in_channels: int, image_size: int):
            super().__init__(in_channels, image_size)
            self.unused = nn.Linear(2, 2)

    with pytest.raises(AssertionError, match="unused.weight"):
        testing.check_encoder(UnusedParameter, {})


def test_check_loss_catches_a_loss_that_sees_visible_pixels():
    class LeakyL1:
        def __init__(self, masked_only: bool = True):
            pass

        def __call__(self, pred, target, mask):
            return (pred - target).abs().mean()

    with pytest.raises(AssertionError, match="sees visible pixels"):
        testing.check_loss(LeakyL1, {})


#: The datasets available offline, with what they need here.
OFFLINE_DATASETS = {"shapes": {}, "fashion-mnist-mini": {}, "fashion-mosaic": {"max_items": 2}}


@pytest.mark.parametrize("name", sorted(OFFLINE_DATASETS))
def test_offline_datasets_conform(name):
    testing.check_dataset(REGISTRY.get("dataset", name).factory, OFFLINE_DATASETS[name], image_size=16)


@pytest.mark.parametrize("name", REGISTRY.names("probe"))
def test_probes_conform(name):
    testing.check_probe(REGISTRY.get("probe", name).factory)


@pytest.mark.parametrize("name", REGISTRY.names("executor"))
def test_executors_conform(name, tmp_path):
    testing.check_executor(REGISTRY.get("executor", name).factory, suite_dir=str(tmp_path))


def test_the_new_checks_catch_what_they_promise():
    class Meddling:  # a probe that trains the encoder itself
        def __call__(self, context):
            with torch.no_grad():
                next(context.encoder.parameters()).add_(1.0)
            return {"meddling_acc": 0.5}

    with pytest.raises(AssertionError, match="the probe changed the encoder"):
        testing.check_probe(Meddling)

    class Scored:
        def __call__(self, context):
            return {"scored_acc": 87.0}

        def metric_columns(self):
            from mimbench.columns import accuracy_columns
            return accuracy_columns("scored_acc", "scored")

    with pytest.raises(AssertionError, match=r"declared an accuracy: a fraction in \[0, 1\]"):
        testing.check_probe(Scored)

    class Labelled(torch.utils.data.Dataset):
        num_classes = 2

        def __init__(self, split):
            self.split = split

        def __len__(self):
            return 4

        def __getitem__(self, index):
            return torch.rand(1, 8, 8), index  # labels 0..3 of 2 classes

    with pytest.raises(AssertionError, match=r"train\[2\]: the label must be an int in \[0, 2\), got 2"):
        testing.check_dataset(Labelled)

    class Undecided:
        in_process, threads = "yes", None

        def run(self, tasks):
            return iter(())

        def in_flight(self):
            return 0

        def cancel(self):
            pass

    with pytest.raises(AssertionError, match="in_process must be True or False"):
        testing.check_executor(Undecided)
