"""``mimbench run --dry-run``: what a checked suite would run, one line per run and baseline,
each run with its planned optimizer steps and FLOPs (counted on this machine's CPU, once per
distinct configuration, before anything trains)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mimbench.errors import cut, one_line

if TYPE_CHECKING:
    from mimbench.api import Prepared


def dry_run_lines(prepared: "Prepared", results_dir: Path) -> list[str]:
    """The dry run's lines: the suite (its results going to ``results_dir``, as the user gave it),
    then its runs (with :func:`planned_compute`), then its baselines."""
    plan = prepared.plan
    lines = [suite_header(prepared, results_dir)]
    from mimbench.specs import named_axes

    compute = planned_compute(prepared)
    axes = named_axes(plan.runs)
    for job in plan.runs:
        params = " ".join(f"{axis}={getattr(job, axis).text()}" for axis in axes)
        labels = job.eval.labels_per_class
        precision = job.train.precision  # auto: what every run did before the key (bf16 on CUDA, fp32 on a CPU)
        lines.append(f"  {job.run_id}  seed={job.seed}  {params}" + (f"  labels={labels}" if labels else "")
                     + (f"  precision={precision}" if precision != "auto" else "") + f"  {compute[job.run_id]}")
    lines += [f"  {job.run_id}  {plan.labels[job.run_id]}" for job in plan.baselines]
    return lines + seed_lines(prepared)


def seed_lines(prepared: "Prepared") -> list[str]:
    """What the suite's seeds can tell, per table of baseline comparisons the report will make (a
    pre-trained configuration against its ``random-init`` / ``pixels`` / ``supervised`` partner, on each declared
    headline accuracy): ``seeds: ...`` lines, saying how many seeds Holm's correction over the
    table needs before any test can reach p_holm < 0.05 when the suite has fewer."""
    from mimbench import stats
    from mimbench.columns import compared
    from mimbench.planning import declared_columns
    from mimbench.specs import BASELINE_KINDS

    plan = prepared.plan
    if not plan.runs:
        return []
    accuracies = [c for c in compared(declared_columns(prepared.runtime, plan.runs[0].eval.probes))
                  if c.kind == "accuracy"]
    trained = [c for c in plan.design["configurations"].values() if c["kind"] == "run"]
    lines = []
    for kind in BASELINE_KINDS:
        paired = [c for c in trained if kind in c["partners"]]
        m = len(paired) * len(accuracies)
        if not m:
            continue
        seeds, needed = min(len(c["seeds"]) for c in paired), stats.seeds_for_family(m)
        if seeds >= needed:
            lines.append(f"seeds: the {m} comparisons with {kind} can reach p_holm < {stats.ALPHA:g} with the "
                         f"suite's {seeds} seeds (Holm needs {needed})")
            continue
        if seeds == 1:
            got = "one seed gives each a single measurement: no seed-level interval or test"
        else:
            tested = "no test (fewer than 6 seeds)" if seeds < stats.MIN_SEEDS_FOR_TEST else "tests that cannot be significant"
            got = f"with the suite's {seeds} they get seed-level intervals and {tested}"
        lines.append(f"seeds: the {m} comparisons with {kind} need at least {needed} seeds for any sign-flip test over "
                     f"seeds to reach p_holm < {stats.ALPHA:g} under Holm's correction; {got}, unless their probes "
                     f"keep per-image predictions (linear, knn and finetune do): then the report tests them over "
                     f"seeds and test images")
    return lines


def reuse_lines(prepared: "Prepared", rerun: tuple[dict, ...] = (), rerun_changed: bool = False) -> list[str]:
    """What ``mimbench run`` would do with the runs already finished in the suite's folder, decided
    as the run decides it (:class:`mimbench.reuse.ReuseCheck`): a line for each one that would run
    again (``--rerun``, ``--rerun-changed``) or be kept with a note, then the counts."""
    from mimbench.driver import finished_config
    from mimbench.folder import SuiteFolder
    from mimbench.reuse import ReuseCheck, ReusePolicy

    folder = SuiteFolder(prepared.suite_dir)
    check = ReuseCheck(prepared.runtime.registry, ReusePolicy(rerun_changed, rerun))
    lines, finished, again = [], 0, 0
    for job in prepared.plan.jobs:
        run = folder.run(job.run_id)
        if run.finished_record() is None:
            continue
        finished += 1
        verdict = check.verdict(job, finished_config(run).get("code"))
        again += verdict.again
        if verdict.again or verdict.note:
            what = "runs again" if verdict.again else "kept"
            lines.append(f"  {job.run_id}  {prepared.plan.labels[job.run_id]}  finished, {what}: {verdict.note}")
    if not finished:
        return []
    return [*lines, f"{finished} of these runs are finished in {folder.path}: {finished - again} would be kept, "
                    f"{again} would run again"]


def suite_header(prepared: "Prepared", results_dir: Path) -> str:
    """The suite in one line, as ``mimbench run`` and the dry run start: ``suite quick: 6 runs and 4
    baselines on fashion-mnist-mini (5000 train / 1000 test images, 28px), device cpu, executor
    local, results in results/quick``."""
    plan, suite, data = prepared.plan, prepared.plan.suite, prepared.data
    trackers = f", trackers {', '.join(t.name for t in plan.trackers)}" if plan.trackers else ""
    device = data.normalize.mean.device if prepared.executor.in_process else prepared.device
    return (f"suite {suite.name}: {len(plan.runs)} runs and {len(plan.baselines)} baselines on "
            f"{suite.dataset.name} ({len(data.train)} train / {len(data.test)} test images, {suite.image_size}px), "
            f"device {device}, executor {suite.execution.executor}{trackers}, results in {results_dir}")


def planned_compute(prepared: "Prepared") -> dict[str, str]:
    """Each run's planned optimizer steps and FLOPs: ``steps=N  FLOPs=X (Y/image)``. Counted on the
    CPU once per distinct configuration (the seed does not change what a step costs); what cannot
    be counted or planned is said in place of the numbers."""
    from mimbench.compute import COUNT_IMAGES, flops_of
    from mimbench.runtime import Runtime
    from mimbench.specs import canonical_json
    from mimbench.train import planned_steps, train_batch_size

    runtime = prepared.runtime if prepared.runtime.device.type == "cpu" else Runtime(prepared.runtime.plugins, "cpu")
    images, channels = len(prepared.data.train), prepared.data.train.channels
    counted: dict[str, float | str] = {}  # a configuration -> its FLOPs per image, or why there are none
    texts = {}
    for job in prepared.plan.runs:
        key = canonical_json([job.image_size, *(spec.to_json() for spec in job.components().values()),
                              min(COUNT_IMAGES, job.train.batch_size)])
        if key not in counted:
            try:
                counted[key] = flops_of(runtime, job, channels)
            except Exception as exc:  # the run would fail the same way; the dry run says so
                counted[key] = cut(f"FLOPs not counted ({one_line(exc)})", 160)
        per_image = counted[key]
        if isinstance(per_image, str):
            texts[job.run_id] = per_image
            continue
        try:
            steps = planned_steps(job.train, images, per_image)
        except ValueError as exc:
            texts[job.run_id] = cut(f"steps not planned ({exc})", 160)
            continue
        total = per_image * train_batch_size(job.train, images) * steps
        texts[job.run_id] = f"steps={steps}  FLOPs={total:.3g} ({per_image:.3g}/image)"
    return texts
