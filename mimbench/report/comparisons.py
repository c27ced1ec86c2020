"""Every comparison the report makes, with its uncertainty: ``comparisons.csv``.

Five families of paired comparisons, each pairing runs by seed and by the evaluation settings
(``eval.<param>`` columns, e.g. ``eval.labels_per_class``):

- ``random-init``: each pre-trained configuration against the random-init encoder of the same
  architecture, on every declared headline probe score (accuracies: the table's Δ columns; and
  the ``other`` scores, such as the restoration probe's PSNR);
- ``pixels``: each pre-trained configuration against the raw-pixels baseline, on the same
  scores (the bar a pre-trained encoder has to clear to be worth its features);
- ``supervised``: each pre-trained configuration against its encoder trained on the labels
  (the ``supervised`` baseline, where the suite has one), on the same scores;
- ``biharmonic``: each pre-trained configuration's reconstruction (``recon_psnr``, ``recon_ssim``)
  against biharmonic inpainting of the same hidden pixels (:mod:`mimbench.classical`), run by run:
  does it beat a method that learns nothing? (Not for runs de-normalised with the hidden patch's
  own statistics, ``norm_pix``.)
- ``reference``: each pre-trained configuration against the reference configuration the user
  names (``report: {reference: {masker: patch}}`` in the suite, or ``mimbench report DIR
  --reference masker=patch``), on every declared headline metric both have. A configuration's
  reference is the one that matches the named values and agrees with it on everything else;
  when none does, the one configuration that matches (per evaluation setting), if it is one.

Each row holds the statistics of :func:`mimbench.stats.compare_paired`; Holm's correction runs
over the p-values of one family (a "comparison table"), and ``significant`` is true only where
``p_holm`` < 0.05. ``ci_low_family``/``ci_high_family`` widen each interval so that the family's
intervals hold together (Bonferroni: each a plain t interval at confidence 1 - 0.05/m over the
family's m rows);
``resolved`` is true where the family's one procedure says so (:func:`is_resolved`): its
Holm-adjusted test when every comparison of the family has the seeds Holm needs, else its
family-wise interval excluding 0. It is what the written conclusions call a resolved difference. Configurations that do not compare on a metric (:func:`comparable`) get no
row for it. Rows are in a fixed order and every statistic is a closed formula or an exact
enumeration, so the same folder always gives the same file, byte for byte.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from mimbench import stats
from mimbench import columns
from mimbench.columns import MetricColumn
from mimbench.errors import ConfigError
from mimbench.schema import REFERENCE_AXES
from mimbench.labels import ALL_LABELS, COMPONENTS, LABELS_PER_CLASS, cell_value, eval_columns
from mimbench.report.aggregate import config_columns, to_bool
from mimbench.report.best import comparable
from mimbench.report.labelled import view
from mimbench.report.pairs import finished, partner_pairs, seed_pairs, seed_run_ids
from mimbench.report.reference_names import format_reference

#: The columns of ``comparisons.csv``, in this order.
COLUMNS = ["metric", "configuration", "reference", "labels_per_class", "n", "n_images", "mean_diff", "ci_low", "ci_high",
           "ci_low_family", "ci_high_family", "p_improvement", "p_value", "p_holm", "significant", "resolved"]
#: Kept in the frame :func:`compare` returns, left out of the file: the family (``random-init`` or
#: ``reference``), the configurations' ids, the std of the paired differences, the differences and
#: the per-image outcomes (None without them).
INTERNAL = ["family", "config_id", "reference_config_id", "sd", "diffs", "outcomes"]
#: ``outcomes(run_id, metric)``: whether each test image was classified right behind ``metric``
#: in that run, bool [N], or None where the run kept no predictions for it.
Outcomes = Callable[[str, str], "np.ndarray | None"]
RANDOM_INIT, PIXELS, REFERENCE, INPAINTING = "random-init", "pixels", "reference", "biharmonic"
SUPERVISED = "supervised"
#: The families, each one Holm family (a "comparison table"), in the order of the file.
FAMILIES = (RANDOM_INIT, PIXELS, SUPERVISED, REFERENCE, INPAINTING)
#: A run's reconstruction measures and biharmonic inpainting's on the same masks (mimbench.classical).
INPAINTING_PAIRS = {"recon_psnr": "inpaint_psnr", "recon_ssim": "inpaint_ssim"}


def compare(runs: pd.DataFrame, declared: Sequence[MetricColumn],
            reference: Mapping[str, Any] | None = None, outcomes: Outcomes | None = None) -> pd.DataFrame:
    """The comparisons of a suite's labelled runs (:mod:`mimbench.report.labelled`; see the module's
    docstring): the columns :data:`COLUMNS` then :data:`INTERNAL`, one row per configuration, metric
    and evaluation setting, configurations named by the design's ``budget`` labels (the label budget
    has a column of its own). Where ``outcomes`` gives every paired run's per-image outcomes of a
    metric, its row's interval and test account for the test images too
    (:func:`mimbench.stats.compare_outcomes`; ``n_images``)."""
    runs = view(runs, "budget")
    headline = [c for c in columns.compared(declared) if c.key in runs.columns]
    scores = [c for c in headline if c.kind in ("accuracy", "other")]  # what a probe scores (restoration: dB too)
    rows = [row for kind in (RANDOM_INIT, PIXELS, SUPERVISED) for row in baseline_rows(runs, scores, kind, outcomes)]
    if reference:
        rows += _reference_rows(runs, headline, reference, outcomes)
    rows += _inpainting_rows(runs, headline)
    return adjusted(frame_of(rows), FAMILIES)


def frame_of(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows of :func:`comparison_row` as a frame, each label budget as it was (an int stays an int)."""
    frame = pd.DataFrame(rows, columns=COLUMNS + INTERNAL)
    frame["labels_per_class"] = pd.Series([row["labels_per_class"] for row in rows], index=frame.index, dtype=object)
    return frame


def adjusted(frame: pd.DataFrame, families: Sequence[str]) -> pd.DataFrame:
    """``frame`` (rows of :func:`comparison_row`) with each family's Holm-adjusted p-values,
    ``significant``, family-wise intervals and ``resolved`` filled in (see the module docstring)."""
    frame["n_images"] = frame["n_images"].astype("Int64")
    for family in families:
        chosen = frame["family"] == family
        adjusted = stats.holm([None if pd.isna(p) else float(p) for p in frame.loc[chosen, "p_value"]])
        frame.loc[chosen, "p_holm"] = pd.Series(adjusted, index=frame.index[chosen], dtype=object)
    frame["significant"] = [None if pd.isna(p) else bool(p < stats.ALPHA) for p in frame["p_holm"]]
    for family in families:  # Bonferroni: the family's intervals hold together with 95% confidence
        chosen = frame.index[frame["family"] == family]
        for i in chosen:
            diffs, per_image = frame.at[i, "diffs"], frame.at[i, "outcomes"]
            if per_image is not None:
                result = stats.compare_outcomes(*per_image, 1 - stats.ALPHA / len(chosen))
                frame.at[i, "ci_low_family"], frame.at[i, "ci_high_family"] = result.ci_low, result.ci_high
            elif len(diffs) >= 2:
                low, high = stats.mean_interval(diffs, 1 - stats.ALPHA / len(chosen), correct_skew=False)
                frame.at[i, "ci_low_family"], frame.at[i, "ci_high_family"] = low, high
    frame[["ci_low_family", "ci_high_family"]] = frame[["ci_low_family", "ci_high_family"]].astype(float)
    frame["resolved"] = False
    for family in families:
        chosen = frame.index[frame["family"] == family]
        rows = frame.loc[chosen]
        # a test decides where every row's test can reach Holm's level: per-image tests always can,
        # the seeds' sign-flip test from stats.seeds_for_family seeds on
        tested = len(chosen) and rows["p_value"].notna().all() and \
            (rows["n_images"].notna() | (rows["n"] >= stats.seeds_for_family(len(chosen)))).all()
        frame.loc[chosen, "resolved"] = [is_resolved(row, bool(tested)) for row in rows.itertuples()]
    frame["resolved"] = frame["resolved"].astype(bool)
    return frame


def interval_caption(frame: pd.DataFrame) -> str:
    """What the intervals of ``frame`` are, for a caption: :func:`mimbench.stats.interval_caption`
    of its seeds, and of its test images where rows come from per-image outcomes."""
    if frame.empty:
        return f"95% {stats.INTERVAL_METHOD}"
    seeds = stats.interval_caption(int(frame["n"].min()), int(frame["n"].max()))
    images = frame["n_images"].dropna()
    if images.empty:
        return seeds
    outcomes = stats.interval_caption(int(frame.loc[images.index, "n"].min()), int(frame.loc[images.index, "n"].max()),
                                      int(images.max()))
    return outcomes if len(images) == len(frame) else f"{outcomes}; elsewhere a {seeds}"


def is_resolved(row: Any, tested: bool) -> bool:
    """Whether a comparison's difference is resolved, with its whole family in view, by one
    procedure per family (so that the family's error rate stays at 5%): where every comparison of
    the family has the seeds Holm's correction needs (``tested``), its Holm-adjusted sign-flip test
    is significant; otherwise its family-wise interval lies on one side of 0."""
    if tested:
        return row.significant is True
    low, high = row.ci_low_family, row.ci_high_family
    return low is not None and pd.notna(low) and bool(low > 0 or high < 0)


def to_csv(frame: pd.DataFrame) -> str:
    """``comparisons.csv``: the :data:`COLUMNS` of :func:`compare`'s frame, empty where not applicable;
    numbers to 12 significant digits (what float arithmetic leaves beyond them is noise)."""
    return frame[COLUMNS].to_csv(index=False, float_format="%.12g")


def comparison_row(metric: MetricColumn, configuration: str, reference: str, labels: Any, pairs: pd.DataFrame, family: str,
         config_id: str, reference_id: str, per_image: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    diffs = pairs["diff"].to_numpy(float)
    result = stats.compare_paired(diffs, higher_is_better=metric.kind != "mse")
    row = {"metric": metric.key, "configuration": configuration, "reference": reference, "labels_per_class": labels,
           "n": result.n, "n_images": None, "mean_diff": result.mean_diff, "ci_low": result.ci_low,
           "ci_high": result.ci_high, "ci_low_family": None, "ci_high_family": None,
           "p_improvement": result.p_improvement, "p_value": result.p_value, "p_holm": None, "significant": None,
           "resolved": None, "family": family, "config_id": config_id, "reference_config_id": reference_id,
           "sd": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else math.nan, "diffs": tuple(map(float, diffs)),
           "outcomes": per_image}
    if per_image is not None:
        images = stats.compare_outcomes(*per_image)
        row.update(n_images=images.n_images, ci_low=images.ci_low, ci_high=images.ci_high, p_value=images.p_value)
    return row


def _per_image(outcomes: Outcomes | None, done: pd.DataFrame, mine: str, theirs: str, metric: str,
               seeds: Sequence[Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """Both configurations' per-image outcomes of ``metric`` on ``seeds``, bool [n, N] each, or
    None unless every one of those runs kept them, on the same test images."""
    if outcomes is None:
        return None
    arrays = []
    for config_id in (mine, theirs):
        ids = seed_run_ids(done, config_id)
        kept = [outcomes(str(ids[seed]), metric) for seed in seeds]
        if any(k is None for k in kept) or len({k.shape for k in kept}) != 1:
            return None
        arrays.append(np.stack(kept))
    return (arrays[0], arrays[1]) if arrays[0].shape == arrays[1].shape else None


def labels_cell(row: pd.Series) -> Any:
    """The ``labels_per_class`` cell: the count, ``all``, or empty when the suite does not use it."""
    if LABELS_PER_CLASS not in row.index:
        return None
    value = cell_value(row[LABELS_PER_CLASS])
    return ALL_LABELS if value is None else value


def baseline_rows(runs: pd.DataFrame, metrics: list[MetricColumn], kind: str,
                   outcomes: Outcomes | None) -> list[dict[str, Any]]:
    rows = []
    done = finished(runs)
    for metric in metrics:
        for first, partner, pairs in partner_pairs(runs, metric.key, kind):
            per_image = _per_image(outcomes, done, first["config_id"], partner["config_id"], metric.key, pairs.index)
            rows.append(comparison_row(metric, first["label"], partner["label"], labels_cell(first), pairs, kind,
                             first["config_id"], partner["config_id"], per_image))
    return rows


def _reference_rows(runs: pd.DataFrame, metrics: list[MetricColumn], reference: Mapping[str, Any],
                    outcomes: Outcomes | None) -> list[dict[str, Any]]:
    done = finished(runs)
    done = done[done["pretrained"]]
    configs = done.drop_duplicates("config_id").set_index("config_id")
    matching = [c for c in configs.index if matches(configs.loc[c], reference)]
    if not matching:
        raise ConfigError(f"report.reference {format_reference(reference)}: no finished configuration of this suite "
                          f"matches it ({_choices(configs)})")
    if len(matching) == len(configs):
        raise ConfigError(f"report.reference {format_reference(reference)}: every finished configuration of this "
                          f"suite matches it, so none is left to compare with it ({_choices(configs)})")
    rows = []
    compared: set[tuple[str, str, str]] = set()
    for metric in metrics:
        for config_id in configs.index:
            if config_id in matching:
                continue
            counterpart = _counterpart(configs, config_id, matching, reference)
            if counterpart is None:
                continue
            pair = (metric.key, configs.at[config_id, "label"], configs.at[counterpart, "label"])
            reconstruction = metric.kind in columns.RECONSTRUCTION_KINDS  # measured before any probe: one row, whatever the labels
            if reconstruction and pair in compared:
                continue
            if not comparable(configs.loc[config_id], configs.loc[counterpart], metric.key):
                continue
            compared.add(pair)
            pairs = seed_pairs(done, config_id, counterpart, metric.key)
            if pairs.empty:
                continue
            per_image = None if reconstruction else _per_image(outcomes, done, config_id, counterpart, metric.key,
                                                                      pairs.index)
            rows.append(comparison_row(metric, configs.at[config_id, "label"], configs.at[counterpart, "label"],
                             None if reconstruction else labels_cell(configs.loc[config_id]), pairs, REFERENCE,
                             config_id, counterpart, per_image))
    return rows


def _inpainting_rows(runs: pd.DataFrame, metrics: list[MetricColumn]) -> list[dict[str, Any]]:
    """Each pre-trained configuration's reconstruction against biharmonic inpainting of the same pixels,
    run by run (:data:`INPAINTING_PAIRS`), one row whatever the labels; not for ``recon_uses_target_stats``."""
    done = finished(runs)
    done = done[done["pretrained"]]
    if "recon_uses_target_stats" in done.columns:
        done = done[~done["recon_uses_target_stats"].map(to_bool)]
    rows, seen = [], set()
    for metric in (m for m in metrics if m.key in INPAINTING_PAIRS and INPAINTING_PAIRS[m.key] in done.columns):
        for config_id, group in done.groupby("config_id", sort=False):
            label = group["label"].iloc[0]
            values = group[["seed", metric.key, INPAINTING_PAIRS[metric.key]]].dropna().drop_duplicates("seed")
            if values.empty or (metric.key, label) in seen:
                continue
            seen.add((metric.key, label))
            pairs = pd.DataFrame({"mine": values[metric.key].to_numpy(float),
                                  "theirs": values[INPAINTING_PAIRS[metric.key]].to_numpy(float)},
                                 index=pd.Index(values["seed"], name="seed")).sort_index()
            pairs["diff"] = pairs["mine"] - pairs["theirs"]
            rows.append(comparison_row(metric, label, "biharmonic inpainting", None, pairs, INPAINTING, config_id, ""))
    return rows


def matches(row: pd.Series, reference: Mapping[str, Any]) -> bool:
    """Whether a run (a summary row) has every value the reference names: ``masker: patch`` (a
    component's name) or ``masker.ratio: 0.6`` (a param's value)."""
    for key, value in reference.items():
        if key not in row.index or cell_value(row[key]) != cell_value(value):
            return False
    return True


def _counterpart(configs: pd.DataFrame, config_id: str, matching: list[str],
                 reference: Mapping[str, Any]) -> str | None:
    """The reference configuration of ``config_id``: the matching one equal to it on every column
    the reference does not govern; else the only matching one with the same evaluation settings."""
    governed = {c for c in config_columns(configs) for key in reference
                if c == key or (key in REFERENCE_AXES and c.startswith(f"{key}."))}
    free = [c for c in config_columns(configs) if c not in governed]
    mine = [cell_value(v) for v in configs.loc[config_id, free]]
    for candidate in matching:
        if [cell_value(v) for v in configs.loc[candidate, free]] == mine:
            return candidate
    settings = eval_columns(configs)
    same_eval = [c for c in matching if [cell_value(v) for v in configs.loc[c, settings]] ==
                 [cell_value(v) for v in configs.loc[config_id, settings]]]
    return same_eval[0] if len(same_eval) == 1 else None


def _choices(configs: pd.DataFrame) -> str:
    shown = [f"{axis} {' / '.join(sorted(set(map(str, configs[axis]))))}" for axis in COMPONENTS
             if axis in configs.columns]
    return "the configurations have " + "; ".join(shown)


def seeds_lines(frame: pd.DataFrame, declared: Sequence[MetricColumn]) -> dict[str, str]:
    """One sentence per family of ``frame`` on what its seeds can tell: the paired seeds behind
    its comparisons, whether a test was possible, how many seeds Holm's correction over the family
    needs before any test can reach p_holm < 0.05 (:func:`mimbench.stats.seeds_for_family`), the
    smallest accuracy difference they detect (80% power, at the level α / m of Holm's first step)
    and the seeds the observed spread would need for a 1-point difference."""
    kinds = {c.key: c.kind for c in declared}
    lines = {}
    for family, group in frame.groupby("family", sort=False):
        n, most, m = int(group["n"].min()), int(group["n"].max()), len(group)
        counted = f"{n} paired seed{'s' * (n != 1)}" if n == most else f"{n} to {most} paired seeds"
        needed = stats.seeds_for_family(m)
        holm = (f"Holm's correction over this table's {m} comparison{'s' * (m != 1)} needs at least {needed} paired "
                f"seeds before any of them can reach p_holm < {stats.ALPHA:g}")
        if group["n_images"].notna().all():
            images = int(group["n_images"].max())
            lines[family] = (f"{counted} and {images:,} test images per comparison, from the runs' per-image "
                             f"outcomes: each comparison is tested over both ("
                             + ("McNemar's exact test, as there is one seed: seed-to-seed variation is not in it"
                                if most == 1 else "a two-level t test with the seeds' degrees of freedom")
                             + "), Holm-corrected over this table.")
            continue
        if most == 1:
            lines[family] = (f"{counted} per comparison: a difference from one seed has no interval (a spread "
                             f"needs 2 seeds) and no test ({holm}); it is a single measurement, not evidence of a "
                             f"difference.")
            continue
        if n < stats.MIN_SEEDS_FOR_TEST:
            text = (f"{counted} per comparison: with fewer than {stats.MIN_SEEDS_FOR_TEST} the exact sign-flip test "
                    f"cannot reach p < {stats.ALPHA:g} (its smallest p is 2/2^{n} = {stats.smallest_p_value(n):.3g}), "
                    f"so no test was run, and {holm}. The intervals still keep their 95% coverage: with so few seeds "
                    f"they are wide, and only a difference whose family-wise interval excludes 0 is resolved.")
        elif n < needed:
            text = (f"{counted} per comparison, tested with the exact sign-flip test, Holm-corrected over this table; "
                    f"{holm}, so none can be significant here.")
        else:
            text = f"{counted} per comparison, tested with the exact sign-flip test, Holm-corrected over this table."
        spread = group[[kinds.get(metric) == "accuracy" for metric in group["metric"]]]["sd"].dropna()
        if not spread.empty:
            sd = float(np.sqrt((spread ** 2).mean()))
            detectable = stats.detectable_difference(sd, n, stats.ALPHA / m)
            wanted = stats.seeds_needed(sd, 0.01, stats.ALPHA / m)
            if detectable is not None:
                text += f" These seeds detect an accuracy difference of {detectable * 100:.2g} points (80% power)."
            text += (f" The observed spread of the paired accuracy differences (pooled std {sd * 100:.2g} points) "
                     + (f"would need {max(wanted, needed)} seeds to detect a 1-point difference in this table."
                        if wanted is not None else "is too large for any practical number of seeds to detect 1 point."))
        lines[family] = text
    return lines


#: Added to the aggregated table per accuracy ``<m>`` from the random-init family.
GAIN_STATS = ("ci_low", "ci_high", "p_value", "p_holm", "significant", "n_images")


def with_intervals(table: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """``table`` (aggregated, with ``config_id``) with ``<metric>_gain_ci_low``, ``_ci_high``,
    ``_p_value``, ``_p_holm`` and ``_significant`` from the random-init comparisons of ``frame``."""
    table = table.copy()
    family = frame[frame["family"] == RANDOM_INIT]
    for metric, group in family.groupby("metric", sort=False):
        by_config = group.set_index("config_id")
        for stat in GAIN_STATS:
            table[f"{metric}_gain_{stat}"] = table["config_id"].map(by_config[stat])
    return table
