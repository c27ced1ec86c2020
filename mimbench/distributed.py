"""One run's pre-training on several processes with DistributedDataParallel (``train.devices``).

The process executing the run (wherever the executor put it) starts ``devices`` processes on
its own machine with torch's ``spawn``. Each rebuilds the registry and the data from the
task's plugin sources, builds the components from the run's seed (DDP also copies rank 0's
weights to the others), and runs :func:`mimbench.train.pretrain` with its :class:`Shard`:
every rank draws the same global batches and masks from the run's seed and trains on its
contiguous share; gradients are averaged, so the global batch and the lr are unchanged.
Rank 0 sends each loss read-out and each epoch's history back (the parent writes ``history.csv``
and calls the trackers, as for one process) and, at the end, the trained weights. Evaluation then runs
once, in the parent, exactly as for a one-process run: the run folder has the same files.

Backends: gloo on CPU (``torch.get_num_threads() // devices`` threads per process), NCCL on
CUDA with one GPU per process (``cuda:0`` .. ``cuda:N-1`` of the visible ones). One machine only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
import queue
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mimbench.optim import gpu_numerics
from mimbench.jobs import PluginSources
from mimbench.memory import PeakMemory
from mimbench.runtime import Runtime
from mimbench.specs import RunSpec, Status
from mimbench.train import Components, Session, Shard, TrainResult, pretrain, target_state


def pretrain_distributed(job: RunSpec, plugins: PluginSources, parts: Components, device: torch.device,
                         session: Session = Session()) -> TrainResult:
    """Pre-train ``parts`` (built from the run's seed) on ``job.train.devices`` processes, for the
    steps :func:`mimbench.train.planned_steps` gives; ``session`` as for :func:`~mimbench.train.pretrain`
    (its ``flops_per_image``, counted once by the caller: every rank plans the same steps; its
    ``checkpoint``: every rank continues from it, rank 0 saves it; its ``on_epoch`` and ``on_log``
    hear rank 0, here). Loads the trained weights into ``parts`` and returns rank 0's result, with
    its own peak memory."""
    world = job.train.devices
    if device.type == "cuda" and torch.cuda.device_count() < world:
        raise RuntimeError(f"train.devices {world} needs {world} GPUs on one machine, this process sees "
                           f"{torch.cuda.device_count()} (give the run that many, e.g. execution.gpus_per_run: {world})")
    context = mp.get_context("spawn")
    messages = context.Queue()
    threads = max(1, torch.get_num_threads() // world)
    with tempfile.TemporaryDirectory(prefix="mimbench-ddp-") as scratch:
        weights = Path(scratch) / "weights.pt"
        ranks = replace(session, on_epoch=None, on_log=None)  # each rank's; what they report comes back here
        args = (world, _free_port(), job, plugins, device.type, threads, messages, str(weights), ranks)
        processes = mp.start_processes(_rank_main, args=args, nprocs=world, join=False, start_method="spawn")
        while not processes.join(timeout=0.05):  # raises ProcessRaisedException / ProcessExitedException
            _forward(messages, session)
        _forward(messages, session)
        saved = torch.load(weights, map_location="cpu", weights_only=True)
    parts.encoder.load_state_dict(saved["encoder"])
    parts.decoder.load_state_dict(saved["decoder"])
    if saved["target"] is not None:  # a target with state (ema_teacher) as rank 0 left it
        parts.target.load_state_dict(saved["target"])
        parts.target.to(device)
    parts.encoder.to(device).eval(), parts.decoder.to(device).eval()
    return TrainResult(**{**saved["result"], "status": Status(saved["result"]["status"])})


def _forward(messages: Any, session: Session) -> None:
    """Hand every message rank 0 sent so far, in order: a history to ``session.on_epoch``, a loss
    read-out (``("log", step, values)``) to ``session.on_log``."""
    while True:
        try:
            message = messages.get_nowait()
        except queue.Empty:
            return
        if isinstance(message, tuple):
            if session.on_log is not None:
                session.on_log(message[1], message[2])
        else:
            session.epoch_finished(message)


def _rank_main(rank: int, world: int, port: int, job: RunSpec, plugins: PluginSources, device_type: str,
               threads: int, messages: Any, weights: str, session: Session) -> None:
    """One DDP process: join the group, build the run, pre-train on this rank's share."""
    torch.set_num_threads(threads)
    device = torch.device("cuda", rank) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    runtime = Runtime(plugins, device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world)
    try:
        data = runtime.data(job.data)
        torch.manual_seed(job.seed)
        parts = runtime.components(job, data.train.channels)
        with PeakMemory(device) as peak, gpu_numerics(device):
            result = pretrain(parts, data.train, data.normalize, job.train, job.seed, device, replace(
                session, shard=Shard(rank, world),
                on_epoch=lambda history: messages.put([dict(row) for row in history]),
                on_log=lambda step, values: messages.put(("log", step, dict(values)))))
        result.peak_memory_mb = peak.mb
        if rank == 0:
            torch.save({"encoder": _cpu_state(parts.encoder), "decoder": _cpu_state(parts.decoder),
                        "target": target_state(parts.target),
                        "result": {**dataclasses.asdict(result), "status": result.status.value}}, weights)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().cpu() for name, value in module.state_dict().items()}


def _free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def is_distributed(job: RunSpec) -> bool:
    """Whether a run's pre-training is spread over several processes (``train.devices`` > 1)."""
    return job.train.devices > 1

