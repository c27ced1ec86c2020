"""Training images/s of each registered encoder at its default params.

One SimMIM step = mask (patch masker, ratio 0.6) + encoder + linear head + L1 + AdamW,
timed as the median of ``--repeats`` steps after two warm-ups. Prints a markdown table.

    python benchmarks/encoder_speed.py                       # every encoder, 32 px, 1 channel
    python benchmarks/encoder_speed.py --image-size 224 --channels 3 --batch-size 32 --device cuda
    python benchmarks/encoder_speed.py --encoder cnn --encoder resnet --channels 3 --channels-last
"""

from __future__ import annotations

import click
import torch

from timing import median_seconds

from mimbench.contract import reconstruct
from mimbench.jobs import PluginSources
from mimbench.optim import autocast_for, param_groups
from mimbench.runtime import Runtime


@click.command()
@click.option("--image-size", default=32, show_default=True)
@click.option("--channels", default=1, show_default=True)
@click.option("--batch-size", default=128, show_default=True)
@click.option("--repeats", default=10, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--encoder", "names", multiple=True, help="Only these encoders (repeatable).")
@click.option("--channels-last", is_flag=True,
              help="Images, encoder and decoder in channels-last memory format (for convolutional encoders).")
def main(image_size: int, channels: int, batch_size: int, repeats: int, device: str, names: tuple[str, ...],
         channels_last: bool) -> None:
    runtime = Runtime(PluginSources.from_cli(), device)
    registry, torch_device = runtime.registry, runtime.device
    layout = torch.channels_last if channels_last else torch.contiguous_format
    images = torch.randn(batch_size, channels, image_size, image_size, device=torch_device).contiguous(
        memory_format=layout)
    masker = registry.build("masker", "patch", {"ratio": 0.6, "mask_patch_size": 4})
    loss_fn = registry.build("loss", "l1", {})
    click.echo(f"{image_size}px x{channels}, batch {batch_size}, device {torch_device}, "
               f"{torch.get_num_threads()} threads{', channels-last' if channels_last else ''}\n")
    click.echo("| encoder | params (M) | stride | out_dim | step ms | images/s |")
    click.echo("|---|---|---|---|---|---|")
    for name in names or registry.names("encoder"):
        torch.manual_seed(0)
        encoder = registry.build("encoder", name, {}, in_channels=channels, image_size=image_size).to(
            torch_device, memory_format=layout)
        decoder = registry.build("decoder", "linear", {}, in_dim=encoder.out_dim, stride=encoder.stride,
                                 out_channels=channels, image_size=image_size).to(torch_device, memory_format=layout)
        optimizer = torch.optim.AdamW(param_groups([encoder, decoder], 0.05), lr=1e-3)
        generator = torch.Generator(device=torch_device).manual_seed(0)

        def step() -> None:
            mask = masker(images, generator)
            with autocast_for(torch_device):
                pred = reconstruct(encoder, decoder, images, mask)
            loss = loss_fn(pred.float(), images, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        median = median_seconds(step, repeats, torch_device)
        params = sum(p.numel() for p in encoder.parameters()) / 1e6
        click.echo(f"| {name} | {params:.2f} | {encoder.stride} | {encoder.out_dim} | {median * 1e3:.1f} | "
                   f"{batch_size / median:.0f} |")


if __name__ == "__main__":
    main()
