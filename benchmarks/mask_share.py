"""Share of a training step spent making masks, per masker.

Builds the quick suite's model (or any suite's first encoder/decoder/loss), then
times, for each masker of the suite (or each one named with --masker): making the masks of one batch alone, and one
whole training step (mask + forward + backward + AdamW). Prints a markdown table.

    python benchmarks/mask_share.py                      # quick suite, batch 256
    python benchmarks/mask_share.py --masker random_token --masker block --masker square --masker grid
    python benchmarks/mask_share.py --batch-size 256 --device cuda
"""

from __future__ import annotations

import click
import torch

from timing import median_seconds

from mimbench.contract import reconstruct
from mimbench.plugins import load_plugins
from mimbench.registry import Registry
from mimbench.worker import load_data, resolve_device
from mimbench.suite import expand, load_suite
from mimbench.train import autocast_for, build_components, param_groups


@click.command()
@click.argument("suite", default="quick")
@click.option("--batch-size", default=256, show_default=True)
@click.option("--repeats", default=20, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--masker", "masker_names", multiple=True,
              help="Time these registered maskers (default params) with the suite's first model, "
                   "instead of the suite's own maskers (repeatable).")
def main(suite: str, batch_size: int, repeats: int, device: str, masker_names: tuple[str, ...]) -> None:
    torch_device = resolve_device(device)
    registry = Registry(load_plugins())
    spec = load_suite(suite)
    runs = expand(spec, registry)
    data = load_data(registry, runs[0].data, torch_device)
    images = data.normalize(data.train.images[:batch_size])
    click.echo(f"{spec.name}: batch {batch_size}, {spec.image_size}px, device {torch_device}, "
               f"{torch.get_num_threads()} threads\n")
    click.echo("| masker | params | mask ms | step ms | mask share |")
    click.echo("|---|---|---|---|---|")
    if masker_names:
        configs = [{**runs[0].config, "masker": {"name": name, "params": registry.resolve_params("masker", name, {})}}
                   for name in masker_names]
    else:
        configs = list({repr(run.config["masker"]): run.config for run in runs}.values())
    for config in configs:
        masker_spec = config["masker"]
        parts = build_components(registry, config, data.train.channels)
        encoder, decoder = parts.encoder.to(torch_device), parts.decoder.to(torch_device)
        optimizer = torch.optim.AdamW(param_groups([encoder, decoder], 0.05), lr=1e-3)
        generator = torch.Generator(device=torch_device).manual_seed(0)

        def make_mask():
            return parts.masker(images, generator)

        def step():
            mask = parts.masker(images, generator)
            with autocast_for(torch_device):
                pred = reconstruct(encoder, decoder, images, mask)
            loss = parts.loss(pred.float(), images, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        mask_s = median_seconds(make_mask, repeats, torch_device)
        step_s = median_seconds(step, repeats, torch_device)
        params = ", ".join(f"{k}={v}" for k, v in masker_spec["params"].items())
        click.echo(f"| {masker_spec['name']} | {params} | {mask_s * 1e3:.2f} | {step_s * 1e3:.1f} | "
                   f"{100 * mask_s / step_s:.2f}% |")


if __name__ == "__main__":
    main()
