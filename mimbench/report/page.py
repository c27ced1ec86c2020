"""``report.md`` and ``report.html`` for a finished suite folder, with the tables and figures they show.

:func:`write_report` is what ``mimbench report RESULTS_DIR`` and the end of ``mimbench run``
call; :func:`read_results` and :func:`figures` are what the Python API (:mod:`mimbench.api`) reads. Everything is computed from the run records on disk, read through :mod:`mimbench.store`
(``summary.csv``, ``columns.json``: the metric columns the core and the probes declare,
``suite.yaml``, each run's ``config.json``, ``history.csv`` and ``reconstructions.png``); every
file is written atomically. A figure that cannot be drawn becomes a warning in the report, not a
failure.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

import mimbench
from mimbench import store
from mimbench.columns import MetricColumn
from mimbench.report import comparisons, plots, render
from mimbench.report.aggregate import (ALL_LABELS, LABELS_PER_CLASS, aggregate, at_label_count, config_columns,
                                       failures, label_counts, label_runs, load_summary, param_text, varying_eval_columns)
from mimbench.report.tables import Value, headline_columns, table_note, to_markdown, write_tables
from mimbench.store import write_atomic

#: At most this many configurations in the reconstruction montage (the first seed of each).
MONTAGE_LIMIT = 24
#: Every paired comparison of the report, with its statistics.
COMPARISONS_FILE = "comparisons.csv"


@dataclass
class Report:
    """What :func:`write_report` wrote: the paths by name, and the warnings it met."""

    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def markdown(self) -> Path:
        return self.files["report.md"]

    @property
    def html(self) -> Path:
        return self.files["report.html"]


@dataclass
class _Figure:
    name: str
    title: str
    caption: str
    draw: Callable[[], Any]
    formats: tuple[str, ...] = ("png", "pdf")


@dataclass
class SuiteResults:
    """A finished suite as the report reads it: the typed summary, the declared metric columns,
    the suite as run, the params shown in columns of their own, the labelled runs and the table
    aggregated over seeds."""

    folder: Path
    name: str
    summary: pd.DataFrame
    declared: list[MetricColumn]
    suite: dict[str, Any]
    sweep: list[str]
    shown: list[str]
    runs: pd.DataFrame
    table: pd.DataFrame
    comparisons: pd.DataFrame  # see mimbench.report.comparisons.compare
    reference: dict[str, Any] | None = None


def read_results(suite_dir: Path, reference: dict[str, Any] | None = None) -> SuiteResults:
    """Read a suite folder; a missing folder or ``summary.csv`` raises :class:`~mimbench.errors.ConfigError`.
    ``reference``: the configuration the others are compared with (``--reference``); None: the
    suite's ``report.reference``."""
    suite_dir = Path(suite_dir)
    summary = load_summary(suite_dir)
    declared = store.read_columns(suite_dir, list(summary.columns))
    suite = store.read_suite_yaml(suite_dir)
    sweep = [key for key in (suite.get("sweep") or {}) if key in summary.columns]
    # params in a column of their own: the swept ones, and eval params that differ between rows
    # without being swept (they are in no component's label)
    shown = sweep + [key for key in varying_eval_columns(summary) if key not in sweep]
    if reference is None:
        reference = suite_reference(suite)
    runs = label_runs(summary)
    frame = comparisons.compare(summary, declared, reference)
    table = aggregate(summary, hide=tuple(shown), declared=declared)
    table = comparisons.mark_best(comparisons.with_intervals(table, frame), runs, declared)
    return SuiteResults(suite_dir, str(suite.get("name") or suite_dir.name), summary, declared, suite, sweep, shown,
                        runs, table, frame, reference)


def suite_reference(suite: dict[str, Any]) -> dict[str, Any] | None:
    """The suite's ``report.reference`` as written in its ``suite.yaml`` (None: none, or unreadable)."""
    report = suite.get("report")
    reference = report.get("reference") if isinstance(report, dict) else None
    if not isinstance(reference, dict) or not reference:
        return None
    comparisons.check_reference(reference, f"{store.SUITE_FILE}: report.reference")
    return reference


def figures(suite_dir: Path) -> dict[str, Callable[[], Any]]:
    """The report's figures by name (``probe_accuracy``, ``psnr``, ``loss_curves``...), each drawn
    when called: a matplotlib Figure, or None when the suite has nothing to show in it."""
    results = read_results(suite_dir)
    plan = _figure_plan(results.folder, results.runs, results.table, results.sweep, results.suite, results.declared,
                        results.comparisons)
    return {figure.name: figure.draw for figure in plan}


def write_report(suite_dir: Path, reference: dict[str, Any] | None = None) -> Report:
    """Write the tables (``table.csv``, ``table.md``, ``table.tex``, ``summary.parquet``),
    ``comparisons.csv``, the figures (``figures/*.png`` and ``.pdf``), ``report.md`` and
    ``report.html`` into ``suite_dir``; ``reference`` as for :func:`read_results`. A missing
    folder or ``summary.csv`` raises :class:`~mimbench.errors.ConfigError`."""
    results = read_results(suite_dir, reference)
    suite_dir, summary, declared, runs, table = results.folder, results.summary, results.declared, results.runs, \
        results.table
    report = Report(suite_dir)
    report.warnings += unreadable_runs(suite_dir, runs)
    files, warnings = write_tables(summary, table, suite_dir, results.shown, results.name, declared)
    report.files.update(files)
    report.warnings += warnings
    write_atomic(suite_dir / COMPARISONS_FILE, comparisons.to_csv(results.comparisons))
    report.files[COMPARISONS_FILE] = suite_dir / COMPARISONS_FILE
    configs = _read_configs(suite_dir, runs["run_id"])
    figures = _draw_figures(_figure_plan(suite_dir, runs, table, results.sweep, results.suite, declared,
                                         results.comparisons),
                            suite_dir / "figures", report)
    blocks = _blocks(results.name, results.suite, summary, runs, table, results.shown, configs, figures, report,
                     declared)
    at = next(i for i, block in enumerate(blocks) if isinstance(block, render.Heading) and block.text == "Baselines")
    blocks[at:at] = _comparison_blocks(results.comparisons, declared, results.reference)
    write_atomic(suite_dir / "report.md", render.to_markdown(blocks))
    report.files["report.md"] = suite_dir / "report.md"
    write_atomic(suite_dir / "report.html", render.to_html(blocks, f"mimbench report: {results.name}", suite_dir))
    report.files["report.html"] = suite_dir / "report.html"
    return report


def unreadable_runs(suite_dir: Path, runs: pd.DataFrame) -> list[str]:
    """A warning for each run of the summary whose ``metrics.json``, ``config.json`` or
    ``history.csv`` cannot be read, naming it: the report shows what ``summary.csv`` recorded."""
    warnings = []
    for run_id, label in zip(runs["run_id"].astype(str), runs["label"]):
        folder = store.run_path(suite_dir, run_id)
        reasons = store.unreadable(folder)
        rerun = "; `mimbench run` sets its folder aside and runs it again" if reasons else ""
        try:
            store.read_history(folder / store.HISTORY_FILE)
        except (OSError, ValueError, TypeError) as exc:
            reasons.append(f"{store.HISTORY_FILE} cannot be read ({type(exc).__name__}), its loss curve is left out")
        if reasons:
            warnings.append(f"run {run_id} ({label}): {'; '.join(reasons)}; this report shows what "
                            f"{store.SUMMARY_FILE} recorded for it{rerun}")
    return warnings


def _read_configs(suite_dir: Path, run_ids) -> dict[str, dict[str, Any]]:
    configs = {}
    for run_id in run_ids:
        try:
            configs[str(run_id)] = store.read_config(store.run_path(suite_dir, str(run_id)))
        except (OSError, ValueError):
            continue
    return configs


def _histories(suite_dir: Path, runs: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for _, row in runs[runs["pretrained"] & runs["status"].isin(["done", "diverged"])].iterrows():
        path = store.run_path(suite_dir, str(row["run_id"]), store.HISTORY_FILE)
        try:
            history = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):  # ValueError: not UTF-8
            continue
        if {"epoch", "loss"} <= set(history.columns):
            frames.append(history[["epoch", "loss"]].assign(label=row["label"], loss_name=row["loss"], seed=row["seed"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["epoch", "loss", "label",
                                                                                     "loss_name", "seed"])


def _montage_images(suite_dir: Path, runs: pd.DataFrame) -> list[tuple[str, Path]]:
    """(label, reconstructions.png) of the first finished seed of each configuration, in suite order."""
    done = runs[runs["pretrained"] & (runs["status"] == "done")]
    first = done.sort_values("seed", kind="stable").drop_duplicates("config_id").set_index("config_id")
    return [(f"{first.at[c, 'label']} (seed {first.at[c, 'seed']})",
             store.run_path(suite_dir, str(first.at[c, "run_id"]), store.RECONSTRUCTIONS_FILE))
            for c in list(dict.fromkeys(done["config_id"]))[:MONTAGE_LIMIT]]


def _figure_plan(suite_dir: Path, runs: pd.DataFrame, table: pd.DataFrame, sweep: list[str],
                 suite: dict[str, Any], declared: Sequence[MetricColumn],
                 frame: pd.DataFrame | None = None) -> list[_Figure]:
    """The report's figures, each drawn lazily (so that one failure does not stop the others).

    When the probes ran with several label counts (``eval.labels_per_class``), the label-efficiency
    figure shows them all; the other figures show the runs of one count (all labels, else the
    largest), so that no mean mixes label counts."""
    counts = label_counts(runs[runs["status"] == "done"])
    everything = runs
    one_count = ""
    if len(counts) > 1:
        count = counts[-1]  # None (all labels) sorts last
        runs = label_runs(at_label_count(runs, count), hide=(LABELS_PER_CLASS,))
        table = at_label_count(table, count)
        sweep = [p for p in sweep if p != LABELS_PER_CLASS]
        one_count = (f" The runs whose probes saw {'all labels' if count is None else f'{count} labels per class'} "
                     f"(`{LABELS_PER_CLASS}` = {param_text(LABELS_PER_CLASS, count)}); the label-efficiency figure "
                     "shows every label count.")
    labelled = aggregate(runs, declared=declared)  # labels with the swept values, as on the plots' axes
    reference = (suite.get("eval") or {}).get("reference_masker")
    reference_text = f" The reference masker is `{_spec(reference)}`." if reference else ""
    plan = [
        _Figure("probe_accuracy", "Probe accuracy per masker",
                "Bars: mean over finished seeds, error bars ± 1 std (ddof = 1); one colour per encoder. "
                "Horizontal lines: the baselines (dashed: the same encoder with random weights; dotted grey: raw pixels)."
                + one_count, lambda: plots.probe_accuracy_figure(runs, declared)),
        _Figure("psnr", "Reconstruction PSNR per masker",
                "PSNR of the hidden pixels in [0, 1] pixel space, mean over test images, then mean ± 1 std over seeds. "
                "Under its own masker each run hides different pixels; the reference masker scores every run on the "
                f"same masks.{reference_text} The y axis does not start at 0." + one_count,
                lambda: plots.psnr_figure(runs, declared)),
        _Figure("compute", "Accuracy against compute",
                "One point per pre-trained configuration: its pre-training FLOPs (`train_flops`: matrix products, "
                "convolutions and attention of encoder, decoder and loss, forward and backward, counted on one real "
                "step; log scale) and its accuracy, mean over finished seeds with the 95% bootstrap interval of that "
                "mean. The line joins the Pareto front: the configurations that no cheaper one beats. Horizontal "
                "lines: the baselines, which cost no pre-training." + one_count,
                lambda: plots.compute_figure(runs, declared)),
        _Figure("psnr_vs_accuracy", "Does better reconstruction mean better features?",
                "One point per pre-trained configuration, error bars ± 1 std over seeds. Spearman's ρ is over the "
                "configurations' means." + one_count, lambda: plots.psnr_vs_accuracy_figure(labelled, declared)),
    ]
    if frame is not None and not frame.empty:
        plan.insert(0, _Figure(
            "comparisons", "Every comparison with its interval",
            "Every paired comparison of the report (comparisons.csv): the mean difference over the seeds both "
            "configurations finished (configuration − reference; per labels per class where swept), its 95% "
            "bootstrap confidence interval (BCa, 9,999 resamples of the seed pairs), and the dashed line at no "
            "difference. Filled markers: significant after Holm's correction (exact sign-flip test; needs 6 or more "
            "seeds). An interval that crosses the line is no evidence either way.",
            lambda: plots.comparisons_figure(frame, declared)))
    if len(counts) > 1:
        plan.insert(0, _Figure(
            "label_efficiency", "Label efficiency",
            "Accuracy against the number of labelled training images per class the probes saw (log scale; "
            f"`{LABELS_PER_CLASS}`, \"{ALL_LABELS}\" = the whole train split, its images per class on average). "
            "One line per pre-trained configuration: mean over finished seeds, band ± 1 std (ddof = 1). Dashed: the "
            "same encoder with random weights (random-init; under fine-tuning, training from scratch); dotted grey: "
            "raw pixels (nothing to fine-tune). The labelled images are a class-balanced subset of the train split, "
            "the same for every run and baseline of a seed; every score is on the full test split.",
            lambda: plots.label_efficiency_figure(everything, declared)))
    for param in sweep:
        others = [p for p in sweep if p != param]
        plan.append(_Figure(f"sweep_{re.sub(r'[^A-Za-z0-9]+', '_', param)}", f"Metrics against `{param}`",
                            f"One line per configuration; mean ± 1 std over seeds at each value of the swept `{param}`."
                            + one_count,
                            lambda p=param, o=others: plots.sweep_figure(table, p, declared, other_sweeps=o)))
    plan.append(_Figure("loss_curves", "Pre-training loss",
                        f"From each run's `{store.HISTORY_FILE}`: mean over seeds per epoch, band ± 1 std. Runs that diverged "
                        "are drawn up to their last finite loss." + one_count,
                        lambda: plots.loss_curves_figure(_histories(suite_dir, runs))))
    plan.append(_Figure("reconstructions", "Reconstructions",
                        f"Each run's `{store.RECONSTRUCTIONS_FILE}` (the first finished seed of each configuration"
                        + (f", at most {MONTAGE_LIMIT}" if runs["config_id"].nunique() > MONTAGE_LIMIT else "")
                        + "), on the same test images and evaluation masks." + one_count,
                        lambda: plots.reconstruction_montage(_montage_images(suite_dir, runs)),
                        ("png",)))  # pictures: a PDF would only wrap the same pixels
    return plan


def _draw_figures(plan: list[_Figure], folder: Path, report: Report) -> list[tuple[_Figure, Path]]:
    drawn = []
    for figure in plan:
        try:
            fig = figure.draw()
            if fig is None:
                continue
            paths = plots.save_figure(fig, folder / figure.name, figure.formats)
        except Exception as exc:  # one broken figure must not cost the report
            report.warnings.append(f"figure {figure.name!r} not drawn: {type(exc).__name__}: {exc}")
            continue
        for path in paths:
            report.files[f"figures/{path.name}"] = path
        drawn.append((figure, paths[0].relative_to(folder.parent)))
    return drawn


def _spec(spec: Any) -> str:
    if not isinstance(spec, dict):
        return str(spec)
    params = ", ".join(f"{k}={v}" for k, v in (spec.get("params") or {}).items())
    return f"{spec.get('name')}({params})" if params else str(spec.get("name"))


def _blocks(name: str, suite: dict[str, Any], summary: pd.DataFrame, runs: pd.DataFrame, table: pd.DataFrame,
            shown: list[str], configs: dict[str, dict[str, Any]], figures: list[tuple[_Figure, Path]],
            report: Report, declared: Sequence[MetricColumn]) -> list[render.Block]:
    folder = report.folder
    counts = runs["status"].value_counts()
    status = ", ".join(f"{counts[s]} {s}" for s in ("done", "diverged", "failed", "pending") if s in counts)
    blocks: list[render.Block] = [render.Heading(f"{name}: mimbench report", 1)]
    if suite.get("description"):
        blocks.append(render.Paragraph(str(suite["description"])))
    blocks.append(render.Paragraph(
        f"Generated by mimbench {mimbench.__version__} from `{store.SUMMARY_FILE}` of {_written_on(folder)}: "
        f"{len(runs)} runs ({status}), {int(runs['pretrained'].sum())} of them pre-trained, "
        f"{_configurations(table)} × {runs['seed'].nunique()} seeds."))
    blocks += _setup_blocks(suite) + _environment_blocks(runs, configs)
    blocks += [render.Heading("Results"), render.Paragraph(table_note(shown)),
               _markdown_table(to_markdown(table, shown, declared)),
               render.Paragraph("Every metric (mask statistics, per-block probes, timings), with `_mean`, `_std` and "
                                "`_n` columns: [table.csv](table.csv); for LaTeX: [table.tex](table.tex) (booktabs); "
                                f"one row per run: [{store.SUMMARY_FILE}]({store.SUMMARY_FILE})"
                                + (", [summary.parquet](summary.parquet)." if "summary.parquet" in report.files else "."))]
    if "recon_uses_target_stats" in runs.columns and runs["recon_uses_target_stats"].map(_truthy).any():
        marked = sorted(set(runs.loc[runs["recon_uses_target_stats"].map(_truthy), "label"]))
        blocks.append(render.Paragraph("**Note:** these configurations were trained on per-patch normalised targets "
                                       "(`norm_pix`); their PSNR uses the target's statistics and is optimistic, not "
                                       "comparable with the others: " + "; ".join(f"`{m}`" for m in marked) + "."))
    blocks += _baseline_blocks(table, declared, shown) + _figure_blocks(figures) + _failure_blocks(runs) + _warning_blocks(report)
    return blocks


def _comparison_blocks(frame: pd.DataFrame, declared: Sequence[MetricColumn],
                       reference: dict[str, Any] | None) -> list[render.Block]:
    """"Is the difference real?": what the seeds can tell, the differences whose interval excludes
    0, and the comparisons with the reference configuration."""
    blocks: list[render.Block] = [render.Heading("Is the difference real?")]
    if frame.empty:
        return blocks + [render.Paragraph("No paired comparison: no configuration has a finished baseline or reference "
                                          "on a common seed.")]
    names = {c.key: c for c in declared}
    lines = comparisons.seeds_lines(frame, declared)
    against = {comparisons.RANDOM_INIT: "Against random-init", comparisons.PIXELS: "Against raw pixels",
               comparisons.REFERENCE: f"Against the reference configuration {comparisons.format_reference(reference or {})}"}
    blocks.append(render.Paragraph(
        "Each configuration is compared with its random-init encoder, with raw pixels"
        + (f" and with the reference configuration {comparisons.format_reference(reference)}" if reference else "")
        + ", paired by seed: the mean difference and its 95% bootstrap confidence interval; every statistic is in "
          f"[{COMPARISONS_FILE}]({COMPARISONS_FILE})."))
    blocks.append(render.Bullets([f"**{against[family]}**: {line}" for family, line in lines.items()]))
    clear = frame[(frame["ci_low"] > 0) | (frame["ci_high"] < 0)]
    if len(clear):
        items = [f"{row.configuration} vs {row.reference}, {_metric_name(names, row.metric)}"
                 + _labels_text(row.labels_per_class) + f": {_interval_text(row, names)}"
                 for row in clear.itertuples(index=False)]
        blocks.append(render.Paragraph(f"{len(clear)} of {len(frame)} differences have an interval that excludes 0:"))
        blocks.append(render.Bullets(items))
    else:
        blocks.append(render.Paragraph(f"None of the {len(frame)} differences has an interval that excludes 0."))
    chosen = frame[frame["family"] == comparisons.REFERENCE]
    if len(chosen):
        rows = [[row.configuration, row.reference, _metric_name(names, row.metric),
                 _labels_text(row.labels_per_class).removeprefix(" (").removesuffix(" labels/class)") or "–",
                 str(row.n), _interval_text(row, names), f"{row.p_improvement:.2f}", _p_text(row.p_value),
                 _p_text(row.p_holm)] for row in chosen.itertuples(index=False)]
        blocks += [render.Heading("Against the reference configuration", 3),
                   render.Table(["configuration", "reference", "metric", "labels/class", "n", "Δ [95% CI]",
                                 "P(improvement)", "p", "p (Holm)"], rows,
                                [False, False, False, True, True, True, True, True, True])]
    return blocks


def _metric_name(names: dict[str, MetricColumn], key: str) -> str:
    column = names.get(key)
    return column.name if column else key


def _labels_text(labels: Any) -> str:
    if labels is None or (isinstance(labels, float) and pd.isna(labels)):
        return ""
    return f" ({int(labels) if isinstance(labels, float) else labels} labels/class)"


def _interval_text(row: Any, names: dict[str, MetricColumn]) -> str:
    column = names.get(row.metric)
    digits = column.digits if column else 3
    text = f"{row.mean_diff:+.{digits}f}"
    if row.ci_low is not None and pd.notna(row.ci_low):
        text += f" [{row.ci_low:+.{digits}f}, {row.ci_high:+.{digits}f}]"
    return text + ("*" if row.significant is True else "")


def _p_text(p: Any) -> str:
    return "–" if p is None or pd.isna(p) else f"{p:.3g}"


def _written_on(folder: Path) -> str:
    """When the summary was last written (the same folder, the same report: no clock time)."""
    try:
        return dt.datetime.fromtimestamp((folder / store.SUMMARY_FILE).stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    except OSError:
        return "unknown date"


def _configurations(table: pd.DataFrame) -> str:
    """"N pre-trained configurations", and "× K label counts" when the probes saw several."""
    counts = label_counts(table)
    if len(counts) < 2:
        return f"{table['pretrained'].sum()} pre-trained configurations"
    pretrained = table[table["pretrained"]]
    configs = len(pretrained.drop_duplicates([c for c in config_columns(pretrained) if c != LABELS_PER_CLASS]))
    return f"{configs} pre-trained configurations × {len(counts)} label counts"


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1")


def _markdown_table(text: str) -> render.Table:
    """Parse the table markdown back into cells, so the report shows exactly table.md's table."""
    lines = [line for line in text.strip().splitlines()]
    split = [[cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    return render.Table(split[0], split[2:], [cell.endswith(":") for cell in split[1]])


def _setup_blocks(suite: dict[str, Any]) -> list[render.Block]:
    if not suite:
        return [render.Heading("Setup"), render.Paragraph(f"No `{store.SUITE_FILE}` next to the results.")]
    evaluation = suite.get("eval") or {}
    items = [f"**dataset**: `{_spec(suite.get('dataset'))}`, images resized to {suite.get('image_size')} px",
             f"**seeds**: {', '.join(str(s) for s in suite.get('seeds', []))}",
             "**pre-training**: " + ", ".join(f"{k} {v}" for k, v in (suite.get("train") or {}).items())]
    grids = suite.get("grid") if isinstance(suite.get("grid"), list) else [suite.get("grid") or {}]
    for i, grid in enumerate(grids):
        prefix = f"grid {i + 1}: " if len(grids) > 1 else ""
        items.append(f"**{prefix}grid**: " + "; ".join(
            f"{axis} " + ", ".join(f"`{_spec(s)}`" for s in (specs if isinstance(specs, list) else [specs]))
            for axis, specs in grid.items()))
    if suite.get("sweep"):
        items.append("**sweep** (crossed with the grid): " + "; ".join(
            f"`{k}` ∈ {{{', '.join(param_text(k, v) for v in vals)}}}" for k, vals in suite["sweep"].items()))
    probes = evaluation.get("probes") or []
    items.append("**probes**: " + (", ".join(f"`{_spec(p)}`" for p in probes) if probes else "none"))
    swept_labels = LABELS_PER_CLASS in (suite.get("sweep") or {})
    if swept_labels or evaluation.get("labels_per_class") is not None:
        count = "swept, see above" if swept_labels else str(evaluation["labels_per_class"])
        items.append(f"**labels per class** for the probes: {count} (a class-balanced subset of the train split, "
                     "the same for every run and baseline of a seed; scores on the full test split)")
    if evaluation.get("reference_masker"):
        items.append(f"**reference masker**: `{_spec(evaluation['reference_masker'])}`, evaluation masks seeded "
                     f"with {evaluation.get('mask_seed', 0)}")
    items.append("**baselines**: " + (", ".join(evaluation.get("baselines") or []) or "none"))
    if evaluation.get("dataset"):
        items.append(f"**probe dataset**: `{_spec(evaluation['dataset'])}`")
    return [render.Heading("Setup"), render.Bullets(items),
            render.Paragraph(f"The suite as run, every default written out: [{store.SUITE_FILE}]({store.SUITE_FILE}).")]


def _environment_blocks(runs: pd.DataFrame, configs: dict[str, dict[str, Any]]) -> list[render.Block]:
    def distinct(get: Callable[[dict], Any]) -> str:
        values = sorted({str(get(c)) for c in configs.values() if get(c) is not None})
        return ", ".join(values) if values else "not recorded"

    items = [f"**device**: {distinct(lambda c: c.get('device'))}"]
    for key in ("mimbench", "torch", "python", "platform"):
        items.append(f"**{key}**: {distinct(lambda c, k=key: (c.get('versions') or {}).get(k))}")
    plugins = sorted({f"{name} ({provider})" for c in configs.values()
                      for name, provider in ((c.get("versions") or {}).get("plugins") or {}).items()})
    if plugins:
        items.append("**plugins**: " + ", ".join(plugins))
    seconds = {column: runs[column].sum() for column in ("wall_seconds", "train_seconds", "probe_seconds")
               if column in runs.columns and runs[column].notna().any()}
    if seconds:
        items.append("**compute**: " + ", ".join(
            f"{_duration(value)} {label}" for column, label in (("wall_seconds", "wall time"), ("train_seconds",
                                                                "pre-training"), ("probe_seconds", "probes"))
            if (value := seconds.get(column)) is not None) + " (summed over runs)")
    return [render.Heading("Environment"), render.Bullets(items)]


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _baseline_blocks(table: pd.DataFrame, declared: Sequence[MetricColumn],
                     shown: Sequence[str] = ()) -> list[render.Block]:
    baselines = table[~table["pretrained"]]
    params = [p for p in shown if p.startswith("eval.") and p in baselines.columns]  # baselines are evaluated so too
    blocks: list[render.Block] = [render.Heading("Baselines")]
    if baselines.empty:
        return blocks + [render.Paragraph("The suite ran no baselines (`eval.baselines` is empty, or no probes ran).")]
    metrics = [c for c in headline_columns(declared) if not c.signed and f"{c.key}_mean" in baselines.columns
               and baselines[f"{c.key}_mean"].notna().any()]
    rows = []
    for _, row in baselines.iterrows():
        kind = "raw pixels" if row["encoder_label"] == "pixels" else str(row["baseline"])
        encoder = "–" if row["encoder_label"] == "pixels" else str(row["encoder_label"])
        n = str(row["n_done"]) if row["n_done"] == row["n_runs"] else f"{row['n_done']}/{row['n_runs']}"
        values = [Value(row[f"{c.key}_mean"], row[f"{c.key}_std"], c.digits, False, False).text()
                  if pd.notna(row[f"{c.key}_mean"]) else "–" for c in metrics]
        rows.append([kind, encoder, *[param_text(p, row[p]) for p in params], n, *values])
    return blocks + [
        render.Paragraph("`random-init`: the same encoder architecture with its initial random weights (same seed), "
                         "probed exactly like the pre-trained encoders; `pixels`: the probes on the raw images. "
                         "Pre-training is worth something when it beats both. Mean ± std over seeds, as above."),
        render.Table(["baseline", "encoder", *params, "n", *[c.markdown for c in metrics]], rows,
                     [False, False, *[True] * len(params), True] + [True] * len(metrics)),
    ]


def _figure_blocks(figures: list[tuple[_Figure, Path]]) -> list[render.Block]:
    blocks: list[render.Block] = [render.Heading("Figures")]
    if not figures:
        return blocks + [render.Paragraph("Nothing to plot: no run finished.")]
    for figure, path in figures:
        pdf = path.with_suffix(".pdf").as_posix()
        vector = f" Vector version: [{pdf}]({pdf})." if "pdf" in figure.formats else ""
        blocks += [render.Heading(figure.title, 3), render.Image(path, figure.title, figure.caption + vector)]
    return blocks


def _failure_blocks(runs: pd.DataFrame) -> list[render.Block]:
    bad = failures(runs)
    blocks: list[render.Block] = [render.Heading("Failures")]
    if bad.empty:
        return blocks + [render.Paragraph(f"None: all {len(runs)} runs finished.")]
    rows = [[f"`{r.run_id}`", r.label, str(r.seed), r.status, r.reason] for r in bad.itertuples(index=False)]
    return blocks + [
        render.Paragraph(f"{len(bad)} of {len(runs)} runs did not finish. They count in n's denominator and in no "
                         "mean. Running the same `mimbench run` command again retries failed and pending runs; "
                         f"details are in `{store.run_path(Path(), '<run_id>', store.ERROR_FILE).as_posix()}`."),
        render.Table(["run", "configuration", "seed", "status", "reason"], rows, [False, False, True, False, False]),
    ]


def _warning_blocks(report: Report) -> list[render.Block]:
    if not report.warnings:
        return []
    return [render.Heading("Report warnings"), render.Bullets(list(report.warnings))]
