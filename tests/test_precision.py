"""Issue 35: ``train.precision`` (bf16 autocast of the training step on CPU or CUDA): what it
changes (the step's arithmetic, its run id when not ``auto``, the ``precision`` column) and what it
does not (masks, evaluation, the ids and numbers of runs that do not set it)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from mimbench.optim import autocast_for, resolved_precision
from mimbench.recipes import precision_warning
from mimbench.schema import TrainConfig

CPU = torch.device("cpu")


def test_auto_is_bf16_on_cuda_and_fp32_on_the_cpu():
    assert resolved_precision("auto", CPU) == "fp32" and resolved_precision("auto", torch.device("cuda")) == "bf16"
    assert resolved_precision("bf16", CPU) == "bf16" and resolved_precision("fp32", torch.device("cuda")) == "fp32"
    x = torch.randn(8, 8)
    with autocast_for(CPU, "bf16"):
        assert (x @ x).dtype == torch.bfloat16
    with autocast_for(CPU, "auto"):
        assert (x @ x).dtype == torch.float32
    with pytest.raises(ValueError):
        TrainConfig(precision="fp16")


def test_bf16_on_a_cpu_without_it_is_a_warning(tmp_path):
    from mimbench.specs import Component, EvalSpec, RunSpec

    run = RunSpec(Component("fashion-mnist-mini"), 16, 0, TrainConfig(precision="bf16"),
                  EvalSpec(0, 512, None, (), None, None), data=None, encoder=Component("vit"),
                  decoder=Component("linear"), masker=Component("patch"), loss=Component("l1"))
    warning = precision_warning([run], CPU, native_bf16=False)
    assert warning.startswith("train.precision bf16 on a CPU without native bf16 matrix products")
    assert precision_warning([run], CPU, native_bf16=True) is None
    assert precision_warning([run], torch.device("cuda"), native_bf16=False) is None


SUITE = """
name: prec
dataset: {name: fashion-mnist-mini}
image_size: 16
seeds: [0]
train: {epochs: 1, batch_size: 256, warmup_epochs: 0.2}
eval: {probes: [], baselines: []}
grid:
  encoder: [{name: vit, params: {patch_size: 4, dim: 16, depth: 1, heads: 2}}]
  decoder: [linear]
  masker: [{name: patch, params: {ratio: 0.5, mask_patch_size: 4}}]
  loss: [l1]
"""


def test_bf16_trains_another_run_with_its_own_id_and_says_so(tmp_path):
    from helpers import run_cli, write_suite_file

    path = write_suite_file(tmp_path, SUITE)
    runs = {}
    for precision in ("auto", "fp32", "bf16"):
        out = tmp_path / precision
        result = run_cli("run", str(path), "--out", str(out), "--set", f"train.precision={precision}")
        assert result.exit_code == 0, result.output
        runs[precision] = pd.read_csv(out / "prec" / "summary.csv").iloc[0]
    assert runs["auto"]["precision"] == runs["fp32"]["precision"] == "fp32" and runs["bf16"]["precision"] == "bf16"
    dry = run_cli("run", str(path), "--dry-run", "--out", str(tmp_path / "dry"), "--set", "train.precision=bf16")
    assert f"  {runs['bf16']['run_id']}  seed=0  " in dry.output and "  precision=bf16  steps=" in dry.output
    # auto is the id every suite had before the key existed; an explicit choice is part of the id
    assert len({row["run_id"] for row in runs.values()}) == 3
    assert runs["auto"]["final_loss"] == runs["fp32"]["final_loss"]  # the same arithmetic on a CPU
    assert runs["bf16"]["final_loss"] != runs["fp32"]["final_loss"]
    assert abs(runs["bf16"]["final_loss"] - runs["fp32"]["final_loss"]) < 0.05 * runs["fp32"]["final_loss"]
    # evaluation stays in full precision: its masks are the same
    assert runs["bf16"]["mask_ratio_actual"] == runs["fp32"]["mask_ratio_actual"]
