"""One run: build its components, pre-train them SimMIM-style, return what was learned.

Read it top to bottom: data stays on the device as uint8 (or streams in, when too
large), each step takes a shuffled batch, makes a mask for the whole batch, hides those pixels, reconstructs and
steps AdamW. The loss is read back to the host only every ``log_every`` steps.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from mimbench.augment import random_resized_crop
from mimbench.contract import check_mask, reconstruct
from mimbench.data import Images, Normalizer
from mimbench.registry import Registry


@dataclass
class Components:
    """The four trainable/callable parts of one run."""

    encoder: nn.Module
    decoder: nn.Module
    masker: Callable[..., torch.Tensor]
    loss: Callable[..., torch.Tensor]


def build_components(registry: Registry, config: dict[str, Any], in_channels: int) -> Components:
    """Build a run's components from its resolved config (seed the RNG first for a fixed init)."""
    size = config["image_size"]
    encoder = registry.build("encoder", config["encoder"]["name"], config["encoder"]["params"],
                             in_channels=in_channels, image_size=size)
    decoder = registry.build("decoder", config["decoder"]["name"], config["decoder"]["params"],
                             in_dim=encoder.out_dim, stride=encoder.stride, out_channels=in_channels, image_size=size)
    masker = registry.build("masker", config["masker"]["name"], config["masker"]["params"])
    loss = registry.build("loss", config["loss"]["name"], config["loss"]["params"])
    return Components(encoder, decoder, masker, loss)


@dataclass
class TrainResult:
    status: str  # "done" or "diverged"
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    seconds: float = 0.0
    images_per_second: float = 0.0


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices/kernels, none on biases, norms and tokens."""
    decay, no_decay = [], []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: linear warm-up from 0 to 1, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def pretrain(
    parts: Components,
    data: Images,
    normalize: Normalizer,
    train: dict[str, Any],
    seed: int,
    device: torch.device,
    on_epoch: Callable[[list[dict[str, float]]], None] = lambda history: None,
    desc: str = "train",
    show_progress: bool = True,
) -> TrainResult:
    """Pre-train encoder + decoder to reconstruct hidden pixels of ``data`` (uint8 batches on ``device``)."""
    encoder, decoder = parts.encoder.to(device).train(), parts.decoder.to(device).train()
    optimizer = torch.optim.AdamW(param_groups([encoder, decoder], train["weight_decay"]), lr=train["lr"])
    batch_size = min(train["batch_size"], len(data))
    steps_per_epoch = len(data) // batch_size  # drop the ragged last batch
    total_steps = steps_per_epoch * train["epochs"]
    warmup_steps = round(train["warmup_epochs"] * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps))
    generator = torch.Generator(device=device).manual_seed(seed)  # shuffling, augmentation and masks
    augment = train.get("augment")
    params = [p for group in optimizer.param_groups for p in group["params"]]

    result = TrainResult(status="done")
    start = time.perf_counter()
    # per-step bar on a terminal only; logs get the suite bar and one line per run
    bar = tqdm(total=total_steps, desc=desc, unit="step", leave=False, dynamic_ncols=True,
               disable=None if show_progress else True)
    step = 0
    for epoch in range(train["epochs"]):
        epoch_start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        for i, (batch, _) in enumerate(data.batches(batch_size, generator)):
            images = normalize(batch)
            if augment is not None:
                images = random_resized_crop(images, generator, augment["crop_scale"], augment["crop_ratio"],
                                             augment["flip"])
            mask = parts.masker(images, generator)
            if step == 0:
                check_mask(mask, images)
            with autocast_for(device):
                pred = reconstruct(encoder, decoder, images, mask, check=step == 0)
            loss = parts.loss(pred.float(), images, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if train["grad_clip"] is not None:
                torch.nn.utils.clip_grad_norm_(params, train["grad_clip"])
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach()
            step += 1
            bar.update(1)
            if step % train["log_every"] == 0:
                running = loss_sum.item() / (i + 1)  # the only host sync inside an epoch
                bar.set_postfix(epoch=epoch + 1, loss=f"{running:.4f}")
                if not math.isfinite(running):
                    break
        mean_loss = loss_sum.item() / max(1, i + 1)
        seconds = time.perf_counter() - epoch_start
        result.history.append({
            "epoch": epoch + 1,
            "loss": mean_loss,
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_second": (i + 1) * batch_size / seconds,
            "seconds": seconds,
        })
        on_epoch(result.history)
        if not math.isfinite(mean_loss):
            result.status = "diverged"
            break
    bar.close()
    result.seconds = time.perf_counter() - start
    result.images_per_second = step * batch_size / result.seconds
    encoder.eval(), decoder.eval()
    return result
