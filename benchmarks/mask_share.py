"""What making masks costs a training step, per masker.

Builds the quick suite's model (or any suite's first encoder/decoder/loss) and, for each
masker of the suite (or each one named with --masker), measures:

- ``mask ms``: making one batch of masks alone, called in a tight loop (median of 20 calls);
- ``in-step ms``: the same, timed inside real training steps (:func:`mimbench.train.pretrain`, the
  loop every run uses), where each call starts with caches the step has just filled: the median
  over every call of every trial. On CPU the masks are made in line, so this is what they add;
- ``step ms``: a whole training step, the median over ``--repeats`` trials of ``--steps`` steps;
- ``free ms``: the same step with a mask that costs nothing (one precomputed batch of this
  masker's masks, handed back every step); trials of both kinds alternate, in pairs whose order
  alternates too;
- ``step - free``: the median over trial pairs of their difference: what the masks add, measured
  from outside. Step times vary by 1-3% from trial to trial, so on CPU this is a noisy check of
  ``in-step ms``;
- ``share``: what the masks add, as a fraction of a step: ``in-step / step`` on CPU;
  ``(step - free) / step`` on CUDA, where the next batch's masks are made in a background thread
  while a step runs and their time inside the loop is not time added to the step.

    python benchmarks/mask_share.py                      # quick suite, batch 256
    python benchmarks/mask_share.py --masker region --masker block
    python benchmarks/mask_share.py simmim-ablation --batch-size 256 --device cuda
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import click
import torch

from timing import median_seconds, now

from mimbench.data import DeviceImages
from mimbench.expansion import expand
from mimbench.jobs import PluginSources
from mimbench.runtime import Runtime
from mimbench.schema import TrainConfig
from mimbench.specs import Component
from mimbench.suite import load_suite
from mimbench.train import Session, pretrain


class TimedMasker:
    """A masker that records how long each call takes (seconds, host clock)."""

    def __init__(self, masker):
        self.masker, self.seconds = masker, []

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        start = time.perf_counter()
        mask = self.masker(images, generator)
        self.seconds.append(time.perf_counter() - start)
        return mask


class PrecomputedMask:
    """A masker that costs nothing: returns the same precomputed mask [B, H, W] every call."""

    def __init__(self, mask: torch.Tensor):
        self.mask = mask

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mask


@click.command()
@click.argument("suite", default="quick")
@click.option("--batch-size", default=256, show_default=True)
@click.option("--steps", default=8, show_default=True, help="Training steps per trial.")
@click.option("--repeats", default=11, show_default=True, help="Trials of each kind, alternated.")
@click.option("--device", default="auto", show_default=True)
@click.option("--masker", "masker_names", multiple=True,
              help="Time these registered maskers (default params) with the suite's first model, "
                   "instead of the suite's own maskers (repeatable).")
def main(suite: str, batch_size: int, steps: int, repeats: int, device: str, masker_names: tuple[str, ...]) -> None:
    runtime = Runtime(PluginSources.from_cli(), device)
    registry, torch_device = runtime.registry, runtime.device
    spec = load_suite(suite)
    runs = expand(spec, registry)
    data = runtime.data(runs[0].data)
    train_images = data.train.images[: steps * batch_size]
    subset = DeviceImages(train_images, data.train.labels[: len(train_images)], data.train.num_classes)
    images = data.normalize(train_images[:batch_size])
    train = TrainConfig.model_validate({**runs[0].train.model_dump(), "epochs": 1, "batch_size": batch_size,
                                        "warmup_epochs": 0.0, "log_every": 10**9, "compile": False, "devices": 1,
                                        "budget_flops": None})
    click.echo(f"{spec.name}: batch {batch_size}, {spec.image_size}px, {steps} steps x {repeats} trials, "
               f"device {torch_device}, {torch.get_num_threads()} threads\n")
    click.echo("| masker | params | mask ms | in-step ms | step ms | free ms | step - free | share |")
    click.echo("|---|---|---|---|---|---|---|---|")
    if masker_names:
        setups = [dataclasses.replace(runs[0], masker=Component(name, registry.resolve_params("masker", name, {})),
                                      run_id="")
                  for name in masker_names]
    else:
        setups = list({run.masker: run for run in runs}.values())
    for run in setups:
        torch.manual_seed(0)
        parts = runtime.components(run, data.train.channels)
        generator = torch.Generator(device=torch_device).manual_seed(0)
        mask_s = median_seconds(lambda: parts.masker(images, generator), 20, torch_device)
        timed = TimedMasker(parts.masker)
        with_timer = dataclasses.replace(parts, masker=timed)
        free = dataclasses.replace(parts, masker=PrecomputedMask(parts.masker(images, generator)))

        def step_seconds(components) -> float:
            start = now(torch_device)
            pretrain(components, subset, data.normalize, train, seed=0, device=torch_device, session=Session(show_progress=False))
            return (now(torch_device) - start) / steps

        step_seconds(with_timer), step_seconds(free)  # warm-up
        timed.seconds.clear()
        with_masks, without = [], []
        for trial in range(repeats):  # pairs in alternating order, so that neither kind always goes first
            if trial % 2:
                without.append(step_seconds(free))
            with_masks.append(step_seconds(with_timer))
            if not trial % 2:
                without.append(step_seconds(free))
        step_s, free_s = statistics.median(with_masks), statistics.median(without)
        in_step_s = statistics.median(timed.seconds)
        added_s = statistics.median(a - b for a, b in zip(with_masks, without))
        share = (in_step_s if torch_device.type == "cpu" else added_s) / step_s
        params = ", ".join(f"{k}={v}" for k, v in run.masker.params.items())
        click.echo(f"| {run.masker.name} | {params} | {mask_s * 1e3:.2f} | {in_step_s * 1e3:.2f} | "
                   f"{step_s * 1e3:.1f} | {free_s * 1e3:.1f} | {added_s * 1e3:+.2f} | {100 * share:.2f}% |")

if __name__ == "__main__":
    main()
