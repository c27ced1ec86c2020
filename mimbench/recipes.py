"""Warnings before compute: a training recipe that runs but cannot be what its author meant.

Checked once per suite, after planning and before anything trains (``mimbench run`` prints them
on stderr, one line each, also with ``--dry-run``): ``train.precision: bf16`` on a CPU without
native bf16 matrix products (emulated: slower, for other numbers); a warm-up
(``train.warmup_epochs``) as long as the run or longer, measured in the optimizer steps the run
will take (``train.epochs``, or the steps of ``train.budget_flops``): the learning rate then never decays, and never reaches
``train.lr`` when the warm-up is longer. A batch larger than its split is an error instead
(:func:`mimbench.planning.validate`), and so is a ``train.budget_flops`` that cannot be planned
(more steps than a count holds, or a model whose steps count no FLOPs): refused here, by
``--dry-run`` as by ``run``, rather than failing every run.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import torch

from mimbench.errors import ConfigError
from mimbench.optim import native_bf16_cpu
from mimbench.schema import TrainConfig
from mimbench.specs import RunSpec, canonical_json
from mimbench.train import planned_steps, train_batch_size

if TYPE_CHECKING:
    from mimbench.jobs import PluginSources
    from mimbench.planning import Plan
    from mimbench.runtime import SuiteData


def warmup_warning(train: TrainConfig, train_images: int, flops_per_image: float | None = None) -> str | None:
    """Why the warm-up of ``train`` on ``train_images`` images covers the whole run (one line), or
    None when the learning rate decays after it. ``flops_per_image`` is needed with a budget."""
    per_epoch = train_images // train_batch_size(train, train_images)
    warmup_exact = train.warmup_epochs * per_epoch  # may overflow to inf for an absurd warm-up
    warmup = round(warmup_exact) if math.isfinite(warmup_exact) else math.inf
    steps = planned_steps(train, train_images, flops_per_image)
    if warmup == 0 or warmup < steps:
        return None
    suggest = max(0.01, round(0.2 * steps / max(per_epoch, 1), 2))
    effect = ("the learning rate reaches train.lr only at the last step" if warmup == steps else
              f"the learning rate rises for the whole run, reaching only {100 * steps / warmup:.0f}% of train.lr,")
    if train.budget_flops is None:
        what = (f"train.warmup_epochs {train.warmup_epochs:g} ({warmup} steps) is not shorter than the run "
                f"(train.epochs {train.epochs}: {steps} steps)")
    else:
        what = (f"train.budget_flops {train.budget_flops:g} is {steps} steps, not more than the {warmup} steps of "
                f"the warm-up (train.warmup_epochs {train.warmup_epochs:g})")
    return f"{what}: {effect} and never decays; set a shorter warm-up, e.g. --set train.warmup_epochs={suggest:g}"


def run_warnings(runs: list[RunSpec], labels: dict[str, str], train_images: int,
                 flops_per_image: Callable[[RunSpec], float | None]) -> list[str]:
    """Each distinct warning of ``runs`` once; when only some runs have it, how many and one of
    them by its label. ``flops_per_image(run)`` is asked only for runs with a budget."""
    found: dict[str, list[str]] = {}
    for run in runs:
        flops = flops_per_image(run) if run.train.budget_flops is not None else None
        if run.train.budget_flops is not None and flops is None:
            continue  # the count itself failed: the dry run says why, and the run fails the same way
        try:
            warning = warmup_warning(run.train, train_images, flops)
        except ValueError as exc:  # the budget's steps cannot be planned
            raise ConfigError(f"run {run.run_id} ({labels[run.run_id]}): {exc}") from None
        if warning:
            found.setdefault(warning, []).append(run.run_id)
    return [warning if len(ids) == len(runs) else f"{warning} ({len(ids)} of {len(runs)} runs, e.g. {labels[ids[0]]})"
            for warning, ids in found.items()]


def precision_warning(runs: list[RunSpec], device: torch.device, native_bf16: bool) -> str | None:
    """Why ``train.precision: bf16`` on this CPU is likely slower than fp32 (one line), or None."""
    if device.type != "cpu" or native_bf16 or not any(run.train.precision == "bf16" for run in runs):
        return None
    return ("train.precision bf16 on a CPU without native bf16 matrix products (no avx512_bf16, amx_bf16 or bf16 "
            "in /proc/cpuinfo): bf16 is emulated there, usually slower than fp32, and changes the numbers; "
            "set --set train.precision=auto")


def recipe_warnings(plan: "Plan", data: "SuiteData", plugins: "PluginSources", device: torch.device) -> list[str]:
    """The suite's warnings before compute (see the module), one line each. FLOPs are counted on
    this machine's CPU, once per distinct configuration, and only for runs with a budget."""
    counted: dict[str, float | None] = {}
    cpu: list[Any] = []  # the CPU runtime FLOPs are counted with, made on first use

    def flops_per_image(run: RunSpec) -> float | None:
        from mimbench.compute import COUNT_IMAGES, flops_of
        from mimbench.runtime import Runtime

        key = canonical_json([run.image_size, *(spec.to_json() for spec in run.components().values()),
                              min(COUNT_IMAGES, run.train.batch_size)])
        if key not in counted:
            try:
                cpu[:] = cpu or [Runtime(plugins, "cpu")]
                counted[key] = flops_of(cpu[0], run, data.train.channels)
            except Exception:  # the dry run shows why; the run fails the same way
                counted[key] = None
        return counted[key]

    precision = precision_warning(plan.runs, device, native_bf16_cpu())
    return run_warnings(plan.runs, plan.labels, len(data.train), flops_per_image) + ([precision] if precision else [])
