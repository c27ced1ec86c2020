"""Metric columns, declared by the component that produces them.

The core declares its own (reconstruction); a probe declares its columns with an optional
``metric_columns() -> list[MetricColumn]`` method. The driver writes every declaration of a
suite to ``<suite>/columns.json``, and the report, the tables and the console line read them
from there: a third-party probe's accuracy is shown exactly like a built-in probe's, and the
core names no built-in probe. A column a component returns without declaring it still lands in
``summary.csv`` and ``table.csv``, just not in the headline table, the figures or the console.

This module imports neither torch nor pandas: reading results stays light.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Mapping, Sequence

from mimbench.protocols import capability
from mimbench.record import field_annotations

#: What a column measures. ``accuracy`` (a probe's score as a fraction, higher is better: top-1
#: accuracy, mIoU) gets the gain over the random-init baseline and the probe figures; ``psnr`` the
#: reconstruction figures; ``psnr``, ``mse`` and ``ssim`` are reconstruction measures (one per run,
#: whatever the probes' labels); a headline ``other`` column is a probe's score on another scale
#: (the restoration probe's dB), compared with the baselines and between configurations, higher better.
Kind = Literal["accuracy", "psnr", "mse", "ssim", "count", "other"]
#: The kinds measured on a run's reconstruction, before any probe.
RECONSTRUCTION_KINDS = ("psnr", "mse", "ssim")


@dataclass(frozen=True)
class MetricColumn:
    """One summary column and how reports show it."""

    key: str  # the summary column, e.g. "<probe>_acc"
    name: str  # short name for tables, titles and the console line, e.g. the probe's name
    axis: str = ""  # axis label with its unit; "" means the name
    kind: Kind = "other"
    headline: bool = True  # in table.md / table.tex, the figures and the console line
    digits: int = 3  # decimals shown
    latex: str = ""  # header in table.tex; "" means the name
    best_of: str = ""  # for a best-block column, the key of the column it is the best block of
    # the probe trains the whole encoder (fine-tuning): from a random-init baseline's weights that is
    # training from scratch, and the report names that baseline so
    trains_encoder: bool = False
    # False: shown in the tables but never compared between configurations (comparisons.csv): a
    # classical reference that learns nothing, or a difference whose comparisons another column holds
    compared: bool = True

    @property
    def axis_label(self) -> str:
        return self.axis or self.name

    @property
    def latex_name(self) -> str:
        return self.latex or self.name

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "MetricColumn":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


#: What the core measures on every pre-trained run (see :mod:`mimbench.evaluate`).
RECONSTRUCTION_COLUMNS = (
    MetricColumn("recon_psnr", "PSNR (dB)", "PSNR, own masker (dB)", "psnr", digits=2),
    MetricColumn("ref_psnr", "ref. PSNR (dB)", "PSNR, reference masker (dB)", "psnr", digits=2,
                 latex="ref.\\ PSNR (dB)"),
    MetricColumn("recon_mse", "MSE", "MSE of hidden pixels ([0, 1] pixel units²)", "mse", headline=False, digits=4),
    MetricColumn("ref_mse", "ref. MSE", "MSE of hidden pixels, reference masker", "mse", headline=False, digits=4),
    # a target that is not the image (hog, ema_teacher...): its loss on the hidden cells
    MetricColumn("target_loss", "target loss", "loss on hidden cells of the target, own masker", "mse",
                 headline=False, digits=4),
    MetricColumn("ref_target_loss", "ref. target loss", "loss on hidden cells of the target, reference masker", "mse",
                 headline=False, digits=4),
    MetricColumn("recon_ssim", "SSIM", "SSIM of the prediction pasted into the hidden pixels, own masker", "ssim"),
    MetricColumn("ref_ssim", "ref. SSIM", "SSIM of the pasted prediction, reference masker", "ssim"),
    # mimbench.classical on the own masker's masks: what a method that learns nothing reaches
    MetricColumn("inpaint_gain_psnr", "PSNR − biharmonic (dB)", "PSNR gain over biharmonic inpainting (dB)", "psnr",
                 digits=2, latex="PSNR $-$ biharm.\\ (dB)", compared=False),
    MetricColumn("inpaint_psnr", "biharmonic PSNR (dB)", "PSNR of biharmonic inpainting, own masker (dB)", "psnr",
                 digits=2, latex="biharm.\\ PSNR (dB)", compared=False),
    MetricColumn("inpaint_ssim", "biharmonic SSIM", "SSIM of biharmonic inpainting, own masker", "ssim",
                 latex="biharm.\\ SSIM", compared=False),
    MetricColumn("meanfill_psnr", "mean-fill PSNR (dB)", "PSNR of filling with the visible mean, own masker (dB)",
                 "psnr", digits=2, compared=False),
    MetricColumn("meanfill_ssim", "mean-fill SSIM", "SSIM of filling with the visible mean, own masker", "ssim",
                 compared=False),
)


def accuracy_columns(key: str, name: str, layer: int | str = "last", latex: str = "",
                     trains_encoder: bool = False) -> list[MetricColumn]:
    """The columns of a probe scored by top-1 accuracy under :func:`mimbench.probing.layerwise`:
    ``<key>`` and, with ``layer: all``, ``<key>_best`` (the best block's test accuracy).
    ``trains_encoder``: the probe trains the whole encoder (see :class:`MetricColumn`)."""
    columns = [MetricColumn(key, name, f"{name} accuracy (top-1, fraction)", "accuracy", latex=latex,
                            trains_encoder=trains_encoder)]
    if layer == "all":
        columns.append(MetricColumn(f"{key}_best", f"{name}, best block",
                                    f"{name} accuracy, best block (top-1, fraction)", "accuracy",
                                    latex=f"{latex or name}, best block", best_of=key, trains_encoder=trains_encoder))
    return columns


def compared(declared: Sequence[MetricColumn]) -> list[MetricColumn]:
    """The declared columns the report compares configurations on (``comparisons.csv``): the headline
    ones, best-block columns left out (their block differs from run to run); the accuracies among
    them are also compared with each baseline. Columns declared ``compared=False`` are left out."""
    return [c for c in declared if c.headline and not c.best_of and c.compared]


def declared_by(probe: Any) -> list[MetricColumn]:
    """The columns a built probe declares (its optional ``metric_columns()``), ``[]`` without it."""
    declare = capability("probe", probe, "metric_columns")
    return list(declare()) if declare is not None else []


def merge(*groups: list[MetricColumn] | tuple[MetricColumn, ...]) -> list[MetricColumn]:
    """Declarations in order, the first of each key kept."""
    seen: dict[str, MetricColumn] = {}
    for group in groups:
        for column in group:
            seen.setdefault(column.key, column)
    return list(seen.values())


def dumps(columns: list[MetricColumn], param_types: Mapping[str, "ColumnType"] | None = None) -> str:
    """``columns.json``: the declared metric columns and, when known, the declared type of each
    ``<kind>.<param>`` column of the summary (:func:`column_type`)."""
    document: dict[str, Any] = {"columns": [c.to_json() for c in columns]}
    if param_types:
        document["types"] = dict(sorted(param_types.items()))
    return json.dumps(document, indent=2) + "\n"


def loads(text: str) -> list[MetricColumn]:
    return [MetricColumn.from_json(entry) for entry in json.loads(text)["columns"]]


def loads_types(text: str) -> dict[str, "ColumnType"]:
    """The param types of a ``columns.json`` (``{}`` for one written before they were recorded)."""
    recorded = json.loads(text).get("types") or {}
    return {key: kind for key, kind in recorded.items() if kind in DTYPES}


def inferred(column_names: list[str]) -> list[MetricColumn]:
    """Declarations for a suite folder written before ``columns.json`` existed: the core's, and
    every ``<name>_acc`` / ``<name>_acc_best`` column as an accuracy named after its prefix."""
    present = set(column_names)
    columns = [c for c in RECONSTRUCTION_COLUMNS if c.key in present]
    for key in column_names:
        if key.endswith("_acc"):
            columns += accuracy_columns(key, key.removesuffix("_acc"),
                                        "all" if f"{key}_best" in present else "last")
    return merge(columns)


#: The summary's leading columns, in this order: what was run (a baseline has no decoder, masker
#: or loss), then the core's measurements; the declared columns of the suite's probes come next,
#: then the rest of each record, then :data:`TIMING_COLUMNS`, then the ``<kind>.<param>`` params.
SUMMARY_ID_COLUMNS = ("run_id", "status", "dataset", "encoder", "decoder", "masker", "loss", "target", "seed",
                      "pretrained", "baseline")
CORE_COLUMNS = ("mask_ratio_actual", "mask_avgdist_px", "recon_mse", "recon_psnr", "ref_mse", "ref_psnr", "recon_ssim",
                "ref_ssim", "inpaint_gain_psnr", "inpaint_psnr", "inpaint_ssim", "meanfill_psnr", "meanfill_ssim")
#: What each run cost, and how its pre-training ended: the summary's last columns before the params.
TIMING_COLUMNS = ("recon_uses_target_stats", "train_seconds", "images_per_second", "probe_seconds", "wall_seconds",
                  "peak_memory_mb", "flops_per_image", "train_flops", "train_steps", "epochs", "epochs_completed",
                  "final_loss", "diverged_loss", "error")

#: The core's reconstruction columns scored under each run's own masker: two runs compare on them
#: only when their maskers hide the same pixels (the reference masker's columns always compare).
OWN_MASKER_COLUMNS = frozenset({"recon_mse", "recon_psnr", "mask_ratio_actual", "mask_avgdist_px", "target_loss",
                                "recon_ssim", "inpaint_gain_psnr", "inpaint_psnr", "inpaint_ssim", "meanfill_psnr",
                                "meanfill_ssim"})
#: Columns in the units of each run's own target: two runs compare on them only when they predict
#: the same target (a HOG loss and a teacher-feature loss share no scale).
OWN_TARGET_COLUMNS = frozenset({"target_loss", "ref_target_loss"})
#: The pixel errors of a reconstruction: a run whose prediction is turned into pixels with the
#: hidden patch's own mean and std (``recon_uses_target_stats``, e.g. ``norm_pix``) compares on
#: them only with runs alike in that.
PIXEL_ERROR_COLUMNS = frozenset({"recon_mse", "recon_psnr", "ref_mse", "ref_psnr", "recon_ssim", "ref_ssim",
                                 "inpaint_gain_psnr"})

#: Columns of a run's summary row (and record) that say what was run or what became of it; every
#: other numeric column measures it (:func:`measured`).
IDENTITY_COLUMNS = frozenset({"run_id", "status", "dataset", "encoder", "decoder", "masker", "loss", "target", "seed",
                              "pretrained",
                              "baseline", "error", "pretrained_in", "recon_uses_target_stats"})


def is_measurement(key: str, value: Any) -> bool:
    """Whether a summary row's ``key`` holds a measurement: a number (not a bool), not an identity
    column (:data:`IDENTITY_COLUMNS`) and not a ``<kind>.<param>`` param."""
    return key not in IDENTITY_COLUMNS and "." not in key and isinstance(value, (int, float)) \
        and not isinstance(value, bool)


def measured(record: dict[str, Any]) -> dict[str, float]:
    """The measurements of a summary row (:func:`is_measurement`) as floats, NaN left out."""
    return {key: float(value) for key, value in record.items() if is_measurement(key, value) and value == value}


# -- column types ---------------------------------------------------------------------------------
#: The type each summary column is declared with. ``summary.csv`` is written, and ``summary.parquet``
#: and :func:`mimbench.load` typed, by declaration, never by a guess from the values (a float param
#: whose values are 4.0 stays a float): pandas' nullable dtypes (:data:`DTYPES`), so that a missing
#: cell is <NA> and changes no column's type.
ColumnType = Literal["float", "int", "bool", "string"]
DTYPES: dict[str, str] = {"float": "Float64", "int": "Int64", "bool": "boolean", "string": "string"}
#: The types of the columns the core writes (every other column the core measures is a float): the
#: record's counts and flags as its fields are annotated (:mod:`mimbench.record`), the rest below.
FIXED_TYPES: dict[str, ColumnType] = {
    **dict.fromkeys(CORE_COLUMNS + TIMING_COLUMNS, "float"),  # the exceptions below override it
    **dict.fromkeys(("run_id", "status", "dataset", "encoder", "decoder", "masker", "loss", "target", "baseline",
                     "error", "pretrained_in"), "string"),
    "seed": "int", "pretrained": "bool",
    **{name: "int" if annotation.startswith("int") else "bool" for name, annotation in field_annotations().items()
       if annotation.split(" |")[0] in ("int", "bool")},
}


def column_type(annotation: Any) -> ColumnType | None:
    """The summary column type of a param annotated ``annotation`` (a factory's signature, the
    suite schema): ``float`` (also ``int | float``), ``int``, ``bool``, ``string`` (``str``, a
    ``Literal`` of strings, and lists and mappings, which the summary holds as JSON text), ``None``
    optional, ``Annotated`` for its first argument; None when the annotation does not say (``Any``, or a
    union of unlike types)."""
    if annotation is Any or annotation is None:
        return None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:  # a declared range (Interval) does not change the type
        return column_type(args[0])
    if origin in (typing.Union, types.UnionType):
        kinds = {column_type(a) for a in args if a is not type(None)}
        if kinds == {"int", "float"}:
            return "float"
        return kinds.pop() if len(kinds) == 1 else None
    if origin is Literal:
        kinds = {type(a) for a in args}
        return {str: "string", bool: "bool", int: "int", float: "float"}.get(kinds.pop()) if len(kinds) == 1 else None
    if annotation in (list, tuple, dict) or origin in (list, tuple, dict, typing.Sequence, typing.Mapping):
        return "string"
    return {bool: "bool", int: "int", float: "float", str: "string"}.get(annotation)


def column_types(names: Sequence[str], declared: Sequence[MetricColumn] = (),
                 param_types: Mapping[str, ColumnType] | None = None) -> dict[str, ColumnType]:
    """The declared type of each of ``names`` that has one: the core's columns
    (:data:`FIXED_TYPES`), the params' (``param_types``, from ``columns.json``), a declared metric
    column's (``int`` for kind ``count``, else ``float``) and its per-block ``<key>@<block>``
    columns (floats). A column declared nowhere (a value a component returns without declaring
    it) is left out: it keeps the type it was written with."""
    metric = {c.key: "int" if c.kind == "count" else "float" for c in declared}
    found: dict[str, ColumnType] = {}
    for name in names:
        kind = FIXED_TYPES.get(name) or (param_types or {}).get(name) or metric.get(name) \
            or metric.get(name.split("@", 1)[0])
        if kind is not None:
            found[name] = kind
    return found
