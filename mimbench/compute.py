"""Training compute: the FLOPs of one training step, counted with torch's ``FlopCounterMode``.

What is counted is what the counter knows: matrix products, convolutions and attention, forward
and backward, of the encoder, decoder and loss as :class:`~mimbench.steps.MaskedModel` runs them,
and the target's forward (an EMA teacher's full pass, HOG's gradient convolutions),
with the run's own masks (so MAE's dropped tokens cost nothing). Not counted: the masker, the
optimizer, normalisations and other elementwise ops, evaluation and probes.

A run counts once, before it trains, on deep copies of its components and a batch of its image
size masked by its own masker from its seed, with torch's random state saved and restored around
it: training is unchanged by the count. The pixels do not change what a step costs, so the same
count is had from a finished run's ``config.json`` alone (:func:`add_flops`), which
``python -m mimbench.compute RUN_DIR...`` writes into runs that finished before FLOPs were recorded.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from mimbench.contract import check_mask
from mimbench.folder import RunFolder
from mimbench.jobs import PluginSources
from mimbench.runtime import Runtime
from mimbench.specs import RunSpec, run_spec_from_config
from mimbench.steps import MaskedModel
from mimbench.train import Components, train_batch_size

#: Images a count runs on. The counted ops cost the same for every image, so a few give the
#: per-image cost of any batch; the dry run counts each distinct configuration, so it stays cheap.
COUNT_IMAGES = 8

#: torch's fused attention kernels, each with its backward (``<name>_backward``). The CUDA ones
#: are counted by torch; the CPU one is not (torch 2.4 to 2.14), and counts as zero without a formula.
ATTENTION_KERNELS = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                     "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")


def _attention_flops(query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *args: Any,
                     out_shape: Any = None, **kwargs: Any) -> int:
    """q [B, heads, Nq, d], k [B, heads_kv, Nk, d], v [B, heads_kv, Nk, dv]: scores q k^T and their
    weighted sum of v, 2 FLOPs per multiply-add (torch's formula for its CUDA kernels)."""
    b, heads, n_q, d = query_shape
    n_k, d_v = key_shape[2], value_shape[3]
    return 2 * b * heads * n_q * n_k * (d + d_v)


def _attention_backward_flops(grad_out_shape: torch.Size, query_shape: torch.Size, key_shape: torch.Size,
                              value_shape: torch.Size, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """The backward of :func:`_attention_flops` as torch counts it for its CUDA kernels: the scores
    recomputed, then the gradients of the scores, v, q and k (five products)."""
    b, heads, n_q, d = query_shape
    n_k, d_v = key_shape[2], value_shape[3]
    return 2 * b * heads * n_q * n_k * (3 * d + 2 * d_v)


def register_attention_formulas() -> None:
    """Give every fused attention kernel of :data:`ATTENTION_KERNELS` that this torch has and does
    not count a formula, so that attention counts on every device. Idempotent."""
    from torch.utils import flop_counter

    if not hasattr(flop_counter, "register_flop_formula"):  # an older torch: attention on the CPU counts zero
        return
    for name in ATTENTION_KERNELS:
        for op, formula in ((name, _attention_flops), (name + "_backward", _attention_backward_flops)):
            try:
                packet = getattr(torch.ops.aten, op)
            except (AttributeError, RuntimeError):  # a kernel this torch does not have
                continue
            if packet not in flop_counter.flop_registry:
                flop_counter.register_flop_formula(packet)(formula)


def count_flops_per_image(parts: Components, images: torch.Tensor, mask: torch.Tensor) -> float:
    """FLOPs of one training step per image: forward and backward of encoder, decoder and loss on
    ``images`` float [B, C, H, W] (normalised) with ``mask`` bool [B, H, W] (True = hidden), on
    their device, in train mode and under the autocast training uses. Runs on deep copies of the
    components with torch's random state restored after: ``parts`` and training are unchanged."""
    register_attention_formulas()
    device = images.device
    target = copy.deepcopy(parts.target)
    if isinstance(target, torch.nn.Module):
        target.to(device).train()
    copies = Components(copy.deepcopy(parts.encoder).to(device).train(), copy.deepcopy(parts.decoder).to(device).train(),
                        parts.masker, copy.deepcopy(parts.loss), target)
    from torch.utils.flop_counter import FlopCounterMode

    with _own_random_state(device), FlopCounterMode(display=False) as counter:
        MaskedModel(copies)(images, mask, check=True).backward()
    return counter.get_total_flops() / images.shape[0]


def counting_batch(masker: Callable[..., torch.Tensor], channels: int, image_size: int, seed: int,
                   device: torch.device, count: int = COUNT_IMAGES) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` standard-normal images float [count, C, S, S] on ``device`` and their mask bool
    [count, S, S] from ``masker``, both drawn from a generator seeded with ``seed`` (not torch's own)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    images = torch.randn(count, channels, image_size, image_size, generator=generator, device=device)
    return images, check_mask(masker(images, generator), images)


def run_flops_per_image(parts: Components, run: RunSpec, channels: int, device: torch.device) -> float:
    """:func:`count_flops_per_image` of a run's components on its :func:`counting_batch`; random
    state, parameters and gradients are left as they were."""
    count = min(COUNT_IMAGES, run.train.batch_size)
    with _own_random_state(device):  # a masker may draw from torch's generator too
        images, mask = counting_batch(parts.masker, channels, run.image_size, run.seed, device, count)
    return count_flops_per_image(parts, images, mask)


def flops_of(runtime: Runtime, run: RunSpec, channels: int) -> float:
    """A run's flops_per_image, its components built by ``runtime`` (on its device) from the run's
    seed; torch's random state is kept."""
    with _own_random_state(runtime.device):
        torch.manual_seed(run.seed)
        parts = runtime.components(run, channels)
    return run_flops_per_image(parts, run, channels, runtime.device)


def _own_random_state(device: torch.device) -> Any:
    """torch's CPU random state, and ``device``'s when it is a GPU, restored on leaving."""
    gpus = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=gpus)


def trained_steps(record: dict[str, Any], history: list[dict[str, float]], batch_size: int,
                  train_images: int) -> int:
    """A finished run's optimizer steps: ``train_steps`` in its metrics, or, for runs from before it
    was recorded (which trained whole epochs), the epochs in ``history.csv`` times the steps of an
    epoch (``train_images // batch``: the ragged last batch is dropped). For a run that diverged
    the epoch it diverged in counts whole: an upper bound."""
    if record.get("train_steps") is not None:
        return int(record["train_steps"])
    batch = min(batch_size, train_images)
    return len(history) * (train_images // batch)


def add_flops(folder: RunFolder, runtime: Runtime) -> dict[str, Any] | None:
    """Write ``flops_per_image`` and ``train_flops`` into a finished run's ``metrics.json`` (atomically;
    every other key kept), counted from its ``config.json`` by ``runtime`` (the steps from its train
    split's size and ``history.csv``); returns the new record, or None for a baseline (nothing
    trained, nothing written)."""
    config, record = folder.read_config(), folder.read_record()
    if config.get("baseline"):
        return None
    run = run_spec_from_config(config)
    per_image = flops_of(runtime, run, len(config["normalization"]["mean"]))
    dataset = runtime.build("dataset", run.dataset, split="train", image_size=run.image_size)
    batch = train_batch_size(run.train, len(dataset))
    steps = trained_steps(record, folder.history(), batch, len(dataset))
    record = {**record, "flops_per_image": per_image, "train_flops": per_image * batch * steps}
    folder.write_metrics(record)
    return record


def main(argv: list[str] | None = None) -> int:
    """``python -m mimbench.compute RUN_DIR...``: :func:`add_flops` for each run folder."""
    parser = argparse.ArgumentParser(prog="python -m mimbench.compute", description=(
        "Add flops_per_image and train_flops to finished runs' metrics.json, counted from their config.json."))
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="OUT/<suite>/runs/<run_id>")
    parser.add_argument("--plugin", action="append", default=[], help="plugin .py file or module the runs used")
    args = parser.parse_args(argv)
    runtime = Runtime(PluginSources.from_cli(tuple(args.plugin)), "cpu")
    failed = 0
    for run_dir in args.run_dirs:
        try:
            record = add_flops(RunFolder(run_dir), runtime)
        except Exception as exc:  # one run's problem; the others are still done
            failed += 1
            print(f"{run_dir}: not changed ({type(exc).__name__}: {exc})", file=sys.stderr)
        else:
            print(f"{run_dir}: " + ("a baseline, nothing trained: left as it was" if record is None else
                                    f"flops_per_image {record['flops_per_image']:.4g}, "
                                    f"train_flops {record['train_flops']:.4g}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
