"""One run: build its components, pre-train them SimMIM-style, return what was learned.

Read it top to bottom: data stays on the device as uint8 (or streams in, when too
large); each step takes a shuffled batch and makes its mask (on CUDA a background thread makes
the next one while the current step runs), hides those pixels, predicts the run's target (the
image itself by default) at the hidden cells and steps AdamW; a target with state (an EMA
teacher) is updated after the step.
The loss is read back to the host only every ``log_every`` steps. ``train.compile`` runs the step's model through
``torch.compile``; under ``train.devices`` > 1 each process trains on its share of every batch
(``Shard``) inside DistributedDataParallel.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import closing
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from mimbench.contract import Components, check_mask
from mimbench.errors import one_line
from mimbench.data import Images, Normalizer
from mimbench.folder.checkpoint import Checkpointing, implausible, random_states, restore_random_states
from mimbench.optim import gpu_numerics, param_groups, warmup_cosine
from mimbench.prefetch import prefetched
from mimbench.protocols import capability
from mimbench.specs import Status
from mimbench.schema import MAX_COUNT, TrainConfig
from mimbench.steps import MaskedModel, masked_batches


@dataclass
class TrainResult:
    status: Status
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch (the last may be partial)
    steps: int = 0  # optimizer steps taken
    epochs: float = 0.0  # steps / steps per epoch: fractional when train.budget_flops ends inside an epoch
    seconds: float = 0.0
    images_per_second: float = 0.0  # global batch images per second, the compiling step left out
    compile_seconds: float = 0.0  # the first compiled step, compilation included (0: not compiled)
    peak_memory_mb: float | None = None  # under DDP: the training process's own peak (mimbench.memory)
    resumed_from_epoch: int | None = None  # continued from a checkpoint saved after this many epochs
    checkpoint_note: str = ""  # why a checkpoint that was there was not continued from


def target_state(target: object) -> dict[str, torch.Tensor] | None:
    """What a target saves with its run (``target.pt``): the state_dict of a target that is a module
    and has one (ema_teacher's teacher); None for a stateless target."""
    if not isinstance(target, nn.Module):
        return None
    return {name: value.detach().cpu() for name, value in target.state_dict().items()} or None


def train_batch_size(train: TrainConfig, train_images: int) -> int:
    """The global batch a step trains on: ``train.batch_size``, or every image when there are fewer."""
    return min(train.batch_size, train_images)


def planned_steps(train: TrainConfig, train_images: int, flops_per_image: float | None = None) -> int:
    """How many optimizer steps a run takes: ``epochs`` x steps per epoch, or with ``train.budget_flops``
    the steps whose FLOPs come nearest the budget, ``round(budget / (flops_per_image x batch))``, at
    least one. ``flops_per_image`` (forward + backward of one training image) is needed for a budget."""
    batch = train_batch_size(train, train_images)
    budget = train.budget_flops
    if budget is None:
        return train_images // batch * train.epochs
    if not flops_per_image or flops_per_image <= 0:
        raise ValueError(f"train.budget_flops needs the FLOPs of a step, counted {flops_per_image!r}: nothing the "
                         f"FLOP counter knows (matrix products, convolutions, attention) runs in this model")
    steps = max(1, round(budget / (flops_per_image * batch)))
    if steps > MAX_COUNT:
        raise ValueError(f"train.budget_flops {budget:g} is {steps:,} steps of {flops_per_image * batch:.3g} FLOPs, "
                         f"more than {MAX_COUNT:,}")
    return steps
@dataclass(frozen=True)
class Shard:
    """Which share of every global batch this process trains on: rank ``rank`` of ``world``
    DistributedDataParallel processes (rank 0 of 1: the whole batch, no DDP)."""

    rank: int = 0
    world: int = 1

    def take(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous 1 / world of a global batch [B, ...] (B divisible by world)."""
        if self.world == 1:
            return batch
        share = batch.shape[0] // self.world
        return batch[self.rank * share:(self.rank + 1) * share]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar tensor over the ranks (itself when there is one)."""
        if self.world == 1:
            return value
        value = value.detach().clone()
        torch.distributed.all_reduce(value)
        return value / self.world


def compiled(model: nn.Module, setting: bool | str) -> nn.Module | None:
    """``torch.compile(model)`` for ``train.compile`` true or a mode name; None when it is false."""
    if setting is False:
        return None
    return torch.compile(model, mode=None if setting is True else setting)


@dataclass(frozen=True)
class Session:
    """How one pre-training is run, beyond what it trains: its progress bar (``desc``,
    ``show_progress``), its ``shard`` under DDP, its ``flops_per_image`` (needed with
    ``train.budget_flops``), its ``checkpoint``, and who hears of it: ``on_epoch(history)`` after each
    epoch, ``on_log(step, {"loss", "lr"})`` at each ``log_every`` read-out (both on rank 0 only)."""

    desc: str = "train"
    show_progress: bool = True
    shard: Shard = Shard()
    flops_per_image: float | None = None
    checkpoint: Checkpointing | None = None
    on_epoch: Callable[[list[dict[str, float]]], None] | None = None
    on_log: Callable[[int, dict[str, float]], None] | None = None

    def epoch_finished(self, history: list[dict[str, float]]) -> None:
        if self.on_epoch is not None and self.shard.rank == 0:
            self.on_epoch(history)


def pretrain(parts: Components, data: Images, normalize: Normalizer, train: TrainConfig, seed: int,
             device: torch.device, session: Session = Session()) -> TrainResult:
    """Pre-train encoder + decoder to reconstruct hidden pixels of ``data`` (uint8 batches on ``device``)
    for :func:`planned_steps` steps; the warm-up and cosine schedule follow those steps, and the
    last epoch may be partial. ``session``: how it is run and watched (:class:`Session`).

    With ``session.checkpoint``, the whole training state is saved at the epoch ends it says (rank
    0), and a run that finds its own checkpoint continues from it: every random draw comes from
    generators saved with it, so the result is the one an uninterrupted run gets.

    ``on_log`` gets, at each ``log_every`` read-out, the global step and the mean loss of the steps
    since the previous read-out of the epoch (no extra host sync).

    Under DDP every rank runs this with its ``shard``: all ranks draw the same global batches
    and masks from ``seed`` and each trains on its share; DDP averages the gradients.
    """
    shard, checkpoint = session.shard, session.checkpoint
    loop = _Loop.start(parts, len(data), train, device, shard, session.flops_per_image)
    loop.on_log = session.on_log if shard.rank == 0 else None
    generator = torch.Generator(device=device).manual_seed(seed)  # shuffling, augmentation and masks
    if checkpoint is not None:
        loop.resume(checkpoint, generator)
        if shard.rank == 0:  # the epochs before the checkpoint, for history.csv and the trackers
            for epoch in range(len(loop.result.history)):
                session.epoch_finished(loop.result.history[:epoch + 1])
    start = time.perf_counter()
    # per-step bar on a terminal only; logs get the suite bar and one line per run
    loop.bar = tqdm(total=loop.total_steps, initial=loop.step, desc=session.desc, unit="step", leave=False,
                    dynamic_ncols=True, disable=None if session.show_progress and shard.rank == 0 else True)
    for epoch in range(len(loop.result.history), loop.epochs):
        batches = masked_batches(data, loop.batch_size, generator, normalize, train.augment, parts.masker)
        # On CUDA the next batch and its mask are made in a background thread while a step runs: their
        # kernels queue behind the step's, and a masker's host syncs no longer stall it. On CPU the step
        # already keeps every core busy and a second thread only competes with it (benchmarks/README.md).
        # One stream per epoch: at its end every draw of the epoch, and no more, is made (a checkpoint's state).
        stream = prefetched(batches) if device.type == "cuda" else batches
        with closing(stream), gpu_numerics(device):  # TF32 on a GPU, also where pretrain is called directly
            loop.result.history.append(loop.epoch(stream, epoch))
        session.epoch_finished(loop.result.history)
        if not math.isfinite(loop.result.history[-1]["loss"]):
            loop.result.status = Status.DIVERGED
            break
        if checkpoint is not None and shard.rank == 0 and epoch + 1 < loop.epochs and checkpoint.due(epoch + 1):
            checkpoint.save(loop.state(generator, loop.prior_seconds + time.perf_counter() - start))
    return loop.finish(start)


@dataclass
class _Loop:
    """The state of one pre-training: what :func:`pretrain` steps through, epoch by epoch."""

    parts: Components
    model: nn.Module
    fast_model: nn.Module | None
    optimizer: torch.optim.Optimizer
    params: list[torch.Tensor]
    schedule: torch.optim.lr_scheduler.LRScheduler
    train: TrainConfig
    shard: Shard
    device: torch.device
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    result: TrainResult = field(default_factory=lambda: TrainResult(Status.DONE))
    bar: tqdm | None = None
    step: int = 0
    first_step: int = 0  # the step this process started from (> 0: continued from a checkpoint)
    prior_seconds: float = 0.0  # training time before the checkpoint this process continued from
    on_log: Callable[[int, dict[str, float]], None] | None = None  # pretrain's on_log (rank 0)

    @classmethod
    def start(cls, parts: Components, images: int, train: TrainConfig, device: torch.device, shard: Shard,
              flops_per_image: float | None) -> "_Loop":
        """The model (DDP-wrapped, compiled as asked), AdamW and its schedule, and the step plan."""
        encoder, decoder = parts.encoder.to(device).train(), parts.decoder.to(device).train()
        if isinstance(parts.target, nn.Module):
            parts.target.to(device).train()
        model: nn.Module = MaskedModel(parts, train.precision)
        if shard.world > 1:
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device] if device.type == "cuda" else None)
        fast_model = compiled(model, train.compile)
        optimizer = torch.optim.AdamW(param_groups([encoder, decoder], train.weight_decay), lr=train.lr)
        batch_size = train_batch_size(train, images)
        if batch_size % shard.world:
            raise ValueError(f"train.batch_size {batch_size} is not divisible by train.devices {shard.world}")
        steps_per_epoch = images // batch_size  # drop the ragged last batch
        total_steps = planned_steps(train, images, flops_per_image)
        warmup_steps = round(min(train.warmup_epochs * steps_per_epoch, 2.0**62))  # 1e308 epochs: never warm
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps))
        params = [p for group in optimizer.param_groups for p in group["params"]]
        return cls(parts, model, fast_model, optimizer, params, schedule, train, shard, device, batch_size,
                   steps_per_epoch, total_steps)

    @property
    def epochs(self) -> int:
        return -(-self.total_steps // self.steps_per_epoch)

    def stateful(self) -> dict[str, nn.Module]:
        """The run's components that are modules, by role: what a checkpoint saves of them."""
        parts = self.parts
        named = {"encoder": parts.encoder, "decoder": parts.decoder, "loss": parts.loss, "target": parts.target,
                 "masker": parts.masker}
        return {name: module for name, module in named.items() if isinstance(module, nn.Module)}

    def state(self, generator: torch.Generator, seconds: float) -> dict:
        """Everything needed to continue after the current epoch end (see :mod:`mimbench.folder.checkpoint`)."""
        return {"step": self.step, "total_steps": self.total_steps, "steps_per_epoch": self.steps_per_epoch,
                "history": [dict(row) for row in self.result.history], "seconds": seconds,
                "modules": {name: module.state_dict() for name, module in self.stateful().items()},
                "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "random": random_states(generator)}

    def resume(self, checkpoint: Checkpointing, generator: torch.Generator) -> None:
        """Continue from ``checkpoint`` when it holds this run's state; else set it aside, say why
        (the result's ``checkpoint_note``) and start from step 0, from the state it would have had."""
        state, why = checkpoint.load()
        if state is not None:
            why = implausible(state, self.total_steps, self.steps_per_epoch) or self.apply(state, generator)
        if state is None and not why:  # no checkpoint: the run starts at step 0
            return
        if why:
            moved = checkpoint.set_aside()
            aside = f"; set aside as {moved}," if moved else ";"
            self.result.checkpoint_note = f"{why}{aside} starting over"
            return
        self.step = self.first_step = state["step"]
        self.prior_seconds = state["seconds"]
        self.result.history = [dict(row) for row in state["history"]]
        self.result.resumed_from_epoch = len(self.result.history)

    def apply(self, state: dict, generator: torch.Generator) -> str:
        """Load ``state``'s modules, AdamW, schedule and generators; ``""``, or why it could not be
        applied (a key missing, a tensor of another shape...), everything then put back as it was."""
        fresh = {"modules": {name: copy.deepcopy(module.state_dict()) for name, module in self.stateful().items()},
                 "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                 "schedule": copy.deepcopy(self.schedule.state_dict()), "random": random_states(generator)}
        try:
            self._load(state, generator)
        except Exception as exc:  # whatever the state holds, the run starts over from its own start
            self._load(fresh, generator)
            return f"its checkpoint could not be applied ({one_line(exc)})"
        return ""

    def _load(self, state: dict, generator: torch.Generator) -> None:
        for name, module in self.stateful().items():
            module.load_state_dict(state["modules"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        restore_random_states(state["random"], generator)

    def epoch(self, stream: Iterator[tuple[torch.Tensor, torch.Tensor]], epoch: int) -> dict[str, float]:
        """One epoch (the last may be partial); its ``history.csv`` row."""
        epoch_start = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        logged = (0.0, 0)  # the epoch's loss sum and steps at the last on_log call
        for i, (images, mask) in zip(range(min(self.steps_per_epoch, self.total_steps - self.step)), stream):
            loss_sum += self.training_step(images, mask)
            self.bar.update(1)
            if self.step % self.train.log_every == 0:
                total = self.shard.mean(loss_sum).item()  # the only host sync inside an epoch
                running = total / (i + 1)
                self.bar.set_postfix(epoch=epoch + 1, loss=f"{running:.4f}")
                if self.on_log is not None:  # the mean loss of the steps since the last call
                    self.on_log(self.step, {"loss": (total - logged[0]) / (i + 1 - logged[1]),
                                            "lr": self.optimizer.param_groups[0]["lr"]})
                    logged = (total, i + 1)
                if not math.isfinite(running):  # every rank sees the same mean: all stop together
                    break
        seconds = time.perf_counter() - epoch_start
        compiling = self.result.compile_seconds if epoch == (self.result.resumed_from_epoch or 0) else 0.0
        return {"epoch": epoch + 1, "loss": self.shard.mean(loss_sum).item() / (i + 1),
                "lr": self.optimizer.param_groups[0]["lr"],
                "images_per_second": (i + 1 - (compiling > 0)) * self.batch_size / max(seconds - compiling, 1e-9),
                "seconds": seconds}

    def training_step(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One optimizer step on this rank's share of a global batch; its loss (on the device)."""
        if self.step == 0:  # checked eagerly, before any compiled step
            check_mask(mask, images)
        # the first compiled step, compilation included (step 0 runs eagerly, to check)
        compiling = self.fast_model is not None and self.step == self.first_step + (self.first_step == 0)
        compile_start = time.perf_counter()
        images, mask = self.shard.take(images), self.shard.take(mask)
        forward = self.model if self.step == 0 or self.fast_model is None else self.fast_model
        loss = forward(images, mask, check=self.step == 0)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.train.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.train.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        if compiling:
            self.result.compile_seconds = _synced_seconds_since(compile_start, self.device)
        self.step += 1
        update = capability("target", self.parts.target, "update")
        if update is not None:  # a target with state (ema_teacher) follows the step
            update(self.parts.encoder, self.step, self.total_steps)
        return loss.detach()

    def finish(self, start: float) -> TrainResult:
        """The result, with the run's steps, epochs and speed; the modules back in eval mode."""
        self.bar.close()
        result = self.result
        seconds = time.perf_counter() - start  # this process's share; images/s is measured on it
        result.seconds = self.prior_seconds + seconds
        result.steps, result.epochs = self.step, self.step / self.steps_per_epoch
        trained_steps = self.step - self.first_step - (1 if result.compile_seconds else 0)
        result.images_per_second = trained_steps * self.batch_size / max(seconds - result.compile_seconds, 1e-9)
        self.parts.encoder.eval(), self.parts.decoder.eval()
        return result


def _synced_seconds_since(start: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
