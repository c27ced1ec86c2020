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
from pathlib import Path
from typing import Any, Callable

import torch

from mimbench.columns import PRETRAINING_COLUMNS, declared_by
from mimbench.folder.checkpoint import CHECKPOINT_FILE, Checkpointing
from mimbench.folder.lock import LockLost
from mimbench.compute import run_flops_per_image
from mimbench.contract import check_probe_output
from mimbench.data import Images, class_balanced_indices
from mimbench.distributed import is_distributed, pretrain_distributed
from mimbench.errors import cut, one_line
from mimbench.evaluate import reconstruction_grid, reconstruction_metrics
from mimbench.folder import DamagedFile, RunFolder, SuiteFolder
from mimbench.folder.summary import summary_row
from mimbench.jobs import Outcome, Task
from mimbench.memory import PeakMemory
from mimbench.optim import gpu_numerics
from mimbench.probing import ProbeContext, RawPixels
from mimbench.protocols import capability
from mimbench.provenance import job_code, tree_hashes
from mimbench.runtime import Runtime, SuiteData
from mimbench.specs import BaselineSpec, Component, Job, RunSpec, Status
from mimbench.tracking import RunEvents
from mimbench.train import Components, pretrain, target_state, train_batch_size
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
    events.finished(folder.path, summary_row(task.job, folder))
    return Outcome(outcome.record, outcome.note, tuple(events.warnings))


def _execute_and_record(runtime: Runtime, task: Task, folder: RunFolder, events: RunEvents) -> Outcome:
    """Run ``task``'s job (not a probe addition) into ``folder``: ``metrics.json`` when it ends,
    ``error.txt`` when it raises."""
    folder.reset(keep=(CHECKPOINT_FILE,))  # a killed run continues from its checkpoint
    started = time.perf_counter()
    try:
        record = _execute_job(runtime, task, folder, events)
        record["wall_seconds"] = round(time.perf_counter() - started, 3)
        folder.write_metrics(record)  # last: marks the run as finished
        if not (isinstance(task.job, RunSpec) and task.job.train.keep_checkpoint):
            folder.remove_checkpoint()
        epoch = record.get("resumed_from_epoch")  # the console line says what became of its checkpoint
        return Outcome(record, f"continued from its checkpoint after epoch {epoch}" if epoch is not None
                       else record.get("checkpoint_note", ""))
    except LockLost:
        raise
    except Exception as exc:  # the run fails; the suite goes on
        try:
            folder.write_error(traceback.format_exc())
        except OSError as unwritable:  # a full disk: the file that failed first is the one to name
            raise (exc if isinstance(exc, OSError) else unwritable) from None
        return Outcome.failed(one_line(exc))


def _execute_job(runtime: Runtime, task: Task, folder: RunFolder, events: RunEvents) -> dict[str, Any]:
    """The job's record (``metrics.json`` but the wall time), its ``config.json`` written first."""
    job = task.job
    data = runtime.data(job.data)
    config = run_config_file(task, data, runtime)
    folder.write_config(config)
    events.started(folder.path, config)
    on_epoch = lambda row: events.epoch(folder.path, row)  # noqa: E731
    with PeakMemory(runtime.device) as peak:
        if isinstance(job, BaselineSpec):
            record = execute_baseline(runtime, job, data, folder)
        elif task.pretrained_in is not None:
            source = SuiteFolder(task.suite_dir).run(task.pretrained_in)
            record = execute_evaluation(runtime, job, data, folder, source, on_epoch)
        else:
            record = execute_run(runtime, job, data, folder, task.label, task.show_progress, on_epoch,
                                 on_log=lambda step, values: events.step(folder.path, step, values),
                                 code=config["code"])
    peaks = [mb for mb in (peak.mb, record.get("peak_memory_mb")) if mb is not None]  # DDP: the ranks' too
    if peaks:
        record["peak_memory_mb"] = max(peaks)
    return record


def execute_run(runtime: Runtime, job: RunSpec, data: SuiteData, folder: RunFolder, label: str = "train",
                show_progress: bool = True,
                on_epoch: Callable[[dict[str, float]], None] = lambda row: None,
                on_log: Callable[[int, dict[str, float]], None] | None = None,
                code: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """Pre-train and evaluate one run, writing its files but metrics.json; returns the metrics record.
    ``code``: the run's :func:`~mimbench.provenance.job_code` when the caller has it (else hashed here).
    ``on_epoch`` gets each epoch's history row, after ``history.csv`` is rewritten with it; ``on_log``
    each ``train.log_every`` loss read-out (:func:`~mimbench.train.pretrain`'s, rank 0's under DDP).
    With ``train.devices`` > 1 the pre-training runs on that many DDP processes."""
    torch.manual_seed(job.seed)
    parts = runtime.components(job, data.train.channels)
    flops_per_image = counted_flops(parts, job, data.train.channels, runtime.device)

    def epoch_finished(history: list[dict[str, float]]) -> None:
        folder.write_history(history)
        on_epoch(history[-1])

    checkpoint = Checkpointing.for_run(folder.path, job.train,
                                       {"run_id": job.run_id, "code": tree_hashes(code or job_code(runtime.registry, job))},
                                       before_save=folder.writable)
    if is_distributed(job):
        result = pretrain_distributed(job, runtime.plugins, parts, runtime.device, epoch_finished,
                                      desc=label or "train", show_progress=show_progress,
                                      flops_per_image=flops_per_image, checkpoint=checkpoint, on_log=on_log)
    else:
        result = pretrain(parts, data.train, data.normalize, job.train, job.seed, runtime.device,
                          on_epoch=epoch_finished, desc=label or "train", show_progress=show_progress,
                          flops_per_image=flops_per_image, checkpoint=checkpoint, on_log=on_log)
    record = training_record(result, flops_per_image, train_batch_size(job.train, len(data.train)))
    folder.save_encoder(parts.encoder)
    state = target_state(parts.target)
    if state is not None:  # a target with state (ema_teacher's teacher) is part of what the run learned
        folder.save_target(state)
    if result.status == Status.DONE:
        record.update(evaluate_run(runtime, job, parts, data, folder))
    return record


def training_record(result: Any, flops_per_image: float | None, batch_size: int) -> dict[str, Any]:
    """The pre-training's columns of a run's record, from its :class:`~mimbench.train.TrainResult`.
    The epoch whose loss turned non-finite did not complete; its loss is kept as text ("nan",
    "inf"), since JSON has no such number."""
    completed = result.history if result.status == Status.DONE else result.history[:-1]
    record: dict[str, Any] = {
        "status": Status(result.status).value,
        "train_seconds": round(result.seconds, 3),
        "images_per_second": round(result.images_per_second, 1),
        "epochs_completed": len(completed),
        "final_loss": completed[-1]["loss"] if completed else None,
        "train_steps": result.steps,
        "epochs": round(result.epochs, 4),  # fractional when train.budget_flops ends inside an epoch
    }
    if flops_per_image is not None:
        record["flops_per_image"] = flops_per_image  # forward + backward of one training image
        record["train_flops"] = flops_per_image * batch_size * result.steps
    if result.peak_memory_mb is not None:
        record["peak_memory_mb"] = result.peak_memory_mb
    if result.compile_seconds:  # train.compile: the first compiled step, left out of images_per_second
        record["compile_seconds"] = round(result.compile_seconds, 3)
    if result.status == Status.DIVERGED:
        record["diverged_loss"] = str(result.history[-1]["loss"])
    if result.resumed_from_epoch is not None:  # train_seconds counts every attempt's training time
        record["resumed_from_epoch"] = result.resumed_from_epoch
    if result.checkpoint_note:
        record["checkpoint_note"] = result.checkpoint_note
    return record


def evaluate_run(runtime: Runtime, job: RunSpec, parts: Components, data: SuiteData,
                 folder: RunFolder) -> dict[str, Any]:
    """A trained run's reconstruction metrics (own masker, reference masker), its picture, and its probes."""
    evaluation, device = job.eval, runtime.device
    to_image, uses_target_stats = prediction_to_image(parts)
    measure = lambda masker: reconstruction_metrics(parts, masker, data.test, data.normalize,  # noqa: E731
                                                    evaluation.mask_seed, evaluation.batch_size, device, to_image)
    own = measure(parts.masker)
    record = {"recon_mse": own.get("mse"), "recon_psnr": own.get("psnr"), "mask_ratio_actual": own["mask_ratio"],
              "mask_avgdist_px": own["mask_avgdist"], "recon_uses_target_stats": uses_target_stats}
    if "target_loss" in own:
        record["target_loss"] = own["target_loss"]
    if evaluation.reference_masker is not None:
        reference = measure(runtime.build("masker", evaluation.reference_masker))
        record.update(ref_mse=reference.get("mse"), ref_psnr=reference.get("psnr"))
        if "target_loss" in reference:
            record["ref_target_loss"] = reference["target_loss"]
    if to_image is not None:  # a prediction that is not an image has no picture
        folder.save_reconstructions(reconstruction_grid(parts, parts.masker, data.test, data.normalize,
                                                        evaluation.mask_seed, device, to_image))
    record.update(run_probes(runtime, job, evaluation.probes, parts.encoder, data, folder))
    return record


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


def execute_evaluation(runtime: Runtime, job: RunSpec, data: SuiteData, folder: RunFolder, source: RunFolder,
                       on_epoch: Callable[[dict[str, float]], None] = lambda row: None) -> dict[str, Any]:
    """Evaluate the encoder another run of the suite pre-trained the same way (``source``, a run
    with another ``labels_per_class``): its pre-training and reconstruction columns are carried
    over (with its history and picture, whose rows go to ``on_epoch``), the probes run with this
    job's labels."""
    pretrained = source.read_record()
    record = {key: pretrained[key] for key in PRETRAINING_COLUMNS if key in pretrained}
    record["pretrained_in"] = source.run_id
    folder.copy_pretraining_from(source)
    for row in folder.history():
        on_epoch(row)
    if record.get("status") == Status.DONE:
        encoder = runtime.encoder(job, data.train.channels)
        encoder.load_state_dict(source.encoder_state())
        record.update(run_probes(runtime, job, job.eval.probes, encoder, data, folder))
    return record


def execute_baseline(runtime: Runtime, job: BaselineSpec, data: SuiteData,
                     folder: RunFolder | None = None) -> dict[str, Any]:
    """The probes on an untrained encoder or on raw pixels; returns the metrics record."""
    encoder = baseline_encoder(runtime, job, data)
    return {"status": Status.DONE.value, **run_probes(runtime, job, job.eval.probes, encoder, data, folder)}


def baseline_encoder(runtime: Runtime, job: BaselineSpec, data: SuiteData) -> torch.nn.Module:
    """``random-init``: built exactly as its pre-trained runs' encoder is before training, from
    the same seed, first; ``pixels``: :class:`~mimbench.probing.RawPixels`."""
    torch.manual_seed(job.seed)
    if job.kind == "random-init":
        return runtime.encoder(job, data.train.channels)
    return RawPixels(data.train.channels, job.image_size)


def run_probes(runtime: Runtime, job: Job, probes: tuple[Component, ...] | list[Component],
               encoder: torch.nn.Module, data: SuiteData, folder: RunFolder | None = None) -> dict[str, Any]:
    """Each of ``probes`` on the frozen ``encoder``, fit on the labelled train split (or its
    ``eval.labels_per_class`` subset) and scored on the whole test split; features are extracted once.
    A probe's pictures (``context.save_picture``) go to the run's ``folder``."""
    started = time.perf_counter()
    # Probes that draw from torch's global generator (a fine-tuning head's init) must not depend
    # on what this process ran before: the same run gives the same numbers in any order, anywhere.
    torch.manual_seed(job.seed)
    device = runtime.device
    train = probe_train_split(data, job.seed, job.eval.labels_per_class)
    context = ProbeContext(encoder.to(device).eval(), train, data.probe_test, data.normalize.to(device),
                           device, job.seed, job.eval.batch_size,
                           save_picture=None if folder is None else folder.save_picture)
    columns: dict[str, Any] = {}
    for spec in probes:
        probe = runtime.build("probe", spec)
        columns.update(check_probe_output(probe(context), declared_by(probe), f"probe {spec.name!r}"))
    classes = max(1, len(train.all_labels().unique()))
    return {**columns, "probe_train_images": len(train), "probe_labels_per_class": round(len(train) / classes),
            "probe_seconds": round(time.perf_counter() - started, 3)}


def probe_train_split(data: SuiteData, seed: int, labels_per_class: int | None) -> Images:
    """What the probes fit on: the labelled train split, or its class-balanced subset of
    ``labels_per_class`` images per class drawn from ``seed`` (the same for every run and baseline)."""
    if labels_per_class is None:
        return data.probe_train
    indices = class_balanced_indices(data.probe_train.all_labels(), labels_per_class, seed)
    return data.probe_train.subset(indices)


def add_probes(runtime: Runtime, task: Task, folder: RunFolder) -> Outcome:
    """Run the task's probes on a finished run's saved encoder (or a baseline's, rebuilt from its
    seed) and merge their columns into its metrics.json; config.json then lists them as run.
    A failure leaves the run's earlier results as they were."""
    probes = list(task.probes_to_add)
    names = ", ".join(spec.name for spec in probes)
    job = task.job
    try:
        data = runtime.data(job.data)
        if isinstance(job, BaselineSpec):
            encoder = baseline_encoder(runtime, job, data)
        else:
            source = SuiteFolder(task.suite_dir).run(folder.read_record().get("pretrained_in") or job.run_id)
            encoder = runtime.encoder(job, data.train.channels)
            encoder.load_state_dict(saved_encoder_state(source))
        columns = run_probes(runtime, job, probes, encoder, data, folder)
        record = folder.read_record()
        columns["probe_seconds"] = round(record.get("probe_seconds", 0.0) + columns["probe_seconds"], 3)
        record = {**record, **columns}
        folder.write_metrics(record)
        folder.add_probes_to_config([p.to_json() for p in probes])  # after the metrics: a crash in between reruns them
    except Exception as exc:  # the run stays done without them; this task failed (exit 1), retried next time
        error = cut(f"adding probes {names} FAILED: {str(exc) if isinstance(exc, DamagedFile) else one_line(exc)}", 300)
        return Outcome(Outcome.failed(error).record, f"finished earlier; {error}")
    return Outcome(record, f"finished earlier; added probes {names}")


def saved_encoder_state(source: RunFolder) -> dict[str, torch.Tensor]:
    """``source``'s ``encoder.pt``; one that torch cannot load is a :class:`DamagedFile` in one line."""
    try:
        return source.encoder_state()
    except Exception as exc:  # truncated or garbled: zip, pickle and EOF errors alike, in many lines
        raise DamagedFile(f"{source.encoder_path} cannot be loaded ({type(exc).__name__}): a damaged file; "
                          f"delete {source.path} to train that run again") from None


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
