"""The same SimMIM ViT trained three ways, alternated in one process window: images/s and ratios.

- ``mimbench fp32`` and ``mimbench bf16``: :func:`mimbench.train.pretrain`, the training loop every
  run goes through (encoder ``vit``, decoder ``linear``, masker ``patch``, loss ``l1``, AdamW), with
  ``train.precision`` fp32 and bf16 (bf16 autocast around the forward pass; only where the device
  multiplies bf16 natively, or with ``--bf16-anyway``).
- ``bare``: a hand-written PyTorch loop around the same two modules: index a shuffled batch,
  patch mask by argsort, zero the hidden pixels, forward, L1 on hidden pixels, backward, AdamW.
- ``lightly``: lightly's SimMIM recipe (its ``examples/pytorch/simmim.py``): torchvision's
  ``VisionTransformer`` in ``MaskedVisionTransformerTorchvision``, ``random_token_mask``, a linear
  decoder on the masked tokens, L1 on their patches, in full precision (lightly leaves mixed
  precision to the user).

Same model size (patch 4, dim 128 or ``--dim``, depth 4, 4 heads, MLP 4 x dim), same images (10,000 Fashion-MNIST
train images at 32 px; the embedded 5,000 when the full set is not installed), batch 256, mask
ratio 0.6, AdamW, no gradient clipping. Each trial trains ``--steps`` steps on a fresh random
subset; the three alternate, their order rotating every round. lightly is a benchmark-only
dependency: ``pip install lightly`` (without it, only ``mimbench`` and ``bare`` are timed).

    python benchmarks/vs_lightly.py                 # 3 rounds of 12 steps each (~5 min on 2 cores)
    python benchmarks/vs_lightly.py --dim 256       # the wider ViT, where bf16 pays most
    python benchmarks/vs_lightly.py --rounds 5 --steps 20 --device cuda
"""

from __future__ import annotations

import importlib.util
import statistics
from typing import Callable

import click
import torch
from torch import nn

from timing import now

from mimbench.data import DeviceImages, Normalizer, to_device_images
from mimbench.jobs import PluginSources
from mimbench.optim import native_bf16_cpu
from mimbench.registry import Registry
from mimbench.runtime import Runtime
from mimbench.schema import TrainConfig
from mimbench.specs import Component, EvalSpec, RunSpec
from mimbench.train import Session, pretrain

SIZE, PATCH, DEPTH, HEADS, RATIO = 32, 4, 4, 4, 0.6


def simmim_run(registry: Registry, batch: int, dim: int) -> RunSpec:
    """The SimMIM ViT (width ``dim``) as a run's spec, params resolved (its components and image
    size are what is built; the training settings are each trainer's own)."""
    chosen = {"encoder": ("vit", {"patch_size": PATCH, "dim": dim, "depth": DEPTH, "heads": HEADS}),
              "decoder": ("linear", {}), "masker": ("patch", {"ratio": RATIO, "mask_patch_size": PATCH}),
              "loss": ("l1", {})}
    components = {kind: Component(name, registry.resolve_params(kind, name, params))
                  for kind, (name, params) in chosen.items()}
    return RunSpec(Component("fashion-mnist"), SIZE, 0, TrainConfig(batch_size=batch),
                   EvalSpec(0, 512, None, (), None, None), data=None, **components)


def load_images(registry: Registry, device: torch.device) -> DeviceImages:
    try:
        dataset = registry.build("dataset", "fashion-mnist", {"train_images": 10000}, split="train", image_size=SIZE)
    except Exception:
        dataset = registry.build("dataset", "fashion-mnist-mini", {}, split="train", image_size=SIZE)
    return to_device_images(dataset, SIZE, device)


def mimbench_trainer(runtime: Runtime, data: DeviceImages, normalize: Normalizer, device: torch.device,
                     batch: int, dim: int, compile_mode: str | None, precision: str) -> Callable[[DeviceImages], float]:
    torch.manual_seed(0)
    parts = runtime.components(simmim_run(runtime.registry, batch, dim), data.channels)
    train = TrainConfig(epochs=1, batch_size=batch, lr=1e-3, weight_decay=0.05, warmup_epochs=0.0,
                        grad_clip=None, log_every=10**9, augment=None, compile=compile_mode or False,
                        precision=precision)

    def trial(subset: DeviceImages) -> float:
        if compile_mode:
            torch._dynamo.reset()  # pretrain wraps a new model each call; compiled anew, not counted
        result = pretrain(parts, subset, normalize, train, seed=0, device=device, session=Session(show_progress=False))
        return result.images_per_second

    return trial


def bare_trainer(runtime: Runtime, data: DeviceImages, normalize: Normalizer, device: torch.device,
                 batch: int, dim: int) -> Callable[[DeviceImages], float]:
    torch.manual_seed(0)
    parts = runtime.components(simmim_run(runtime.registry, batch, dim), data.channels)
    encoder, decoder = parts.encoder.to(device).train(), parts.decoder.to(device).train()
    optimizer = torch.optim.AdamW([*encoder.parameters(), *decoder.parameters()], lr=1e-3, weight_decay=0.05)
    grid = SIZE // PATCH
    hidden_cells = round(RATIO * grid * grid)

    def trial(subset: DeviceImages) -> float:
        start = now(device)
        order = torch.randperm(len(subset), device=device)
        for i in range(len(subset) // batch):
            images = normalize(subset.images[order[i * batch:(i + 1) * batch]])
            ranks = torch.rand(batch, grid * grid, device=device).argsort(dim=1).argsort(dim=1)
            cells = (ranks < hidden_cells).view(batch, grid, grid)
            mask = cells.repeat_interleave(PATCH, 1).repeat_interleave(PATCH, 2)  # [B, H, W]
            pred = decoder(encoder(images.masked_fill(mask.unsqueeze(1), 0.0), mask), mask)
            weight = mask.unsqueeze(1).float()
            loss = ((pred - images).abs() * weight).sum() / weight.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return (len(subset) // batch) * batch / (now(device) - start)

    return trial


def lightly_trainer(data: DeviceImages, normalize: Normalizer, device: torch.device,
                    batch: int, dim: int) -> Callable[[DeviceImages], float]:
    import torchvision
    from lightly.models import utils
    from lightly.models.modules import MaskedVisionTransformerTorchvision

    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=SIZE, patch_size=PATCH, num_layers=DEPTH, num_heads=HEADS,
                                               hidden_dim=dim, mlp_dim=4 * dim)
    vit.conv_proj = nn.Conv2d(data.channels, dim, kernel_size=PATCH, stride=PATCH)
    backbone = MaskedVisionTransformerTorchvision(vit=vit).to(device).train()
    decoder = nn.Linear(dim, PATCH * PATCH * data.channels).to(device)
    optimizer = torch.optim.AdamW([*backbone.parameters(), *decoder.parameters()], lr=1e-3, weight_decay=0.05)
    l1 = nn.L1Loss()

    def trial(subset: DeviceImages) -> float:
        start = now(device)
        order = torch.randperm(len(subset), device=device)
        for i in range(len(subset) // batch):
            images = normalize(subset.images[order[i * batch:(i + 1) * batch]])
            _, idx_mask = utils.random_token_mask(size=(batch, vit.seq_length), mask_ratio=RATIO, device=device)
            encoded = backbone.encode(images=images, idx_mask=idx_mask)
            pred = decoder(utils.get_at_index(encoded, idx_mask))
            target = utils.get_at_index(utils.patchify(images, PATCH), idx_mask - 1)  # no class token in patches
            loss = l1(pred, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return (len(subset) // batch) * batch / (now(device) - start)

    return trial


@click.command()
@click.option("--rounds", default=3, show_default=True, help="Trials per trainer (alternated).")
@click.option("--steps", default=12, show_default=True, help="Training steps per trial.")
@click.option("--batch-size", default=256, show_default=True)
@click.option("--dim", default=128, show_default=True, help="The ViT's width (every trainer's).")
@click.option("--bf16-anyway", is_flag=True, help="Time mimbench bf16 on a CPU without native bf16 too.")
@click.option("--device", default="auto", show_default=True)
@click.option("--compile", "compile_mode", default=None,
              help="Also pass train.compile=MODE (e.g. default) to mimbench; its compile time is left out.")
def main(rounds: int, steps: int, batch_size: int, dim: int, bf16_anyway: bool, device: str,
         compile_mode: str | None) -> None:
    runtime = Runtime(PluginSources.from_cli(), device)
    torch_device = runtime.device
    data = load_images(runtime.registry, torch_device)
    normalize = Normalizer.measure(data)
    trainers = {"mimbench fp32": mimbench_trainer(runtime, data, normalize, torch_device, batch_size, dim, compile_mode,
                                                  "fp32")}
    native = torch_device.type == "cuda" or native_bf16_cpu()
    if native or bf16_anyway:
        trainers["mimbench bf16"] = mimbench_trainer(runtime, data, normalize, torch_device, batch_size, dim,
                                                     compile_mode, "bf16")
    else:
        click.echo("this CPU has no native bf16 (avx512_bf16, amx_bf16): timing mimbench in fp32 only "
                   "(--bf16-anyway to time emulated bf16)", err=True)
    trainers["bare"] = bare_trainer(runtime, data, normalize, torch_device, batch_size, dim)
    if importlib.util.find_spec("lightly") is None:
        click.echo("lightly is not installed (pip install lightly): timing mimbench and bare only", err=True)
    else:
        trainers["lightly"] = lightly_trainer(data, normalize, torch_device, batch_size, dim)
    click.echo(f"{len(data)} images at {SIZE}px, ViT dim {dim} depth {DEPTH}, batch {batch_size}, {steps} steps per "
               f"trial, device {torch_device}, {torch.get_num_threads()} threads, torch {torch.__version__}"
               + (f", mimbench compile={compile_mode}" if compile_mode else ""))
    picker = torch.Generator().manual_seed(0)

    def subset(count: int) -> DeviceImages:
        keep = torch.randperm(len(data), generator=picker)[:count].to(data.images.device)
        return DeviceImages(data.images[keep], data.labels[keep], data.num_classes)

    names = list(trainers)
    for name in names:  # warm-up: first-call allocations, kernels, compilation
        trainers[name](subset(2 * batch_size))
    speeds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            speeds[name].append(trainers[name](subset(steps * batch_size)))
        click.echo(f"round {round_ + 1}: " + ", ".join(f"{n} {speeds[n][-1]:.0f}" for n in names) + " images/s")
    median = {name: statistics.median(values) for name, values in speeds.items()}
    click.echo("\n| trainer | images/s (median) | each round |\n|---|---|---|")
    for name in names:
        click.echo(f"| {name} | {median[name]:.1f} | {', '.join(f'{v:.1f}' for v in speeds[name])} |")
    ratios = [(f"{mine}/{theirs}", median[mine] / median[theirs])
              for mine in ("mimbench fp32", "mimbench bf16") for theirs in ("lightly", "bare", "mimbench fp32")
              if mine in median and theirs in median and mine != theirs]
    click.echo("\n" + "   ".join(f"{name} = {ratio:.3f}" for name, ratio in ratios))


if __name__ == "__main__":
    main()
