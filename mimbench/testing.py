"""Conformance checks a plugin author can run on a component in their own tests.

Each check takes the factory and the params a suite would give it, builds the
component, and raises ``AssertionError`` with a clear message on the first
contract it breaks. For example::

    from mimbench.testing import check_masker
    from my_plugin import StripesMasker

    def test_stripes_conforms():
        check_masker(StripesMasker, {"ratio": 0.5})

mimbench's own test suite runs these checks on every registered component.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch

from mimbench.columns import declared_by
from mimbench.contract import (check_features, check_mask, check_probe_output, check_reconstruction,
                               check_target_output, encode_visible)
from mimbench.data import DeviceImages, Normalizer
from mimbench.errors import ContractError
from mimbench.probing import ProbeContext
from mimbench.protocols import capability, malformed, missing

Factory = Callable[..., Any]


def _require(condition: bool, message: str) -> None:
    if not condition:  # not `assert`: these checks must hold under python -O too
        raise AssertionError(message)


def _generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _declared_default(factory: Factory, name: str) -> Any:
    parameter = inspect.signature(factory).parameters.get(name)
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def check_masker(factory: Factory, params: dict[str, Any] | None = None, image_size: int = 32,
                 channels: int = 3, batch: int = 64, tolerance: float = 0.05, random: bool = True,
                 device: str | torch.device = "cpu") -> None:
    """A masker returns bool [B, H, W] on the images' device, is reproducible for a seeded
    generator, changes with the seed (unless ``random`` is False), also works with no
    generator, and hides a fraction of the pixels within ``tolerance`` of its ``ratio``
    (when it has one)."""
    params = params or {}
    masker = factory(**params)
    images = torch.randn(batch, channels, image_size, image_size, device=device)
    mask = check_mask(masker(images, _generator(0, device)), images)
    _require(torch.equal(mask, masker(images, _generator(0, device))), "same generator seed gave a different mask")
    if random:
        _require(not torch.equal(mask, masker(images, _generator(1, device))), "a different seed gave the same mask")
    check_mask(masker(images), images)
    _require(mask.any(), "the mask hides nothing")
    _require(not mask.all(), "the mask hides everything")
    ratio = params.get("ratio", _declared_default(factory, "ratio"))
    if ratio is not None:
        hidden = mask.float().mean().item()
        _require(abs(hidden - ratio) <= tolerance, f"hides {hidden:.3f} of the pixels, ratio is {ratio}")


def _grid_mask(batch: int, image_size: int, cell: int, seed: int) -> torch.Tensor:
    """A random mask of whole cell x cell squares, exactly half of them (rounded down) hidden
    in every image, so that encoders that drop hidden tokens (MAE) can take it: bool [B, S, S]."""
    cells = image_size // cell
    ranks = torch.rand(batch, cells * cells, generator=_generator(seed)).argsort(1).argsort(1)
    coarse = (ranks < (cells * cells) // 2).view(batch, cells, cells)
    return coarse.repeat_interleave(cell, 1).repeat_interleave(cell, 2)


def check_encoder(factory: Factory, params: dict[str, Any] | None = None, in_channels: int = 3,
                  image_size: int = 32, batch: int = 4) -> None:
    """An encoder has int ``out_dim`` and ``stride``, returns [B, out_dim, S/stride, S/stride]
    with and without a mask, ignores what the hidden pixels were (through the core's
    ``encode_visible``), responds to visible pixels, and passes gradients to every parameter."""
    torch.manual_seed(0)
    encoder = factory(in_channels=in_channels, image_size=image_size, **(params or {})).eval()
    images = torch.randn(batch, in_channels, image_size, image_size)
    stride = getattr(encoder, "stride", None)
    _require(isinstance(stride, int) and stride >= 1 and image_size % stride == 0, f"bad stride {stride!r}")
    mask = _grid_mask(batch, image_size, stride, seed=0)

    with torch.no_grad():
        plain = check_features(encoder(images), encoder, images)
        _require(torch.isfinite(plain).all(), "non-finite features")
        seen = check_features(encode_visible(encoder, images, mask), encoder, images)
        other = torch.where(mask.unsqueeze(1), torch.randn_like(images) * 3, images)  # hidden pixels changed
        _require(torch.allclose(seen, encode_visible(encoder, other, mask), atol=1e-5),
                 "features depend on hidden pixels")
        moved = torch.where(mask.unsqueeze(1), images, images + 1.0)  # visible pixels changed
        _require(not torch.allclose(seen, encode_visible(encoder, moved, mask)), "features ignore visible pixels")
        visible_all = torch.zeros_like(mask)
        _require(torch.allclose(plain, encoder(images, visible_all), atol=1e-5),
                 "an all-visible mask gives other features than mask=None")

    encoder.train()
    (encoder(images).square().mean() + encode_visible(encoder, images, mask).square().mean()).backward()
    _assert_all_grads(encoder, "encoder")


def check_decoder(factory: Factory, params: dict[str, Any] | None = None, in_dim: int = 16, stride: int = 4,
                  out_channels: int = 3, image_size: int = 32, batch: int = 4) -> None:
    """A decoder maps [B, in_dim, S/stride, S/stride] to float [B, out_channels, S, S],
    with and without a mask, and passes gradients to every parameter."""
    torch.manual_seed(0)
    decoder = factory(in_dim=in_dim, stride=stride, out_channels=out_channels, image_size=image_size,
                      **(params or {}))
    features = torch.randn(batch, in_dim, image_size // stride, image_size // stride)
    target = torch.zeros(batch, out_channels, image_size, image_size)
    mask = _grid_mask(batch, image_size, stride, seed=0)
    pred = check_reconstruction(decoder(features, mask), target)
    check_reconstruction(decoder(features), target)
    _require(torch.isfinite(pred).all(), "non-finite prediction")
    pred.square().mean().backward()
    _assert_all_grads(decoder, "decoder")


def check_loss(factory: Factory, params: dict[str, Any] | None = None, channels: int = 3,
               image_size: int = 16, batch: int = 4) -> None:
    """A loss returns a finite scalar that has a gradient with respect to the prediction, and is
    lower for a better prediction. With ``masked_only`` true it ignores visible pixels."""
    params = params or {}
    loss = factory(**params)
    target = torch.randn(batch, channels, image_size, image_size)
    mask = _grid_mask(batch, image_size, 4, seed=0)
    pred = (target + torch.randn_like(target)).requires_grad_(True)
    value = loss(pred, target, mask)
    _require(isinstance(value, torch.Tensor) and value.ndim == 0, f"loss must be a 0-dim tensor, got {value!r}")
    _require(torch.isfinite(value), "non-finite loss")
    value.backward()
    _require(pred.grad is not None and pred.grad.abs().sum() > 0, "no gradient reaches the prediction")
    closer = target + 0.1 * (pred.detach() - target)
    _require(loss(closer, target, mask) < value.detach(), "a closer prediction does not lower the loss")
    if params.get("masked_only", _declared_default(factory, "masked_only")):
        changed = torch.where(mask.unsqueeze(1), pred.detach(), pred.detach() + 5.0)
        _require(torch.allclose(loss(changed, target, mask), value.detach()), "masked_only loss sees visible pixels")


def _assert_all_grads(module: torch.nn.Module, what: str) -> None:
    missing = [n for n, p in module.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    _require(not missing, f"no gradient reaches {what} parameters: {', '.join(missing)}")


class _TinyEncoder(torch.nn.Module):
    """A two-block encoder (stride 4, out_dim 8) for targets built from the run's encoder."""

    out_dim, stride = 8, 4

    def __init__(self, in_channels: int):
        super().__init__()
        self.embed = torch.nn.Conv2d(in_channels, 8, kernel_size=4, stride=4)
        self.block = torch.nn.Conv2d(8, 8, kernel_size=3, padding=1)

    def blocks(self, images: torch.Tensor) -> list[torch.Tensor]:
        first = self.embed(images)
        return [first, first + self.block(first).relu()]

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.blocks(images)[-1]


def check_target(factory: Factory, params: dict[str, Any] | None = None, in_channels: int = 3,
                 image_size: int = 32, batch: int = 4, encoder: torch.nn.Module | None = None) -> None:
    """A target has int ``channels`` and ``stride`` (dividing the image), maps images [B, C, S, S]
    to a finite float [B, channels, S/stride, S/stride] the same way twice, without changing them,
    and differently for other images; its parameters (if any) take no gradient; ``to_image`` (if
    any) maps the target itself back to the images; ``update`` (if any) runs, and the state it
    changes survives ``state_dict`` into a freshly built target. A factory that declares
    ``encoder`` gets ``encoder`` (default: a small two-block encoder, stride 4)."""
    torch.manual_seed(0)
    kwargs = dict(in_channels=in_channels, image_size=image_size, **(params or {}))
    if "encoder" in inspect.signature(factory).parameters:
        kwargs["encoder"] = encoder if encoder is not None else _TinyEncoder(in_channels)
    target = factory(**kwargs)
    channels, stride = getattr(target, "channels", None), getattr(target, "stride", None)
    _require(isinstance(channels, int) and channels >= 1, f"channels must be an int >= 1, got {channels!r}")
    _require(isinstance(stride, int) and stride >= 1 and image_size % stride == 0,
             f"stride must be an int >= 1 dividing the image size {image_size}, got {stride!r}")
    images = torch.randn(batch, in_channels, image_size, image_size)
    before = images.clone()
    with torch.no_grad():
        out = check_target_output(target(images), images, channels, stride)
        _require(torch.equal(images, before), "the target changed its input images")
        _require(torch.isfinite(out).all(), "non-finite target")
        _require(torch.equal(out, target(images)), "the same images gave another target")
        _require(not torch.allclose(out, target(torch.randn_like(images))), "other images gave the same target")
        to_image = capability("target", target, "to_image")
        if to_image is not None:
            back = to_image(out, images)
            _require(tuple(back.shape) == tuple(images.shape), f"to_image gave {list(back.shape)}, expected "
                     f"{list(images.shape)}")
            _require(torch.allclose(back, images, atol=1e-4), "to_image(target(images), images) is not the images")
    if isinstance(target, torch.nn.Module):
        trained = [n for n, p in target.named_parameters() if p.requires_grad]
        _require(not trained, f"the core does not train a target's parameters; requires_grad_(False) on: {trained}")
        if capability("target", target, "update") is not None:
            student = kwargs["encoder"] if "encoder" in kwargs else _TinyEncoder(in_channels)
            with torch.no_grad():
                for p in student.parameters():
                    p.add_(torch.randn_like(p))
            target.update(student, 1, 10)
            again = factory(**kwargs)
            again.load_state_dict(target.state_dict())
            with torch.no_grad():
                _require(torch.equal(again(images), target(images)), "a target rebuilt from state_dict() differs")


def _conforms(kind: str, component: Any) -> None:
    """What every component of ``kind`` is checked for when it is built: the contract's required parts,
    and optional capabilities of the right kind."""
    lacks = missing(kind, component)
    _require(not lacks, f"the {kind} lacks {', '.join(lacks)} (mimbench.plugin.{kind.capitalize()})")
    wrong = malformed(kind, component)
    _require(not wrong, "; ".join(wrong))


def check_dataset(factory: Factory, params: dict[str, Any] | None = None, image_size: int | None = None,
                  sample: int = 16) -> None:
    """Both splits (``split="train"`` and ``"test"``; ``image_size`` passed when the factory declares
    it) are non-empty datasets of ``(image, label)`` pairs: a float image [C, H, W] in [0, 1] with one C
    for every item, an int label in [0, num_classes), ``num_classes`` an int >= 1; ``masks``, when
    declared, uint8 [N, H, W] for the split's N images with an int ``mask_classes`` >= 1.
    ``sample`` items of each split are read, spread over it."""
    accepted = inspect.signature(factory).parameters
    extra = {"image_size": image_size} if image_size is not None and "image_size" in accepted else {}
    for split in ("train", "test"):
        dataset = factory(split=split, **extra, **(params or {}))
        _conforms("dataset", dataset)
        count, classes = len(dataset), getattr(dataset, "num_classes", None)
        _require(count > 0, f"the {split} split is empty")
        _require(isinstance(classes, int) and not isinstance(classes, bool) and classes >= 1,
                 f"num_classes must be an int >= 1, got {classes!r}")
        channels, read = set(), min(sample, count)
        for index in sorted({round(i * (count - 1) / max(1, read - 1)) for i in range(read)}):
            image, label = dataset[index]
            _require(isinstance(image, torch.Tensor) and image.dim() == 3 and image.is_floating_point(),
                     f"{split}[{index}]: the image must be a float tensor [C, H, W], got {_described(image)}")
            _require(float(image.min()) >= 0.0 and float(image.max()) <= 1.0, f"{split}[{index}]: pixels outside [0, 1]")
            channels.add(image.shape[0])
            label = int(label) if isinstance(label, torch.Tensor) and label.dim() == 0 else label
            _require(isinstance(label, int) and 0 <= label < classes,
                     f"{split}[{index}]: the label must be an int in [0, {classes}), got {label!r}")
        _require(len(channels) == 1, f"the {split} split mixes images of {sorted(channels)} channels")
        masks = capability("dataset", dataset, "masks")
        if masks is not None:
            _require(isinstance(masks, torch.Tensor) and masks.dtype == torch.uint8 and masks.dim() == 3
                     and masks.shape[0] == count, f"masks must be uint8 [{count}, H, W], got {_described(masks)}")
            mask_classes = capability("dataset", dataset, "mask_classes")
            _require(isinstance(mask_classes, int) and mask_classes >= 1,
                     f"mask_classes must be an int >= 1 with masks, got {mask_classes!r}")


def _described(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} {list(value.shape)}"
    return type(value).__name__


def check_probe(factory: Factory, params: dict[str, Any] | None = None, classes: int = 4, per_class: int = 16,
                image_size: int = 16) -> None:
    """A probe's ``layer`` is None, ``"last"``, ``"all"`` or a block index; on a small labelled task
    (random images, ``classes`` x ``per_class`` train and as many test images, with segmentation
    masks and one box each, for a probe that ``needs_masks`` or ``needs_boxes``) and a small two-block encoder, it returns what its declared
    columns allow (:func:`mimbench.contract.check_probe_output`), at least one of them, and leaves the
    encoder's weights as they were."""
    probe = factory(**(params or {}))
    _conforms("probe", probe)
    layer = capability("probe", probe, "layer")
    _require(layer in (None, "last", "all") or (isinstance(layer, int) and not isinstance(layer, bool) and layer >= 0),
             f"layer must be None, 'last', 'all' or a block index, got {layer!r}")
    generator = _generator(0)

    def split() -> DeviceImages:
        count = classes * per_class
        images = torch.randint(0, 256, (count, 3, image_size, image_size), generator=generator, dtype=torch.uint8)
        labels = torch.arange(count) % classes
        masks = labels[:, None, None].expand(count, image_size, image_size).to(torch.uint8).clone()
        corner = torch.randint(0, image_size // 2, (count, 2), generator=generator).float()
        boxes = torch.cat([labels[:, None].float(), corner, corner + image_size // 2], dim=1)[:, None]  # one object
        return DeviceImages(images, labels, classes, masks, classes, boxes, classes)

    train, test = split(), split()
    encoder = _TinyEncoder(3).eval()
    before = {key: value.clone() for key, value in encoder.state_dict().items()}
    context = ProbeContext(encoder, train, test, Normalizer.measure(train), torch.device("cpu"), seed=0, batch_size=32)
    try:
        out = check_probe_output(probe(context), declared_by(probe), "the probe")
    except ContractError as exc:
        raise AssertionError(str(exc)) from None
    declared = [column.key for column in declared_by(probe)]
    _require(not declared or any(key in out for key in declared),
             f"the probe returned none of the columns it declares ({', '.join(declared)})")
    changed = [key for key, value in encoder.state_dict().items() if not torch.equal(value, before[key])]
    _require(not changed, f"the probe changed the encoder (train a copy): {', '.join(changed)}")


def check_executor(factory: Factory, params: dict[str, Any] | None = None, suite_dir: str = ".",
                   threads_per_run: int = 1) -> None:
    """An executor (``suite_dir`` and ``threads_per_run`` passed when its factory declares them) says
    whether it runs tasks in this process (``in_process``, a bool), yields nothing for no tasks, has
    nothing in flight then, and can be cancelled and closed (``close``, when it has one)."""
    accepted = inspect.signature(factory).parameters
    context = {key: value for key, value in (("suite_dir", suite_dir), ("threads_per_run", threads_per_run))
               if key in accepted}
    executor = factory(**context, **(params or {}))
    _conforms("executor", executor)
    _require(isinstance(executor.in_process, bool), f"in_process must be True or False, got {executor.in_process!r}")
    _require(list(executor.run([])) == [], "run([]) must yield nothing")
    _require(executor.in_flight() == 0, f"in_flight() must be 0 with nothing run, got {executor.in_flight()!r}")
    executor.cancel()
    close = capability("executor", executor, "close")
    if close is not None:
        close()
