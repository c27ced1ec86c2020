"""Images/s of one SimMIM model through mimbench's training loop, eager and compiled, and its
model FLOPs utilisation (MFU) when it is a ViT.

Every figure is :func:`mimbench.train.pretrain` (the loop runs use: bf16 autocast and TF32 on
CUDA, data on the device, masks made ahead) on random images, one epoch of ``--steps`` steps
after a warm-up epoch; the first compiled step (compilation) is left out, as in runs.

    python benchmarks/step_speed.py                                   # simmim-ablation's ViT, 28 px
    python benchmarks/step_speed.py --compile default --compile reduce-overhead
    python benchmarks/step_speed.py --vit-b16 --device cuda --compile default   # MFU of ViT-B/16 at 224 px

MFU = model FLOPs per step / step time / the GPU's dense bf16 peak (``--peak-tflops``, or a known
card's: H100/H200 SXM 989 TFLOPS). Model FLOPs count the matmuls of forward + backward (3x the
forward's): per image, patch embedding 2NPD, each block 24ND^2 + 4N^2D, the linear head 2NDP
(N tokens, D width, P = patch^2 x channels), the same for every mask (SimMIM encodes all tokens).
"""

from __future__ import annotations

import click
import torch

from mimbench.data import DeviceImages, Normalizer
from mimbench.jobs import PluginSources
from mimbench.registry import Registry
from mimbench.runtime import Runtime
from mimbench.schema import TrainConfig
from mimbench.specs import Component, EvalSpec, RunSpec
from mimbench.train import Session, pretrain

KNOWN_BF16_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def vit_run(registry: Registry, image_size: int, patch: int, dim: int, depth: int, heads: int,
            batch_size: int) -> RunSpec:
    """The SimMIM ViT as a run's spec (params resolved); only its components and image size are used."""
    specs = {
        "encoder": ("vit", {"patch_size": patch, "dim": dim, "depth": depth, "heads": heads}),
        "decoder": ("linear", {}),
        "masker": ("patch", {"ratio": 0.6, "mask_patch_size": patch if patch > 4 else 4}),
        "loss": ("l1", {}),
    }
    components = {kind: Component(name, registry.resolve_params(kind, name, params))
                  for kind, (name, params) in specs.items()}
    return RunSpec(Component("random"), image_size, 0, TrainConfig(batch_size=batch_size),
                   EvalSpec(0, 512, None, (), None, None), data=None, **components)


def vit_flops_per_image(image_size: int, patch: int, dim: int, depth: int, channels: int) -> float:
    """Matmul FLOPs of one training step per image (forward + backward = 3 x forward)."""
    tokens, pixels = (image_size // patch) ** 2, patch * patch * channels
    forward = 2 * tokens * pixels * dim + depth * (24 * tokens * dim**2 + 4 * tokens**2 * dim) + 2 * tokens * dim * pixels
    return 3.0 * forward


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given is not None or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((peak for card, peak in KNOWN_BF16_PEAK_TFLOPS.items() if card in name), None)


@click.command()
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", default=256, show_default=True)
@click.option("--steps", default=30, show_default=True, help="Timed steps per setting.")
@click.option("--compile", "modes", multiple=True,
              help="Also time with train.compile=MODE (true, default, reduce-overhead, max-autotune); repeatable.")
@click.option("--vit-b16", is_flag=True, help="ViT-B/16 (dim 768, depth 12, 12 heads) on 224 px RGB images.")
@click.option("--peak-tflops", "peak_given", type=float, default=None, help="Dense bf16 peak of the device, for MFU.")
def main(device: str, batch_size: int, steps: int, modes: tuple[str, ...], vit_b16: bool,
         peak_given: float | None) -> None:
    runtime = Runtime(PluginSources.from_cli(), device)
    torch_device = runtime.device
    size, patch, dim, depth, heads, channels = (224, 16, 768, 12, 12, 3) if vit_b16 else (28, 4, 128, 4, 4, 1)
    run = vit_run(runtime.registry, size, patch, dim, depth, heads, batch_size)
    images = torch.randint(0, 256, (batch_size * steps, channels, size, size), dtype=torch.uint8, device=torch_device)
    data = DeviceImages(images, torch.zeros(len(images), dtype=torch.long, device=torch_device), 10)
    warmup = DeviceImages(images[: 3 * batch_size], data.labels[: 3 * batch_size], 10)
    normalize = Normalizer.measure(warmup)
    flops = vit_flops_per_image(size, patch, dim, depth, channels)
    peak = peak_tflops(torch_device, peak_given)
    name = torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda" else "cpu"
    click.echo(f"ViT patch {patch} dim {dim} depth {depth} at {size}px x{channels}, batch {batch_size}, "
               f"{steps} steps, {name}, torch {torch.__version__}; {flops / 1e9:.2f} GFLOP per image per step"
               + (f"; peak {peak} TFLOPS bf16" if peak else ""))
    click.echo("\n| compile | images/s | step ms | compile s | model TFLOPS | MFU |\n|---|---|---|---|---|---|")
    for mode in (False, *modes):
        setting = True if mode == "true" else mode
        torch.manual_seed(0)
        parts = runtime.components(run, channels)
        train = TrainConfig(epochs=1, batch_size=batch_size, lr=1e-3, weight_decay=0.05, warmup_epochs=0.0,
                            grad_clip=5.0, log_every=10**9, augment=None, compile=setting)
        first = pretrain(parts, warmup, normalize, train, seed=0, device=torch_device, session=Session(show_progress=False))
        result = pretrain(parts, data, normalize, train, seed=0, device=torch_device, session=Session(show_progress=False))
        achieved = result.images_per_second * flops / 1e12
        mfu = f"{100 * achieved / peak:.1f}%" if peak else "–"
        click.echo(f"| {setting or 'off'} | {result.images_per_second:.0f} | {1e3 * batch_size / result.images_per_second:.1f} "
                   f"| {first.compile_seconds:.1f} | {achieved:.1f} | {mfu} |")
        if torch_device.type == "cuda":
            click.echo(f"  peak memory {torch.cuda.max_memory_allocated(torch_device) / 2**20:.0f} MB")
            torch.cuda.reset_peak_memory_stats(torch_device)


if __name__ == "__main__":
    main()
