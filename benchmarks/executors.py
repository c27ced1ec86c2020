"""Wall time of a suite under each executor, and Ray's start-up cost, in one window.

    python benchmarks/executors.py                    # quick: local, ray and submitit (local processes)
    python benchmarks/executors.py --repeats 2 --suite quick --old-tree /tmp/old

Each measurement is a fresh ``mimbench run`` in a subprocess, into a temporary results folder.
``--old-tree`` also times another checkout's ``mimbench`` (``python -S -m mimbench`` with that
checkout's ``mimbench/`` and ``mimbench_plugins/`` (``plugins/`` before 0.1.0's packaging) first on PYTHONPATH, then this environment's
site-packages, so that the editable install of today's tree is not used), alternated with
today's, to compare the local executor with an earlier version in the same window.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

MIMBENCH = str(Path(sys.executable).parent / "mimbench")


def timed_run(suite: str, args: list[str], env: dict[str, str] | None = None) -> float:
    out = Path(tempfile.mkdtemp(prefix="mimbench-bench-"))
    command = [sys.executable, "-S", "-m", "mimbench"] if env is not None else [MIMBENCH]
    try:
        started = time.perf_counter()
        subprocess.run([*command, "run", suite, "--out", str(out), *args], check=True, env=env, cwd=out,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - started
    finally:
        shutil.rmtree(out, ignore_errors=True)


def ray_startup_seconds() -> float:
    """ray.init on this machine, one trivial task, shutdown: what the ray executor adds once per suite."""
    code = ("import time, ray; t = time.perf_counter(); ray.init(address=\"local\", num_cpus=2, include_dashboard=False, "
            "log_to_driver=False); ray.get(ray.remote(lambda: 1).remote()); ray.shutdown(); "
            "print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
                 .stdout.split()[-1])


def old_tree_env(tree: Path) -> dict[str, str]:
    """PYTHONPATH that imports ``mimbench`` and ``mimbench_plugins`` from another checkout."""
    shim = Path(tempfile.mkdtemp(prefix="mimbench-old-"))
    (shim / "mimbench").symlink_to(tree / "mimbench")
    builtins = tree / "mimbench_plugins"
    (shim / "mimbench_plugins").symlink_to(builtins if builtins.is_dir() else tree / "plugins")
    import site

    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), *site.getsitepackages()])}


@click.command()
@click.option("--suite", default="quick", show_default=True)
@click.option("--repeats", default=1, show_default=True)
@click.option("--old-tree", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Also time this checkout's local executor (alternated with today's).")
def main(suite: str, repeats: int, old_tree: Path | None) -> None:
    setups = [("local (today)", [], None)]
    if old_tree is not None:
        setups.append((f"local ({old_tree})", [], old_tree_env(old_tree.resolve())))
    setups.append(("ray (default threads_per_run)", ["--executor", "ray"], None))
    setups.append(("ray, threads_per_run 1", ["--executor", "ray", "--set", "execution.threads_per_run=1"], None))
    setups.append(("submitit, cluster local (default max_parallel)",
                   ["--executor", "submitit", "--set", "execution.cluster=local"], None))
    times: dict[str, list[float]] = {name: [] for name, _, _ in setups}
    startup = []
    for _ in range(repeats):
        for name, args, env in setups:
            times[name].append(timed_run(suite, args, env))
            click.echo(f"{name}: {times[name][-1]:.1f} s", err=True)
        startup.append(ray_startup_seconds())
    click.echo(f"| executor | wall time (s), median of {repeats} | runs |")
    click.echo("|---|---|---|")
    for name, values in times.items():
        click.echo(f"| {name} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
    click.echo(f"\nRay start-up (init, one task, shutdown): median {statistics.median(startup):.1f} s "
               f"({', '.join(f'{v:.1f}' for v in startup)})")


if __name__ == "__main__":
    main()
