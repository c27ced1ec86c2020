"""The worker side: execute one :class:`~mimbench.jobs.Task`, in this process or any other.

:func:`run_task` is what an executor calls: it takes the :class:`~mimbench.runtime.Runtime` it is
given (a :class:`Worker` keeps one from task to task) or makes one from the task (plugins, device,
then the data), and calls :func:`execute`, which trains and
evaluates (or runs the probes of a baseline) and writes the run folder: ``config.json`` first,
``metrics.json`` last and atomically (the run is finished), ``error.txt`` when the run raised.
It writes nothing outside that folder.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from mimbench.folder.checkpoint import CHECKPOINT_FILE, Checkpointing
from mimbench.folder.lock import LockLost
from mimbench.compute import run_flops_per_image
from mimbench.distributed import is_distributed, pretrain_distributed
from mimbench.errors import one_line
from mimbench.evaluate import reconstruction_grid, reconstruction_metrics
from mimbench.folder import RunFolder, SuiteFolder
from mimbench.folder.summary import summary_row
from mimbench.jobs import Outcome, Task
from mimbench.memory import PeakMemory
from mimbench.optim import gpu_numerics, resolved_precision
from mimbench.probe_runs import add_probes, baseline_encoder, run_probes
from mimbench.protocols import capability
from mimbench.provenance import job_code, tree_hashes
from mimbench.record import Reconstruction, RunRecord, Training
from mimbench.runtime import Runtime, SuiteData
from mimbench.specs import FINISHED, BaselineSpec, RunSpec, Status
from mimbench.supervised import train_supervised
from mimbench.tracking import RunEvents
from mimbench.train import Components, Session, pretrain, target_state, train_batch_size
from mimbench.version import __version__


class Worker:
    """Executes tasks in one process with one :class:`~mimbench.runtime.Runtime`, kept from task to
    task while they share plugins and device (the data of their suite stays loaded). An in-process
    executor is given the driver's (its ``use_runtime``); elsewhere the first task makes one."""

    def __init__(self, runtime: Runtime | None = None):
        self.runtime = runtime

    def run(self, task: Task) -> Outcome:
        """Execute ``task`` (see :func:`run_task`)."""
        if self.runtime is None or not self.runtime.serves(task.plugins, task.device):
            try:
                self.runtime = Runtime(task.plugins, task.device)
            except Exception:  # no such device here, a plugin that fails to load: run_task records it
                self.runtime = None
                return run_task(task)
        return run_task(task, self.runtime)


def run_task(task: Task, runtime: Runtime | None = None) -> Outcome:
    """Execute ``task``: what every executor calls, wherever it runs. ``runtime``: the one to use
    (made for the task's plugins and device); None: made here from the task."""
    suite_dir = Path(task.suite_dir)
    if not suite_dir.is_dir():
        return Outcome.failed(f"the worker on {socket.gethostname()} cannot see the suite folder {suite_dir}: "
                              f"the results folder must be on storage every node sees")
    # Only when it changes the count: setting torch's own default again made training ~25% slower
    # on a 2-core CPU (benchmarks/README.md), for the same numbers.
    if task.threads is not None and task.threads != torch.get_num_threads():
        torch.set_num_threads(task.threads)
    try:
        runtime = runtime if runtime is not None else Runtime(task.plugins, task.device)
    except Exception as exc:  # no such device here, a plugin that fails to load: this run fails
        folder = SuiteFolder(suite_dir).run(task.job.run_id, task.lock_token)
        try:
            if not task.probes_to_add:
                folder.reset()
                folder.write_error(traceback.format_exc())
        except LockLost as lost:
            return Outcome.failed(str(lost))
        return Outcome.failed(one_line(exc))
    return execute(runtime, task)


def execute(runtime: Runtime, task: Task) -> Outcome:
    """Run ``task`` and write its run folder; every exception of the run is caught and recorded
    (``error.txt``, a failed outcome). Only the death of the process itself escapes.

    This is the one place where a run's events are sent (:class:`~mimbench.tracking.RunEvents`:
    the ``mimbench_run_started``, ``mimbench_step_logged``, ``mimbench_epoch_finished`` and
    ``mimbench_run_finished`` hooks, to which the suite's trackers are attached), so they happen
    wherever the run executes."""
    folder = SuiteFolder(task.suite_dir).run(task.job.run_id, task.lock_token)
    events = RunEvents(runtime.registry, task.trackers, task.suite_dir)
    try:
        with gpu_numerics(runtime.device):
            outcome = add_probes(runtime, task, folder) if task.probes_to_add else _execute_and_record(
                runtime, task, folder, events)
    except LockLost as exc:  # the driver is gone: the folder may be another driver's now
        return Outcome.failed(str(exc))
    finished = outcome.record if outcome.status in FINISHED else None  # as just written: not read back
    events.finished(folder.path, summary_row(task.job, folder, finished))
    return Outcome(outcome.record, outcome.note, tuple(events.warnings))


def _execute_and_record(runtime: Runtime, task: Task, folder: RunFolder, events: RunEvents) -> Outcome:
    """Run ``task``'s job (not a probe addition) into ``folder``: ``metrics.json`` when it ends,
    ``error.txt`` when it raises."""
    folder.reset(keep=(CHECKPOINT_FILE,))  # a killed run continues from its checkpoint
    started = time.perf_counter()
    try:
        record = replace(_execute_job(runtime, task, folder, events),
                         wall_seconds=round(time.perf_counter() - started, 3))
        folder.write_metrics(record.to_json())  # last: marks the run as finished
        if not (isinstance(task.job, RunSpec) and task.job.train.keep_checkpoint):
            folder.remove_checkpoint()
        return Outcome(record.to_json(), _checkpoint_text(record.training))
    except LockLost:
        raise
    except Exception as exc:  # the run fails; the suite goes on
        try:
            folder.write_error(traceback.format_exc())
        except OSError as unwritable:  # a full disk: the file that failed first is the one to name
            raise (exc if isinstance(exc, OSError) else unwritable) from None
        return Outcome.failed(one_line(exc))


@dataclass(frozen=True)
class RunContext:
    """What executing one job needs: the runtime, the task, its suite's data, its run folder, its
    events, and the code that makes it (:func:`~mimbench.provenance.job_code`, as ``config.json`` has it)."""

    runtime: Runtime
    task: Task
    data: SuiteData
    folder: RunFolder
    events: RunEvents
    code: dict[str, dict[str, str]]

    def epoch_finished(self, history: list[dict[str, float]]) -> None:
        """``history.csv`` rewritten with the epoch just finished, then the epoch's event."""
        self.folder.write_history(history)
        self.events.epoch(self.folder.path, history[-1])

    def step_logged(self, step: int, values: dict[str, float]) -> None:
        self.events.step(self.folder.path, step, values)


def _checkpoint_text(training: Training | None) -> str:
    """What the run's console line says of its checkpoint: continued from, or set aside and why."""
    if training is not None and training.resumed_from_epoch is not None:
        return f"continued from its checkpoint after epoch {training.resumed_from_epoch}"
    return (training.checkpoint_note if training is not None else None) or ""


def _execute_job(runtime: Runtime, task: Task, folder: RunFolder, events: RunEvents) -> RunRecord:
    """The job's record (but the wall time), its ``config.json`` written first."""
    data = runtime.data(task.job.data)
    config = run_config_file(task, data, runtime)
    folder.write_config(config)
    events.started(folder.path, config)
    context = RunContext(runtime, task, data, folder, events, config["code"])
    with PeakMemory(runtime.device) as peak:
        if isinstance(task.job, BaselineSpec):
            record = execute_baseline(context)
        elif task.pretrained_in is not None:
            record = execute_evaluation(context, SuiteFolder(task.suite_dir).run(task.pretrained_in))
        else:
            record = execute_run(context)
    peaks = [mb for mb in (peak.mb, record.peak_memory_mb) if mb is not None]  # DDP: the ranks' too
    return replace(record, peak_memory_mb=max(peaks) if peaks else None)


def execute_run(context: RunContext) -> RunRecord:
    """Pre-train and evaluate one run, writing its files but metrics.json; returns its record. Each
    epoch's history row goes to ``history.csv`` and the run's events, each ``train.log_every`` loss
    read-out (:func:`~mimbench.train.pretrain`'s, rank 0's under DDP) to its events. With
    ``train.devices`` > 1 the pre-training runs on that many DDP processes."""
    runtime, job, data, folder, task = context.runtime, context.task.job, context.data, context.folder, context.task
    torch.manual_seed(job.seed)
    parts = runtime.components(job, data.train.channels)
    flops_per_image = counted_flops(parts, job, data.train.channels, runtime.device)
    checkpoint = Checkpointing.for_run(folder.path, job.train, {"run_id": job.run_id, "code": tree_hashes(context.code)},
                                       before_save=folder.writable)
    session = Session(task.label or "train", task.show_progress, flops_per_image=flops_per_image,
                      checkpoint=checkpoint, on_epoch=context.epoch_finished, on_log=context.step_logged)
    if is_distributed(job):
        result = pretrain_distributed(job, runtime.plugins, parts, runtime.device, session)
    else:
        result = pretrain(parts, data.train, data.normalize, job.train, job.seed, runtime.device, session)
    training = replace(training_part(result, flops_per_image, train_batch_size(job.train, len(data.train))),
                       precision=resolved_precision(job.train.precision, runtime.device))
    record = RunRecord(Status(result.status).value, training, peak_memory_mb=result.peak_memory_mb)
    folder.save_encoder(parts.encoder)
    state = target_state(parts.target)
    if state is not None:  # a target with state (ema_teacher's teacher) is part of what the run learned
        folder.save_target(state)
    if result.status == Status.DONE:
        reconstruction = measure_reconstruction(context, parts)
        record = replace(record, reconstruction=reconstruction,
                         probes=run_probes(runtime, job, job.eval.probes, parts.encoder, data, folder))
    return record


def training_part(result: Any, flops_per_image: float | None, batch_size: int) -> Training:
    """The pre-training's part of a run's record, from its :class:`~mimbench.train.TrainResult`.
    The epoch whose loss turned non-finite did not complete; its loss is kept as text ("nan",
    "inf"), since JSON has no such number."""
    completed = result.history if result.status == Status.DONE else result.history[:-1]
    counted = flops_per_image is not None
    return Training(
        train_seconds=round(result.seconds, 3), images_per_second=round(result.images_per_second, 1),
        epochs_completed=len(completed), final_loss=completed[-1]["loss"] if completed else None,
        train_steps=result.steps, epochs=round(result.epochs, 4),
        flops_per_image=flops_per_image, train_flops=flops_per_image * batch_size * result.steps if counted else None,
        compile_seconds=round(result.compile_seconds, 3) if result.compile_seconds else None,
        diverged_loss=str(result.history[-1]["loss"]) if result.status == Status.DIVERGED else None,
        resumed_from_epoch=result.resumed_from_epoch, checkpoint_note=result.checkpoint_note or None)


def measure_reconstruction(context: RunContext, parts: Components) -> Reconstruction:
    """A trained run's reconstruction metrics (own masker, reference masker), the classical
    reconstructions' on the own masker's masks (:mod:`mimbench.classical`), and its picture."""
    runtime, job, data = context.runtime, context.task.job, context.data
    evaluation, device = job.eval, runtime.device
    to_image, uses_target_stats = prediction_to_image(parts)
    measure = lambda masker, classical: reconstruction_metrics(  # noqa: E731
        parts, masker, data.test, data.normalize, evaluation.mask_seed, evaluation.batch_size, device, to_image, classical)
    own = measure(parts.masker, evaluation.classical_reference)
    reference = {} if evaluation.reference_masker is None else \
        measure(runtime.build("masker", evaluation.reference_masker), False)
    if to_image is not None:  # a prediction that is not an image has no picture
        context.folder.save_reconstructions(reconstruction_grid(parts, parts.masker, data.test, data.normalize,
                                                                evaluation.mask_seed, device, to_image))
    # a reconstruction de-normalised with the hidden patch's own statistics (norm_pix) was handed what
    # inpainting must guess: no gain over it is claimed
    gain = None if own.get("psnr") is None or uses_target_stats or "inpaint_psnr" not in own \
        else own["psnr"] - own["inpaint_psnr"]
    return Reconstruction(recon_mse=own.get("mse"), recon_psnr=own.get("psnr"), mask_ratio_actual=own["mask_ratio"],
                          mask_avgdist_px=own["mask_avgdist"], recon_uses_target_stats=uses_target_stats,
                          target_loss=own.get("target_loss"), ref_mse=reference.get("mse"),
                          ref_psnr=reference.get("psnr"), ref_target_loss=reference.get("target_loss"),
                          recon_ssim=own.get("ssim"), ref_ssim=reference.get("ssim"),
                          inpaint_psnr=own.get("inpaint_psnr"), inpaint_ssim=own.get("inpaint_ssim"),
                          meanfill_psnr=own.get("meanfill_psnr"), meanfill_ssim=own.get("meanfill_ssim"),
                          inpaint_gain_psnr=gain)


def prediction_to_image(parts: Components) -> tuple[Any, bool]:
    """How a prediction maps to the normalised image (None: it does not), and whether that uses
    the target's own statistics. A loss that trains on norm_pix (its ``norm_pix`` param) says so
    itself; otherwise the target's ``to_image`` (``pixels``: the identity)."""
    from_loss = capability("loss", parts.loss, "prediction_to_image")
    if from_loss is not None:
        return from_loss, True
    return capability("target", parts.target, "to_image"), capability("target", parts.target, "uses_target_stats")


def counted_flops(parts: Components, job: RunSpec, channels: int, device: torch.device) -> float | None:
    """The run's FLOPs per training image (:func:`~mimbench.compute.run_flops_per_image`; training is
    unchanged by it). None where they cannot be counted (a component that cannot be deep-copied)
    and the run does not need them; with ``train.budget_flops`` it does, and the error is raised."""
    try:
        return run_flops_per_image(parts, job, channels, device)
    except Exception:
        if job.train.budget_flops is not None:
            raise
        return None


def execute_evaluation(context: RunContext, source: RunFolder) -> RunRecord:
    """Evaluate the encoder another run of the suite pre-trained the same way (``source``, a run
    with another ``labels_per_class``): its pre-training and reconstruction are carried over (with
    its history, whose rows are this run's epoch events, and its picture), the probes run with this
    job's labels."""
    runtime, job, data, folder = context.runtime, context.task.job, context.data, context.folder
    pretrained = RunRecord.from_json(source.read_record())
    training = pretrained.training and replace(pretrained.training, resumed_from_epoch=None, checkpoint_note=None)
    record = RunRecord(pretrained.status, training, pretrained.reconstruction, pretrained_in=source.run_id)
    folder.copy_pretraining_from(source)
    for row in folder.history():
        context.events.epoch(folder.path, row)
    if record.status == Status.DONE:
        encoder = runtime.encoder(job, data.train.channels)
        encoder.load_state_dict(source.encoder_state())
        record = replace(record, probes=run_probes(runtime, job, job.eval.probes, encoder, data, folder))
    return record


def execute_baseline(context: RunContext) -> RunRecord:
    """The probes on an untrained encoder, on raw pixels, or on the encoder trained on the labels
    (``supervised``: :func:`~mimbench.supervised.train_supervised`, its weights saved as
    ``encoder.pt``); returns the run's record."""
    runtime, job, data = context.runtime, context.task.job, context.data
    encoder = baseline_encoder(runtime, job, data)
    training = None
    if job.kind == "supervised":
        result = train_supervised(encoder, data.probe_train, data.normalize, job.train, job.seed, runtime.device,
                                  context.task.label or "supervised", context.task.show_progress)
        training = Training(train_seconds=round(result.seconds, 3), images_per_second=round(result.images_per_second, 1),
                            epochs_completed=result.epochs, final_loss=result.final_loss, train_steps=result.steps,
                            epochs=float(result.epochs),
                            precision=resolved_precision(job.train.precision, runtime.device))
        context.folder.save_encoder(encoder)
        if result.final_loss is None:
            return RunRecord(Status.DIVERGED.value, training)
    return RunRecord(Status.DONE.value, training,
                     probes=run_probes(runtime, job, job.eval.probes, encoder, data, context.folder))


def run_config_file(task: Task, data: SuiteData, runtime: Runtime) -> dict[str, Any]:
    """config.json: the resolved run config plus what is needed to reproduce it."""
    device = runtime.device
    return {
        "run_id": task.job.run_id,
        "suite": Path(task.suite_dir).name,
        "label": task.label,
        **task.job.config(),
        "normalization": {"mean": data.normalize.mean.tolist(), "std": data.normalize.std.tolist()},
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "threads": torch.get_num_threads(),  # CPU results are bit-identical only at the same count
        "code": job_code(runtime.registry, task.job),  # what made the run: compared before it is reused
        "versions": {
            "mimbench": __version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "plugins": {name: f"{p.name} {p.version}".strip() for name, p in runtime.registry.plugins.providers.items()},
        },
    }
