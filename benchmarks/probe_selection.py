"""What choosing probe hyper-parameters on held-out train data costs a run (issue 32).

    python benchmarks/probe_selection.py                         # quick's ViT, untrained
    python benchmarks/probe_selection.py --run-dir results/quick/runs/<run_id> --labels 10,100,all

On the embedded Fashion-MNIST subset (5,000 train / 1,000 test images) and quick's ViT (2 blocks,
64-d; a finished run's trained encoder with ``--run-dir``): the seconds each probe takes with one
fixed value per hyper-parameter and with its default grid (every combination fit on 80% of the
labelled train split, scored on the rest, the chosen one refit), at each labels-per-class budget,
and the test accuracy each gives. The features are extracted before the clock starts (shared by
every probe in a run: extraction is not part of the selection's cost).
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from mimbench import api
from mimbench.data import DeviceImages, Normalizer, class_balanced_indices
from mimbench.plugins import load_plugins
from mimbench.probing import ProbeContext
from mimbench.registry import Registry
from mimbench_plugins.attentive_probe import AttentiveProbe
from mimbench_plugins.datasets import fashion_mnist_mini
from mimbench_plugins.probes import KNNProbe, LinearProbe

PROBES = {
    "linear (layer all)": (LinearProbe(layer="all", weight_decay=1e-3), LinearProbe(layer="all")),
    "knn (layer all)": (KNNProbe(layer="all", k=20, temperature=0.07), KNNProbe(layer="all")),
    "attentive": (AttentiveProbe(lr=0.1, weight_decay=1e-4, queries=16), AttentiveProbe()),
}


@click.command()
@click.option("--run-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A finished run whose encoder.pt to probe (default: quick's ViT, untrained, seed 0).")
@click.option("--labels", default="10,100,all", show_default=True, help="Labels per class, comma-separated.")
@click.option("--threads", default=2, show_default=True)
def main(run_dir: Path | None, labels: str, threads: int) -> None:
    torch.set_num_threads(threads)
    if run_dir is not None:
        encoder = api.load_encoder(run_dir)
    else:
        torch.manual_seed(0)
        encoder = Registry(load_plugins()).build("encoder", "vit", {"patch_size": 4, "dim": 64, "depth": 2, "heads": 4},
                                                 in_channels=1, image_size=28)
    train_set, test_set = fashion_mnist_mini("train"), fashion_mnist_mini("test")
    train = DeviceImages(train_set.images, train_set.labels, 10)
    test = DeviceImages(test_set.images, test_set.labels, 10)
    normalize = Normalizer.measure(train)
    print("| probe | labels/class | fixed: s | grid: s | fixed: acc | grid: acc | chosen |")
    print("|---|--:|--:|--:|--:|--:|---|")
    for budget in labels.split(","):
        subset = train if budget == "all" else train.subset(class_balanced_indices(train.labels, int(budget), 0))
        context = ProbeContext(encoder.eval(), subset, test, normalize, torch.device("cpu"), 0)
        context.block_features(), context.features("last"), context.token_features("last")
        for name, (fixed, grid) in PROBES.items():
            timings, accuracies, chosen = [], [], ""
            for probe in (fixed, grid):
                started = time.perf_counter()
                result = probe(context)
                timings.append(time.perf_counter() - started)
                accuracies.append(next(v for k, v in result.items() if k.endswith("_acc")))
                chosen = ", ".join(f"{k.split('_hp_')[1]} {v:g}" for k, v in result.items() if "_hp_" in k)
            print(f"| {name} | {budget} | {timings[0]:.1f} | {timings[1]:.1f} | {accuracies[0]:.3f} | "
                  f"{accuracies[1]:.3f} | {chosen} |")


if __name__ == "__main__":
    main()
