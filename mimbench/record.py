"""A run's record, typed: what ``metrics.json`` holds and a summary row measures.

A :class:`RunRecord` has a part per stage of a run, each a dataclass whose fields are its columns:
:class:`Training` (the pre-training), :class:`Reconstruction` (the core's reconstruction metrics),
:class:`Probes` (the probes' declared columns and what they cost), and the run's own ``status``,
``pretrained_in``, ``peak_memory_mb`` and ``wall_seconds``. :meth:`RunRecord.to_json` gives the flat
mapping ``metrics.json`` holds (an optional field that is None is left out), :meth:`RunRecord.from_json`
reads one back (an older file too: what it lacks is None). The core's column lists
(:mod:`mimbench.columns`) are derived from these fields.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, Mapping


@dataclass(frozen=True)
class Training:
    """How a run's pre-training went (its outcome, done or diverged, is the record's ``status``). ``final_loss``: the last finite epoch loss; ``diverged_loss``
    the non-finite one as text ("nan", "inf": JSON has no such number); ``epochs`` fractional when a
    FLOP budget ends inside an epoch; ``train_seconds`` counts every attempt of a resumed run."""

    train_seconds: float
    images_per_second: float
    epochs_completed: int
    final_loss: float | None
    train_steps: int
    epochs: float
    flops_per_image: float | None = None  # forward + backward of one training image
    train_flops: float | None = None
    compile_seconds: float | None = None  # train.compile: the first compiled step
    diverged_loss: str | None = None
    resumed_from_epoch: int | None = None
    checkpoint_note: str | None = None
    precision: str | None = None  # train.precision as run on its device: "fp32" or "bf16"


@dataclass(frozen=True)
class Reconstruction:
    """The core's reconstruction metrics on the test split, under the run's own masker and the
    reference masker (``ref_``); ``target_loss`` for a target that is not an image."""

    recon_mse: float | None
    recon_psnr: float | None
    mask_ratio_actual: float
    mask_avgdist_px: float
    recon_uses_target_stats: bool
    target_loss: float | None = None
    ref_mse: float | None = None
    ref_psnr: float | None = None
    ref_target_loss: float | None = None
    recon_ssim: float | None = None
    ref_ssim: float | None = None
    # the classical reconstructions (mimbench.classical) on the own masker's masks
    inpaint_psnr: float | None = None
    inpaint_ssim: float | None = None
    meanfill_psnr: float | None = None
    meanfill_ssim: float | None = None
    inpaint_gain_psnr: float | None = None  # recon_psnr - inpaint_psnr; None when recon_uses_target_stats


@dataclass(frozen=True)
class Probes:
    """The probes' columns (as each probe declared and returned them, checked) and their cost."""

    columns: Mapping[str, Any]
    probe_train_images: int
    probe_labels_per_class: int
    probe_seconds: float

    def merged(self, other: "Probes") -> "Probes":
        """These columns and ``other``'s (probes added later), their times summed."""
        return Probes({**self.columns, **other.columns}, other.probe_train_images, other.probe_labels_per_class,
                      round((self.probe_seconds or 0.0) + other.probe_seconds, 3))


@dataclass(frozen=True)
class RunRecord:
    """A run's record: its parts (None where the run has no such stage: a baseline trains nothing)."""

    status: str
    training: Training | None = None
    reconstruction: Reconstruction | None = None
    probes: Probes | None = None
    pretrained_in: str | None = None  # the run whose encoder this one evaluates
    peak_memory_mb: float | None = None
    wall_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The flat mapping ``metrics.json`` holds: status, the parts' fields in order (a probe's
        columns where its part is), then the run's own; optional fields that are None left out."""
        flat: dict[str, Any] = {"status": self.status}
        for part in (self.training, self.reconstruction):
            if part is not None:
                flat.update(_present(part))
        if self.probes is not None:
            flat.update(self.probes.columns)
            flat.update({f.name: getattr(self.probes, f.name) for f in fields(Probes) if f.name != "columns"})
        flat.update({key: value for key, value in (("pretrained_in", self.pretrained_in),
                                                    ("peak_memory_mb", self.peak_memory_mb),
                                                    ("wall_seconds", self.wall_seconds)) if value is not None})
        return flat

    @classmethod
    def from_json(cls, flat: Mapping[str, Any]) -> "RunRecord":
        """A record from its flat mapping (``metrics.json``); a key of no part is a probe's column."""
        flat = dict(flat)
        own = {key: flat.pop(key, None) for key in ("status", "pretrained_in", "peak_memory_mb", "wall_seconds")}
        training = _part(Training, flat)
        reconstruction = _part(Reconstruction, flat)
        probe_fields = [f.name for f in fields(Probes) if f.name != "columns"]
        probes = None
        if any(name in flat for name in probe_fields) or flat:
            cost = {name: flat.pop(name, None) for name in probe_fields}
            probes = Probes(flat, **cost)
        return cls(own["status"] or "", training, reconstruction, probes, own["pretrained_in"], own["peak_memory_mb"],
                   own["wall_seconds"])


def _present(part: Any) -> dict[str, Any]:
    """A part's fields, in order; an optional one (with a default) left out when None."""
    values = asdict(part)
    return {f.name: values[f.name] for f in fields(part)
            if not (values[f.name] is None and f.default is not MISSING)}


def _part(kind: type, flat: dict[str, Any]) -> Any:
    """The part ``kind`` from ``flat`` (its keys removed), or None when ``flat`` has none of its required fields."""
    required = [f.name for f in fields(kind) if f.default is MISSING]
    if not any(name in flat for name in required):
        return None
    return kind(**{f.name: flat.pop(f.name, None) for f in fields(kind) if f.name in flat or f.default is MISSING})


def part_columns(kind: type) -> tuple[str, ...]:
    """The columns a part of the record holds, in order."""
    return tuple(f.name for f in fields(kind))


def field_annotations() -> dict[str, str]:
    """Every column of a record with its field's annotation as written (``"int"``, ``"float | None"``),
    the probes' own columns aside: what :mod:`mimbench.columns` declares the core's column types from."""
    annotations: dict[str, str] = {}
    for kind in (RunRecord, Training, Reconstruction, Probes):
        annotations.update({f.name: str(f.type) for f in fields(kind)
                            if f.name not in ("training", "reconstruction", "probes", "columns")})
    return annotations
