"""The report's figures: which ones a suite gets, their titles and captions (:func:`figure_plan`),
each drawn lazily, so that one failure does not stop the others; :func:`figures` for the Python
API, and :func:`draw_figures` for the report, which turns a figure that cannot be drawn into a
warning."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from mimbench import stats
from mimbench.columns import MetricColumn
from mimbench.folder import HISTORY_FILE, RECONSTRUCTIONS_FILE, SuiteFolder
from mimbench.report import canvas, comparisons, curves, diagnostic_plots, interval_plots, plots
from mimbench.labels import ALL_LABELS, LABELS_PER_CLASS, param_text
from mimbench.report.aggregate import aggregate, at_label_count, label_counts
from mimbench.report.labelled import view
from mimbench.report.results import MONTAGE_LIMIT, histories, montage_images, read_results, spec_text
from mimbench.report.written import Report
from mimbench.specs import Status


@dataclass
class ReportFigure:
    """One figure of the report: its file name (without suffix), title, caption, how to draw it
    (a matplotlib Figure, or None: nothing to show) and the formats it is saved in."""

    name: str
    title: str
    caption: str
    draw: Callable[[], Any]
    formats: tuple[str, ...] = ("png", "pdf")


def figures(suite_dir: Path) -> dict[str, Callable[[], Any]]:
    """The report's figures by name (``probe_accuracy``, ``psnr``, ``loss_curves``...), each drawn
    when called: a matplotlib Figure, or None when the suite has nothing to show in it."""
    results = read_results(suite_dir)
    plan = figure_plan(results.folder, results.runs, results.table, results.sweep, results.suite, results.declared,
                       results.comparisons)
    return {figure.name: figure.draw for figure in plan}


def figure_plan(suite_dir: Path, runs: pd.DataFrame, table: pd.DataFrame, sweep: list[str],
                suite: dict[str, Any], declared: Sequence[MetricColumn],
                frame: pd.DataFrame | None = None) -> list[ReportFigure]:
    """The report's figures, each drawn lazily (so that one failure does not stop the others).

    When the probes ran with several label counts (``eval.labels_per_class``), the label-efficiency
    figure shows them all; the other figures show the runs of one count (all labels, else the
    largest), so that no mean mixes label counts."""
    counts = label_counts(runs[runs["status"] == Status.DONE])
    everything = runs
    one_count = ""
    if len(counts) > 1:
        runs, table, sweep, one_count = _at_one_count(runs, table, sweep, counts[-1])  # None (all labels) sorts last
    labelled = aggregate(runs, declared=declared)  # labels with the swept values, as on the plots' axes
    reference = (suite.get("eval") or {}).get("reference_masker")
    reference_text = f" The reference masker is `{spec_text(reference)}`." if reference else ""
    plan = _headline_figures(runs, labelled, declared, one_count, reference_text)
    if frame is not None and not frame.empty:
        plan.insert(0, _comparisons_figure(frame, declared))
    if len(counts) > 1:
        plan.insert(0, _label_efficiency_figure(everything, declared))
    plan += _sweep_figures(table, sweep, declared, one_count)
    plan += _diagnostic_figures(runs, one_count)
    plan.append(_loss_figure(suite_dir, runs, one_count))
    plan.append(_montage_figure(suite_dir, runs, one_count))
    for picture, (title, probe, caption) in PROBE_PICTURES.items():
        if any(path.is_file() for _, path in montage_images(suite_dir, runs, picture, baselines=True)):
            plan.append(_probe_picture_figure(suite_dir, runs, one_count, picture, title, probe, caption))
    return plan


def _at_one_count(runs: pd.DataFrame, table: pd.DataFrame, sweep: list[str],
                  count: Any) -> tuple[pd.DataFrame, pd.DataFrame, list[str], str]:
    """The runs, table and swept params of one label count, and the sentence the captions add."""
    runs = view(at_label_count(runs, count), "budget")
    table = at_label_count(table, count)
    sweep = [p for p in sweep if p != LABELS_PER_CLASS]
    one_count = (f" The runs whose probes saw {'all labels' if count is None else f'{count} labels per class'} "
                 f"(`{LABELS_PER_CLASS}` = {param_text(LABELS_PER_CLASS, count)}); the label-efficiency figure "
                 "shows every label count.")
    return runs, table, sweep, one_count


def _headline_figures(runs: pd.DataFrame, labelled: pd.DataFrame, declared: Sequence[MetricColumn],
                      one_count: str, reference_text: str) -> list[ReportFigure]:
    """Probe accuracy, PSNR, accuracy against compute, and PSNR against accuracy."""
    return [
        ReportFigure("probe_accuracy", "Probe accuracy per masker",
                     "Bars: mean over finished seeds, error bars ± 1 std (ddof = 1); one colour per encoder. "
                     "Horizontal lines: the baselines (dashed: the same encoder with random weights; dotted grey: raw "
                     "pixels)." + one_count, lambda: plots.probe_accuracy_figure(runs, declared)),
        ReportFigure("psnr", "Reconstruction PSNR per masker",
                     "PSNR of the hidden pixels in [0, 1] pixel space, mean over test images; per configuration the "
                     "mean over finished seeds with its 95% " + stats.INTERVAL_METHOD + " (over the seeds' values), and each seed as a dot. Under "
                     "its own masker each run hides different pixels; the reference masker scores every run on the "
                     f"same masks.{reference_text} The y axis is zoomed to the data and does not start at 0, so the "
                     "values are drawn as points, not bars." + one_count,
                     lambda: plots.psnr_figure(runs, declared)),
        ReportFigure("compute", "Accuracy against compute",
                     "One point per pre-trained configuration: its pre-training FLOPs (`train_flops`: matrix products, "
                     "convolutions and attention of encoder, decoder and loss, forward and backward, counted on one "
                     "real step; log scale) and its accuracy, mean over finished seeds with the 95% "
                     + stats.INTERVAL_METHOD + " of that mean."
                     " The line joins the Pareto front: the configurations that no cheaper one beats. "
                     "Horizontal lines: the baselines, which cost no pre-training." + one_count,
                     lambda: interval_plots.compute_figure(runs, declared)),
        ReportFigure("psnr_vs_accuracy", "Does better reconstruction mean better features?",
                     "One point per pre-trained configuration, error bars ± 1 std over seeds. Spearman's ρ is over "
                     "the configurations' means, with its 95% interval (Fisher's z, Bonett-Wright standard error), its "
                     "permutation p-value (exact up to 8 configurations) and n; with fewer than 5 configurations no "
                     "correlation is claimed. Configurations are not independent samples of anything: read ρ as a "
                     "description of this suite." + one_count,
                     lambda: plots.psnr_vs_accuracy_figure(labelled, declared)),
    ]


def _diagnostic_figures(runs: pd.DataFrame, one_count: str) -> list[ReportFigure]:
    """Attention distance against depth and the CKA heatmap, for a suite with diagnostics."""
    if not any(c.startswith(("attn_distance@", "cka@")) for c in runs.columns):
        return []
    return [
        ReportFigure("attention_distance", "Attention distance against depth",
                     "Per block, the mean over heads, query tokens and images (the first images of the train split, "
                     "unmasked) of the attention-weighted distance in pixels between patch centres (the `diagnostics` "
                     "probe); one line per configuration and baseline, mean over finished seeds, band ± 1 std. "
                     "Uniform attention over the grid gives the mean distance between patches; 0 is each token "
                     "attending to itself." + one_count, lambda: diagnostic_plots.attention_depth_figure(runs)),
        ReportFigure("cka", "CKA of each block with the last",
                     "Linear CKA (Kornblith et al. 2019) between each block's mean-pooled features and the last "
                     "block's, on every train image; mean over finished seeds. 1: the same representation up to a "
                     "rotation and scale." + one_count, lambda: diagnostic_plots.cka_figure(runs)),
    ]


def _comparisons_figure(frame: pd.DataFrame, declared: Sequence[MetricColumn]) -> ReportFigure:
    return ReportFigure(
        "comparisons", "Every comparison with its interval",
        "Every paired comparison of the report (comparisons.csv): the mean difference over the seeds both "
        "configurations finished (configuration − reference; per labels per class where swept), its "
        + comparisons.interval_caption(frame)
        + ", taken on its own, and the dashed line at no difference. Filled markers: resolved with the whole table "
        "in view (significant after Holm's correction where the table has the seeds for it, else the family-wise "
        "interval excludes 0). An interval that "
        "crosses the line is no evidence either way.",
        lambda: interval_plots.comparisons_figure(frame, declared))


def _label_efficiency_figure(everything: pd.DataFrame, declared: Sequence[MetricColumn]) -> ReportFigure:
    return ReportFigure(
        "label_efficiency", "Label efficiency",
        "Accuracy against the number of labelled training images per class the probes saw (log scale; "
        f"`{LABELS_PER_CLASS}`, \"{ALL_LABELS}\" = the whole train split, its images per class on average). "
        "One line per pre-trained configuration: mean over finished seeds, band ± 1 std (ddof = 1). Dashed: the "
        "same encoder with random weights (random-init; under fine-tuning, training from scratch); dotted grey: "
        "raw pixels (nothing to fine-tune). The labelled images are a class-balanced subset of the train split, "
        "the same for every run and baseline of a seed; every score is on the full test split.",
        lambda: curves.label_efficiency_figure(everything, declared))


def _sweep_figures(table: pd.DataFrame, sweep: list[str], declared: Sequence[MetricColumn],
                   one_count: str) -> list[ReportFigure]:
    """One figure per swept param: the metrics against its values."""
    plan = []
    for param in sweep:
        others = [p for p in sweep if p != param]
        plan.append(ReportFigure(f"sweep_{re.sub(r'[^A-Za-z0-9]+', '_', param)}", f"Metrics against `{param}`",
                                 f"One line per configuration; mean ± 1 std over seeds at each value of the swept "
                                 f"`{param}`." + one_count,
                                 lambda p=param, o=others: plots.sweep_figure(table, p, declared, other_sweeps=o)))
    return plan


def _loss_figure(suite_dir: Path, runs: pd.DataFrame, one_count: str) -> ReportFigure:
    return ReportFigure("loss_curves", "Pre-training loss",
                        f"From each run's `{HISTORY_FILE}`: mean over seeds per epoch, band ± 1 std. Runs that "
                        "diverged are drawn up to their last finite loss." + one_count,
                        lambda: curves.loss_curves_figure(histories(suite_dir, runs)))


def _montage_figure(suite_dir: Path, runs: pd.DataFrame, one_count: str) -> ReportFigure:
    return ReportFigure("reconstructions", "Reconstructions",
                        f"Each run's `{RECONSTRUCTIONS_FILE}` (the first finished seed of each configuration"
                        + (f", at most {MONTAGE_LIMIT}" if runs["config_id"].nunique() > MONTAGE_LIMIT else "")
                        + "), on the same test images and evaluation masks." + one_count,
                        lambda: curves.reconstruction_montage(montage_images(suite_dir, runs)),
                        ("png",))  # pictures: a PDF would only wrap the same pixels


#: The pictures probes write to their runs' folders, each drawn as a montage: name -> (title, the
#: probe that writes it, caption).
PROBE_PICTURES = {
    "segmentations": ("Segmentations", "seg_linear", curves.SEGMENTATIONS_CAPTION),
    "detections": ("Detections", "detection", curves.DETECTIONS_CAPTION),
}


def _probe_picture_figure(suite_dir: Path, runs: pd.DataFrame, one_count: str, picture: str, title: str, probe: str,
                          caption: str) -> ReportFigure:
    pictures = [(label, path) for label, path in montage_images(suite_dir, runs, picture, baselines=True)
                if path.is_file()]
    return ReportFigure(picture, title,
                        f"Each run's `{picture}.png`, written by the {probe} probe (the first finished seed "
                        "of each configuration and baseline), on the same test images." + one_count,
                        lambda: curves.reconstruction_montage(pictures, caption=caption),
                        ("png",))


def draw_figures(plan: list[ReportFigure], folder: Path, report: Report) -> list[tuple[ReportFigure, Path]]:
    """Draw and save each figure of ``plan`` into ``folder``, adding its files to ``report.files``;
    one that cannot be drawn becomes a warning of ``report``. Returns the figures drawn, each with
    its PNG's path relative to the suite folder."""
    drawn = []
    for figure in plan:
        try:
            fig = figure.draw()
            if fig is None:
                continue
            rendered = canvas.figure_files(fig, figure.formats)
            paths = [SuiteFolder(folder.parent).write(f"{folder.name}/{figure.name}.{fmt}", data)
                     for fmt, data in rendered.items()]
        except Exception as exc:  # one broken figure must not cost the report
            report.warnings.append(f"figure {figure.name!r} not drawn: {type(exc).__name__}: {exc}")
            continue
        for path in paths:
            report.files[f"figures/{path.name}"] = path
        drawn.append((figure, paths[0].relative_to(folder.parent)))
    return drawn
