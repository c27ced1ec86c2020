"""The Python API, for notebooks and scripts; ``mimbench run`` and ``mimbench report`` call the
same functions::

    import mimbench

    summary = mimbench.run("quick", overrides={"train.epochs": 1})  # a packaged name, a YAML path or a dict
    summary = mimbench.load("results/quick")     # one row per run and baseline, with its column types
    table = mimbench.table("results/quick")      # one row per configuration: mean, std, n over seeds
    diffs = mimbench.comparisons("results/quick", reference={"masker": "patch"})  # paired, with intervals
    fig = mimbench.plot("results/quick", "probe_accuracy")  # a matplotlib Figure
    encoder = mimbench.load_encoder("results/quick/runs/<run_id>")  # a run's trained encoder

``import mimbench`` stays light: this module is imported on first use of one of these names, and
torch only when a suite runs or an encoder is loaded. Bad input raises :class:`mimbench.errors.ConfigError` (one line);
the machine refusing (no space left, no permission) raises the ``OSError``, naming the path.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import pandas as pd

from mimbench.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

    from mimbench.executors import Executor
    from mimbench.planning import Plan
    from mimbench.runtime import Runtime, SuiteData


@dataclass
class Prepared:
    """A suite checked and ready to run: every name, param and tracker validated, the data loaded
    (by ``runtime``: this process's, on the device the checks ran on)."""

    plan: "Plan"
    runtime: "Runtime"
    executor: "Executor"
    data: "SuiteData"
    out: Path
    device: str
    # recipes that run but cannot be what the suite meant (mimbench.recipes), one line each
    warnings: list[str] = field(default_factory=list)

    @property
    def suite_dir(self) -> Path:
        return self.out / self.plan.suite.name


def prepare(suite: str | Path | Mapping[str, Any] | None = None, out: str | Path = "results", *,
            device: str = "auto", executor: str | None = None, trackers: Sequence[str] = (),
            plugins: Sequence[str] = (), overrides: Sequence[str] | Mapping[str, Any] = ()) -> Prepared:
    """Load ``suite`` (a packaged name, default ``quick``; a YAML path; or a mapping as the YAML
    would give it), apply ``overrides`` (``["train.epochs=1"]`` or ``{"train.epochs": 1}``), add
    ``trackers``, and check everything before anything trains (what ``--dry-run`` does)."""
    from mimbench.jobs import PluginSources
    from mimbench.planning import build_executor, check_device, check_plan, check_trackers, plan_suite
    from mimbench.recipes import recipe_warnings
    from mimbench.runtime import registry_for, Runtime
    from mimbench.suite import load_suite, origin_of

    sources = PluginSources.from_cli(tuple(plugins))
    registry = registry_for(sources)
    spec = load_suite(suite if isinstance(suite, Mapping) or suite is None else str(suite), _overrides(overrides),
                      executor=executor, trackers=tuple(trackers))
    plan = plan_suite(spec, registry, origin_of(suite))
    out = Path(out)
    if out.exists() and not out.is_dir() or any(p.exists() and not p.is_dir() for p in out.parents):
        raise ConfigError(f"--out {out}: not a folder (a file is in the way)")
    if out.is_symlink() and not out.exists():
        raise ConfigError(f"--out {out}: a broken symbolic link (to {out.readlink()}); make its target "
                          f"folder, or choose another --out")
    out = out.absolute()
    runner = build_executor(registry, spec, out / spec.name)
    check_trackers(plan, registry, out / spec.name)
    runtime = Runtime(sources, check_device(device, runner))
    data = check_plan(plan, runtime)
    return Prepared(plan, runtime, runner, data, out, device, recipe_warnings(plan, data, sources, runtime.device))


def _overrides(overrides: Sequence[str] | Mapping[str, Any]) -> tuple[str, ...]:
    """``{"train.epochs": 1}`` -> ``("train.epochs=1",)`` (values as JSON, which the suite's YAML reads)."""
    if isinstance(overrides, Mapping):
        return tuple(f"{key}={json.dumps(value)}" for key, value in overrides.items())
    if isinstance(overrides, str):
        return (overrides,)
    return tuple(overrides)


def execute(prepared: Prepared, fresh: bool = False, rerun_changed: bool = False,
            rerun: Sequence[str] = (), header: str = "") -> pd.DataFrame:
    """Run every unfinished job of a prepared suite; returns the summary as written to
    ``summary.csv``. A finished run whose components' code changed since is kept (with a note)
    unless ``rerun_changed``; ``rerun`` (``["masker=diagonal"]``, ``--rerun``) runs the matching
    finished runs again. ``header`` is printed once the suite's folder is taken, before anything
    trains (``mimbench run``'s first line). Ctrl-C stops the runs in flight and raises KeyboardInterrupt."""
    from mimbench.driver import run_suite
    from mimbench.reuse import ReusePolicy, check_selectors, parse_selectors

    policy = ReusePolicy(rerun_changed, parse_selectors(rerun))
    check_selectors(policy.rerun, prepared.plan.jobs)
    prepared.out.mkdir(parents=True, exist_ok=True)  # an OSError (no permission) is the machine's refusal
    return run_suite(prepared.plan, prepared.out, prepared.executor, prepared.runtime, prepared.device, fresh=fresh,
                     reuse=policy, header=header)


def run(suite: str | Path | Mapping[str, Any] | None = None, out: str | Path = "results", *, device: str = "auto",
        executor: str | None = None, trackers: Sequence[str] = (), plugins: Sequence[str] = (),
        overrides: Sequence[str] | Mapping[str, Any] = (), fresh: bool = False, report: bool = True,
        rerun_changed: bool = False, rerun: Sequence[str] = ()) -> pd.DataFrame:
    """Run a suite as ``mimbench run`` does (finished runs are skipped) and return its summary,
    typed as :func:`load` gives it. ``report``: write the tables, figures and report too (a
    failure there is a warning). See :func:`prepare` for the arguments, :func:`execute` for
    ``rerun_changed`` and ``rerun``."""
    prepared = prepare(suite, out, device=device, executor=executor, trackers=trackers, plugins=plugins,
                       overrides=overrides)
    for warning in prepared.warnings:
        warnings.warn(warning, stacklevel=2)
    execute(prepared, fresh=fresh, rerun_changed=rerun_changed, rerun=rerun)
    if report:
        from mimbench.report import write_report

        try:
            written = write_report(prepared.suite_dir)
        except Exception as exc:  # the runs are on disk; mimbench.load still reads them
            warnings.warn(f"the report could not be written ({type(exc).__name__}: {exc})", stacklevel=2)
        else:
            for warning in written.warnings:
                warnings.warn(warning, stacklevel=2)
    return load(prepared.suite_dir)


def load(results_dir: str | Path) -> pd.DataFrame:
    """A finished (or partly finished) suite's ``summary.csv``, one row per run and per baseline,
    with its column types (as in ``summary.parquet``): ``pretrained`` boolean, ``seed`` Int64,
    metrics Float64, names string. ``results_dir`` is the suite's folder, ``OUT/<suite name>``."""
    from mimbench.report.results import typed_summary

    return typed_summary(Path(results_dir))


def table(results_dir: str | Path) -> pd.DataFrame:
    """The suite's table, aggregated over seeds (``table.csv``'s rows): one row per configuration
    with ``<metric>_mean``, ``_std`` and ``_n``, run counts and gains over random-init."""
    from mimbench.report.results import read_results

    return read_results(Path(results_dir)).table


def comparisons(results_dir: str | Path, reference: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Every paired comparison of the suite's report (``comparisons.csv``'s rows): each
    configuration against its random-init encoder and, with ``reference`` (e.g. ``{"masker":
    "patch"}``; default: the suite's ``report.reference``), against that configuration; the mean
    paired difference, its 95% interval (:func:`mimbench.stats.mean_interval`) and the family-wise
    one, the paired win rate, with enough seeds the exact sign-flip p-value and Holm's adjusted p,
    and whether the difference is resolved."""
    from mimbench.report.comparisons import COLUMNS
    from mimbench.report.reference_names import check_reference
    from mimbench.report.results import read_results

    if reference is not None:
        check_reference(reference, "reference")
    return read_results(Path(results_dir), dict(reference) if reference else None).comparisons[COLUMNS]


def plot(results_dir: str | Path, figure: str = "probe_accuracy") -> "Figure":
    """One of the report's figures, drawn from the suite's files: ``comparisons``, ``probe_accuracy``,
    ``psnr``, ``compute``, ``psnr_vs_accuracy``, ``loss_curves``, ``reconstructions``, ``label_efficiency`` and
    ``sweep_<param>`` where the suite has them. Returns a matplotlib Figure (Jupyter shows it;
    ``fig.savefig(path)`` writes it)."""
    from mimbench.report.figure_plan import figures

    available = figures(Path(results_dir))
    if figure not in available:
        raise ConfigError(f"unknown figure {figure!r} (this suite has: {', '.join(available)})")
    drawn = available[figure]()
    if drawn is None:
        raise ConfigError(f"figure {figure!r}: nothing to draw for {results_dir} (no finished run has what it shows)")
    return drawn


def load_encoder(run_dir: str | Path, *, plugins: Sequence[str] = (), device: str = "cpu") -> "torch.nn.Module":
    """A finished run's trained encoder (``run_dir`` is ``OUT/<suite>/runs/<run_id>``): built from the
    run's ``config.json`` through the registry (``plugins`` as for :func:`run`: the encoder's plugin,
    if not installed), with the weights of its ``encoder.pt``, on ``device`` (``auto``, ``cpu``,
    ``cuda`` or ``cuda:N``), in eval mode. It maps images normalised with the run's
    ``config.json["normalization"]`` to the feature grid [B, dim, h, w]. A folder without
    ``encoder.pt`` (a baseline, a run that failed or has not finished) is a ConfigError."""
    from mimbench.export import build_run_encoder
    from mimbench.jobs import PluginSources
    from mimbench.runtime import registry_for, resolve_device

    target = resolve_device(device)  # a bad device is a ConfigError before anything is read
    encoder, _ = build_run_encoder(Path(run_dir), registry_for(PluginSources.from_cli(tuple(plugins))))
    return encoder.to(target).eval()
