"""What executing jobs needs, as one explicit object: the plugins (a registry), the device and the
data cache (the numeric settings a run on a GPU uses are :func:`mimbench.optim.gpu_numerics`, set
for each task and restored after it).

A :class:`Runtime` is made by whoever starts the work and passed down: ``api.prepare`` (and so the
CLI) makes the driver's, which checks the plan and, with an in-process executor, executes the tasks
(:class:`mimbench.worker.Worker`); a worker process elsewhere (Ray, SLURM, a DDP rank) makes its own
from the task. Nothing is cached at module level. Components are built from their resolved specs
(:class:`~mimbench.specs.Component`) without validating their params again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from mimbench.contract import decoder_grid
from mimbench.data import Images, Normalizer, load_images
from mimbench.errors import ConfigError
from mimbench.jobs import PluginSources
from mimbench.plugins import load_plugins
from mimbench.registry import Registry
from mimbench.specs import BaselineSpec, Component, DataSpec, Job, RunSpec
from mimbench.train import Components


@dataclass
class SuiteData:
    """Both splits of the suite's dataset on the device, the train split's normalisation, and
    the labelled splits the probes use (``eval.dataset``, or the suite's dataset again)."""

    train: Images
    test: Images
    normalize: Normalizer
    probe_train: Images
    probe_test: Images


def registry_for(plugins: PluginSources) -> Registry:
    """The registry of the built-ins, installed plugins and ``plugins.specs`` (tens of milliseconds
    once their modules are imported)."""
    return Registry(load_plugins(plugins.specs, use_env=False))


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu``, ``cuda`` and ``cuda:N`` as given."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name!r}: CUDA is not available on this machine (use auto or cpu)")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    return device


class Runtime:
    """The means to execute jobs (see the module docstring): the registry of ``plugins``, ``device``
    (``auto``: CUDA when present) and the last suite's data, loaded on first use."""

    def __init__(self, plugins: PluginSources = PluginSources(), device: str | torch.device = "auto"):
        self.plugins, self.device = plugins, resolve_device(device)
        self.registry = registry_for(plugins)
        self._data: tuple[DataSpec, SuiteData] | None = None  # the last suite's data, kept for its next job

    def serves(self, plugins: PluginSources, device: str | torch.device) -> bool:
        """Whether this runtime is the one for ``plugins`` on ``device`` (a task's)."""
        try:
            return self.plugins == plugins and self.device == resolve_device(device)
        except ConfigError:  # a device this machine does not have: not this runtime's
            return False

    def data(self, spec: DataSpec) -> SuiteData:
        """The suite's splits on this runtime's device, loaded once (the last suite's kept)."""
        if self._data is None or self._data[0] != spec:
            self._data = (spec, load_data(self.registry, spec, self.device))
        return self._data[1]

    def build(self, kind: str, component: Component, **context: Any) -> Any:
        """The component, from its resolved params (not validated again) and the ``context``."""
        return self.registry.construct(kind, component.name, dict(component.params), **context)

    def components(self, run: RunSpec, channels: int) -> Components:
        """A run's encoder, target, decoder (for the target's grid), masker and loss (seed the RNG
        first for a fixed init)."""
        encoder = self.encoder(run, channels)
        target = self.target(run, encoder, channels)
        decoder = self.decoder(run, encoder, target, channels)
        return Components(encoder, decoder, self.build("masker", run.masker), self.build("loss", run.loss), target)

    def target(self, run: RunSpec, encoder: torch.nn.Module, channels: int) -> Any:
        """The run's target, built for its encoder (as it is before training). A loss that
        normalises the target itself (``norm_pix: true``) works with the ``pixels`` target only."""
        if run.loss.params.get("norm_pix") and run.target.name != "pixels":
            raise ConfigError(f"loss {run.loss.name!r} with norm_pix: true normalises the target per patch, and "
                              f"target {run.target.name!r} is not pixels: drop norm_pix from the loss (to use MAE's "
                              f"normalised pixels, write target: norm_pix)")
        return self.build("target", run.target, in_channels=channels, image_size=run.image_size, encoder=encoder)

    def decoder(self, run: RunSpec, encoder: torch.nn.Module, target: Any, channels: int) -> torch.nn.Module:
        """The run's decoder, predicting ``target``'s channels on its grid from the encoder's features."""
        stride, size = decoder_grid(encoder.stride, target.stride, run.image_size, run.target.name)
        return self.build("decoder", run.decoder, in_dim=encoder.out_dim, stride=stride, out_channels=target.channels,
                          image_size=size)

    def encoder(self, job: Job, channels: int) -> torch.nn.Module:
        """The job's encoder as built before any training (a ``random-init`` baseline's too)."""
        encoder = job.encoder
        if encoder is None:
            raise ValueError(f"job {job.run_id} has no encoder")
        return self.build("encoder", encoder, in_channels=channels, image_size=job.image_size)


def load_data(registry: Registry, spec: DataSpec, device: torch.device) -> SuiteData:
    """Load train and test splits once, resized to the suite's image size, onto ``device``;
    and the eval dataset's splits for the probes when the suite names one."""
    limit = in_memory_limit(spec.in_memory_gb, device)
    train, test = _load_splits(registry, spec.dataset, spec.image_size, device, limit, spec.workers)
    probe_train, probe_test = train, test
    if spec.eval_dataset is not None:
        probe_train, probe_test = _load_splits(registry, spec.eval_dataset, spec.image_size, device, limit,
                                               spec.workers)
        if probe_train.channels != train.channels:
            raise ConfigError(f"eval.dataset {spec.eval_dataset.name!r} has {probe_train.channels} channels, but the "
                              f"encoders are pre-trained on {train.channels}-channel images of {spec.dataset.name!r}")
    if spec.needs_labels and probe_train.num_classes < 2:
        where = "eval.dataset" if spec.eval_dataset is not None else "dataset"
        name = (spec.eval_dataset or spec.dataset).name
        raise ConfigError(f"{where} {name!r} has no class labels, so eval.probes cannot run on it: name a "
                          f"labelled eval.dataset (e.g. {{name: imagefolder, params: {{root: ...}}}}) "
                          f"or set eval.probes: []")
    return SuiteData(train, test, Normalizer.measure(train), probe_train, probe_test)


def in_memory_limit(gigabytes: float | None, device: torch.device) -> int:
    """Bytes of uint8 images a split may take on ``device`` before it streams instead."""
    if gigabytes is not None:
        return int(gigabytes * 2**30)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def _load_splits(registry: Registry, dataset: Component, image_size: int, device: torch.device,
                 limit: int, workers: int) -> tuple[Images, Images]:
    splits = []
    for split in ("train", "test"):
        raw = registry.construct("dataset", dataset.name, dict(dataset.params), split=split, image_size=image_size)
        if len(raw) == 0:
            raise ConfigError(f"dataset {dataset.name!r}: the {split} split is empty")
        splits.append(load_images(raw, image_size, device, limit, workers))
    return splits[0], splits[1]


__all__ = ["BaselineSpec", "Runtime", "SuiteData", "load_data", "registry_for", "resolve_device"]
