"""What the trackers cost a run: each tracker called as a worker calls it, on copies of a finished run.

    python benchmarks/tracker_overhead.py results/quick/runs/<run_id>   # a pre-trained run's folder
    python benchmarks/tracker_overhead.py RUN_DIR --runs 10 --epochs 20 --points 4

For each installed tracker: the time to build it and call ``prepare()`` once (what the driver does
per suite: for ``mlflow``, importing MLflow and creating the SQLite store), the first run in this
process (which imports the tracker's library), then the median of the other runs: ``run_started``,
``epochs`` times (``points`` loss points, ``step_logged``, then ``epoch_finished``), ``run_finished``
(with its reconstructions image and artifacts). ``wandb`` runs offline. Everything is written into a
temporary suite folder, deleted at the end.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import click

from mimbench.folder import RunFolder, SuiteFolder
from mimbench_plugins.mlflow_tracker import MLflowTracker
from mimbench_plugins.tensorboard_tracker import TensorBoardTracker
from mimbench_plugins.wandb_tracker import WandbTracker


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--runs", default=6, show_default=True, help="Runs per tracker (the first one pays the imports).")
@click.option("--epochs", default=5, show_default=True, help="epoch_finished calls per run.")
@click.option("--points", default=4, show_default=True, help="step_logged calls per epoch.")
def main(run_dir: Path, runs: int, epochs: int, points: int) -> None:
    source = RunFolder(run_dir)
    config = source.read_config()
    record = {**source.read_record(), "run_id": source.run_id}
    suite = Path(tempfile.mkdtemp(prefix="mimbench-trackers-")) / "bench"
    suite.mkdir()
    bench = SuiteFolder(suite)
    trackers = {"tensorboard": lambda: TensorBoardTracker(str(suite)), "mlflow": lambda: MLflowTracker(str(suite)),
                "wandb": lambda: WandbTracker(str(suite), mode="offline")}
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        for name, make in trackers.items():
            if importlib.util.find_spec(name) is None:
                click.echo(f"{name}: not installed, skipped")
                continue
            start = time.perf_counter()
            getattr(make(), "prepare", lambda: None)()
            prepare = time.perf_counter() - start
            times = []
            for i in range(runs):
                folder = bench.run(f"{name}-{i:03d}").path
                shutil.copytree(run_dir, folder)
                start = time.perf_counter()
                tracker = make()
                tracker.run_started(folder, config)
                for epoch in range(1, epochs + 1):
                    for point in range(1, points + 1):
                        tracker.step_logged(folder, (epoch - 1) * points + point, {"loss": 0.5, "lr": 1e-3})
                    tracker.epoch_finished(folder, {"epoch": epoch, "loss": 0.5, "lr": 1e-3,
                                                    "images_per_second": 1000.0, "seconds": 1.0})
                tracker.run_finished(folder, record)
                times.append(time.perf_counter() - start)
            rest = f"; then median {statistics.median(times[1:]) * 1000:.0f} ms per run" if runs > 1 else ""
            click.echo(f"{name}: build + prepare {prepare:.2f} s; first run {times[0]:.2f} s{rest} "
                       f"({epochs} epochs of {points} loss points)")
    finally:
        shutil.rmtree(suite.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
