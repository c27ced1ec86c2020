"""The ``supervised`` control: the run's encoder trained on the labels instead of on hidden pixels.

Read it top to bottom: a linear head on the encoder's mean-pooled output, cross-entropy on the
labelled train split (the probes' ``train``: the suite's dataset, or ``eval.dataset``), with the
partner runs' training settings (``train.epochs``, batch, lr, weight decay, warm-up and cosine
schedule, grad clip, augmentation, precision), AdamW, every random draw from a generator seeded with the run's
seed. Nothing is hidden: the encoder sees every pixel. The head is thrown away; the probes then
measure the encoder like any other, so that the papers' contrasts (attention distance and CKA of
MIM against supervised pre-training) can be measured in the same suite.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from mimbench.augment import random_resized_crop
from mimbench.data import Images, Normalizer
from mimbench.optim import autocast_for, param_groups, warmup_cosine
from mimbench.schema import TrainConfig
from mimbench.train import train_batch_size


@dataclass(frozen=True)
class SupervisedResult:
    """What one supervised training did: its steps and epochs, the last epoch's mean cross-entropy
    (None when it turned non-finite: the run diverged), seconds and images per second."""

    steps: int
    epochs: int
    final_loss: float | None
    seconds: float
    images_per_second: float


def train_supervised(encoder: nn.Module, data: Images, normalize: Normalizer, train: TrainConfig, seed: int,
                     device: torch.device, desc: str = "supervised", show_progress: bool = True) -> SupervisedResult:
    """Train ``encoder`` (and a linear head, discarded) to classify ``data`` (uint8 batches with labels,
    on ``device``) for ``train.epochs`` epochs of ``len(data) // batch`` steps. A FLOP budget
    (``train.budget_flops``) is refused: the control trains for its partners' epochs."""
    if train.budget_flops is not None:
        raise ValueError("the supervised baseline trains for train.epochs; a suite with train.budget_flops cannot "
                         "have one (drop supervised from eval.baselines)")
    encoder = encoder.to(device).train()
    head = nn.Linear(encoder.out_dim, data.num_classes).to(device)
    optimizer = torch.optim.AdamW(param_groups([encoder, head], train.weight_decay), lr=train.lr)
    batch_size = train_batch_size(train, len(data))
    steps_per_epoch = len(data) // batch_size
    total_steps = steps_per_epoch * train.epochs
    warmup_steps = round(min(train.warmup_epochs * steps_per_epoch, 2.0**62))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    generator = torch.Generator(device=device).manual_seed(seed)
    bar = tqdm(total=total_steps, desc=desc, unit="step", leave=False, dynamic_ncols=True,
               disable=None if show_progress else True)
    start, loss_sum, final_loss = time.perf_counter(), torch.zeros((), device=device), None
    for _ in range(train.epochs):
        loss_sum.zero_()
        for _, (batch, labels) in zip(range(steps_per_epoch), data.batches(batch_size, generator)):
            images = normalize(batch)
            if train.augment is not None:
                images = random_resized_crop(images, generator, train.augment.crop_scale, train.augment.crop_ratio,
                                             train.augment.flip)
            with autocast_for(device, train.precision):
                logits = head(encoder(images).float().mean(dim=(2, 3)))
            loss = nn.functional.cross_entropy(logits.float(), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if train.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, train.grad_clip)
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach()
            bar.update(1)
        final_loss = loss_sum.item() / steps_per_epoch
        if not math.isfinite(final_loss):
            break
    bar.close()
    seconds = time.perf_counter() - start
    encoder.eval()
    done = final_loss is not None and math.isfinite(final_loss)
    return SupervisedResult(schedule.last_epoch, train.epochs, final_loss if done else None, seconds,
                            schedule.last_epoch * batch_size / max(seconds, 1e-9))
