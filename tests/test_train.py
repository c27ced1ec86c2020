"""The training loop's pipeline: masks made ahead in a thread, and ``train.compile``."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import run_cli, write_suite_file
from mimbench.data import DeviceImages, Normalizer
from mimbench.plugins import load_plugins
from mimbench.prefetch import prefetched
from mimbench.registry import Registry
from mimbench.schema import AugmentConfig
from mimbench.steps import training_batches

AUGMENT = AugmentConfig(crop_scale=(0.5, 1.0), crop_ratio=(0.75, 1.33), flip=True)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(load_plugins())


def small_images(count: int = 320) -> DeviceImages:
    images = torch.randint(0, 256, (count, 1, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return DeviceImages(images, torch.zeros(count, dtype=torch.long), 10)


@pytest.mark.parametrize("masker", ["pixel", "patch", "region", "block", "random_token", "square"])
def test_masks_made_ahead_in_a_thread_are_the_same_masks(registry, masker):
    data = small_images()
    normalize = Normalizer.measure(data)
    made = []
    for ahead in (False, True):
        generator = torch.Generator().manual_seed(7)
        batches = training_batches(data, 64, 2, generator, normalize, AUGMENT, registry.build("masker", masker, {}))
        made.append(list(prefetched(batches) if ahead else batches))
    assert len(made[0]) == len(made[1]) == 10  # 5 batches x 2 epochs
    for (images, mask), (images_ahead, mask_ahead) in zip(*made):
        assert torch.equal(images, images_ahead)
        assert torch.equal(mask, mask_ahead)


def test_an_error_while_making_a_batch_is_raised_where_that_batch_is_taken():
    def items():
        yield 1
        yield 2
        raise ValueError("mask of the wrong shape")

    stream = prefetched(items())
    assert next(stream) == 1
    assert next(stream) == 2
    with pytest.raises(ValueError, match="wrong shape"):
        next(stream)


def test_leaving_early_stops_the_thread():
    made = []

    def items():
        for i in range(10**6):
            made.append(i)
            yield i

    stream = prefetched(items(), depth=2)
    for item in stream:
        if item == 3:
            break
    stream.close()
    assert not any(t.name == "mimbench-next-batch" for t in threading.enumerate())
    assert len(made) <= 3 + 1 + 2 + 1  # taken, being handed over, queued, being made


COMPILE_SUITE = """
name: comp
dataset: {name: shapes, params: {num_images: 192}}
image_size: 16
seeds: [0]
train: {epochs: 2, batch_size: 64, log_every: 3}
eval: {batch_size: 96, probes: [], baselines: []}
grid:
  encoder: [{name: vit, params: {patch_size: 4, dim: 32, depth: 1, heads: 2}}]
  decoder: [linear]
  masker: [{name: patch, params: {ratio: 0.5, mask_patch_size: 4}}]
  loss: [l1]
"""


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on CPU needs a C++ compiler (apt install g++)")
def test_compiled_training_follows_eager_training_and_reports_its_compile_time(tmp_path):
    suite = write_suite_file(tmp_path, COMPILE_SUITE)
    eager = run_cli("run", str(suite), "--out", str(tmp_path / "eager"), "--device", "cpu")
    compiled = run_cli("run", str(suite), "--out", str(tmp_path / "compiled"), "--device", "cpu",
                       "--set", "train.compile=true")
    assert eager.exit_code == 0 and compiled.exit_code == 0, compiled.output

    def run(out: Path) -> Path:
        (folder,) = (out / "comp" / "runs").iterdir()
        return folder

    a, b = (pd.read_csv(run(tmp_path / out) / "history.csv") for out in ("eager", "compiled"))
    assert ((a.loss - b.loss).abs() / a.loss).max() < 1e-4  # measured: ~1e-7 (fused float rounding)
    metrics = json.loads((run(tmp_path / "compiled") / "metrics.json").read_text())
    assert metrics["compile_seconds"] > 0
    assert "compile_seconds" not in json.loads((run(tmp_path / "eager") / "metrics.json").read_text())
    # compile is left out of run ids only while off: the two runs are different runs
    assert run(tmp_path / "eager").name != run(tmp_path / "compiled").name


def test_gpu_numerics_are_set_for_a_run_and_restored_after():
    """TF32 on a GPU only while a run trains or is evaluated: torch's process-wide flags come back as they were."""
    from mimbench.optim import gpu_numerics

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with gpu_numerics(torch.device("cuda")):  # only sets flags: no GPU needed
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        with gpu_numerics(torch.device("cpu")):
            assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
