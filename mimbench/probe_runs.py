"""The probes of a run or a baseline: every probe of a job on a frozen encoder, fit on the labelled
train split (or its class-balanced subset) and scored on the test split, and probes added later to
a finished run, on its saved encoder.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch

from mimbench.columns import declared_by
from mimbench.contract import check_probe_output
from mimbench.data import Images, class_balanced_indices
from mimbench.errors import cut, one_line
from mimbench.folder import DamagedFile, RunFolder, SuiteFolder
from mimbench.jobs import Outcome, Task
from mimbench.probing import ProbeContext, RawPixels
from mimbench.record import Probes, RunRecord
from mimbench.runtime import Runtime, SuiteData
from mimbench.specs import BaselineSpec, Component, Job


def baseline_encoder(runtime: Runtime, job: BaselineSpec, data: SuiteData) -> torch.nn.Module:
    """``random-init`` (and ``supervised``, before its training): built exactly as its pre-trained
    runs' encoder is before training, from the same seed, first; ``pixels``:
    :class:`~mimbench.probing.RawPixels`."""
    torch.manual_seed(job.seed)
    if job.encoder is not None:
        return runtime.encoder(job, data.train.channels)
    return RawPixels(data.train.channels, job.image_size)


def run_probes(runtime: Runtime, job: Job, probes: tuple[Component, ...] | list[Component],
               encoder: torch.nn.Module, data: SuiteData, folder: RunFolder | None = None) -> Probes:
    """Each of ``probes`` on the frozen ``encoder``, fit on the labelled train split (or its
    ``eval.labels_per_class`` subset) and scored on the whole test split; features are extracted once.
    A probe's pictures and files (``context.save_picture``, ``save_json``) go to the run's ``folder``."""
    started = time.perf_counter()
    # Probes that draw from torch's global generator (a fine-tuning head's init) must not depend
    # on what this process ran before: the same run gives the same numbers in any order, anywhere.
    torch.manual_seed(job.seed)
    device = runtime.device
    train = probe_train_split(data, job.seed, job.eval.labels_per_class)
    context = ProbeContext(encoder.to(device).eval(), train, data.probe_test, data.normalize.to(device),
                           device, job.seed, job.eval.batch_size,
                           save_picture=None if folder is None else folder.save_picture,
                           save_json=None if folder is None else folder.save_json)
    columns: dict[str, Any] = {}
    for spec in probes:
        probe = runtime.build("probe", spec)
        columns.update(check_probe_output(probe(context), declared_by(probe), f"probe {spec.name!r}"))
    if folder is not None and context.predictions:
        folder.write_predictions(data.probe_test.all_labels(), context.predictions)
    classes = max(1, len(train.all_labels().unique()))
    return Probes(columns, len(train), round(len(train) / classes), round(time.perf_counter() - started, 3))


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
            if job.kind == "supervised":  # trained: its saved weights
                encoder.load_state_dict(saved_encoder_state(folder))
        else:
            source = SuiteFolder(task.suite_dir).run(folder.read_record().get("pretrained_in") or job.run_id)
            encoder = runtime.encoder(job, data.train.channels)
            encoder.load_state_dict(saved_encoder_state(source))
        added = run_probes(runtime, job, probes, encoder, data, folder)
        earlier = RunRecord.from_json(folder.read_record())
        record = replace(earlier, probes=earlier.probes.merged(added) if earlier.probes is not None else added).to_json()
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
