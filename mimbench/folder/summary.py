"""``summary.csv``: one row per run and per baseline, rebuilt from the run folders.

Columns, in order (:mod:`mimbench.columns`): what was run (``SUMMARY_ID_COLUMNS``), the core's
measurements (``CORE_COLUMNS``), the declared metric columns of the suite's probes, the rest of
each record (undeclared columns), the timing and compute (``TIMING_COLUMNS``), then every param
as ``<kind>.<param>``.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from mimbench.columns import CORE_COLUMNS, DTYPES, SUMMARY_ID_COLUMNS, TIMING_COLUMNS, ColumnType, MetricColumn, \
    column_types
from mimbench.errors import ConfigError
from mimbench.labels import job_names, job_params
from mimbench.folder.run import RunFolder
from mimbench.specs import Job, Status

SUMMARY_FILE = "summary.csv"
#: Params a suite that does not use them lacks: left out of the summary when null on every row.
OPTIONAL_PARAMS = ("eval.labels_per_class", "train.budget_flops")


def summary_row(job: Job, folder: RunFolder, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """One summary row from a job's spec and its finished ``record`` (``metrics.json``'s content),
    or without one from whatever its folder holds."""
    row: dict[str, Any] = dict.fromkeys(SUMMARY_ID_COLUMNS + CORE_COLUMNS)
    row.update(run_id=job.run_id, seed=job.seed, **job_names(job))
    record = record if record is not None else folder.finished_record()
    if record is not None:
        row.update(record)
    elif folder.has_error():
        row["status"] = Status.FAILED.value
        row["error"] = folder.error_line()
    else:
        row["status"] = Status.PENDING.value
    row.update(job_params(job))
    return row


def summary_table(rows: list[dict[str, Any]], declared: Sequence[MetricColumn] = (),
                  param_types: Mapping[str, ColumnType] | None = None) -> pd.DataFrame:
    """The summary of ``rows`` (from :func:`summary_row`), its columns in order, each of its declared
    type (:func:`mimbench.columns.column_types`; ``param_types`` from ``columns.json``)."""
    table = pd.DataFrame(rows, dtype=object)  # each value as the run wrote it: 4.0 is no int
    for unused in OPTIONAL_PARAMS:
        if unused in table.columns and table[unused].isna().all():
            table = table.drop(columns=unused)
    params = [c for c in table.columns if "." in c]
    order = [*SUMMARY_ID_COLUMNS, *CORE_COLUMNS, *(c.key for c in declared)]
    leading = list(dict.fromkeys(c for c in order if c in table.columns))
    rest = [c for c in table.columns if c not in leading and c not in params and c not in TIMING_COLUMNS]
    timing = [c for c in TIMING_COLUMNS if c in table.columns]
    table = table[leading + rest + timing + params]
    return typed(table, column_types(list(table.columns), declared, param_types))


def typed(frame: pd.DataFrame, types: Mapping[str, ColumnType]) -> pd.DataFrame:
    """``frame`` with each column of pandas' nullable dtype for its type in ``types``, else for the
    type it was written with (:func:`written_type`)."""
    return pd.DataFrame({column: as_type(frame[column], types.get(column) or written_type(frame[column]))
                         for column in frame.columns}, index=frame.index)


def written_type(values: pd.Series) -> ColumnType:
    """The type of a column declared nowhere, from how it was written: its dtype as read from a CSV
    (a float written with its decimal point stays a float), or its Python values' common type."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(values.dtype):
        return "int"
    if pd.api.types.is_float_dtype(values.dtype):
        return "float"
    kinds = {type(v) for v in values if not _missing(v)}
    if kinds and all(issubclass(k, bool) for k in kinds):
        return "bool"
    if kinds and all(issubclass(k, numbers.Integral) and not issubclass(k, bool) for k in kinds):
        return "int"
    if kinds and all(issubclass(k, numbers.Real) and not issubclass(k, bool) for k in kinds):
        return "float"
    return "string"


def as_type(values: pd.Series, kind: ColumnType) -> pd.Series:
    """``values`` as ``kind`` (:data:`mimbench.columns.DTYPES`), a missing cell as <NA>. An ``int``
    column holding a fraction stays a float column rather than lose the fraction."""
    if kind in ("float", "int"):
        parsed = pd.to_numeric(values.map(lambda v: None if _missing(v) else v), errors="coerce")
        whole = parsed.dropna()
        if kind == "int" and (whole == whole.round()).all():
            return parsed.astype(DTYPES["int"])
        return parsed.astype(DTYPES["float"])
    if kind == "bool":
        return values.map(_bool).astype(DTYPES["bool"])
    return values.map(lambda v: pd.NA if _missing(v) else str(v)).astype(DTYPES["string"])


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or isinstance(value, float) and value != value


def _bool(value: Any) -> Any:
    if _missing(value):
        return pd.NA
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def read_summary_csv(suite_dir: Path) -> pd.DataFrame:
    """``<suite_dir>/summary.csv`` as pandas reads it; a missing folder or file, or one that is not
    a summary, is a :class:`ConfigError` that says what to pass instead."""
    suite_dir = Path(suite_dir)
    if not suite_dir.is_dir():
        raise ConfigError(f"results folder not found: {suite_dir}")
    path = suite_dir / SUMMARY_FILE
    if not path.is_file():
        inside = sorted(p.parent.name for p in suite_dir.glob(f"*/{SUMMARY_FILE}"))
        hint = f" (suites in it: {', '.join(inside)}; pass one of them, e.g. {suite_dir / inside[0]})" if inside else \
            " (is it the folder of a finished suite, <out>/<suite name>?)"
        raise ConfigError(f"no {SUMMARY_FILE} in {suite_dir}{hint}")
    if _cut_mid_row(path):
        raise ConfigError(f"{path}: cut mid-row (its last line has no line break: a truncated copy); running the "
                          f"suite again (mimbench run, the same suite and --out) rewrites it from the run folders")
    try:
        summary = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable summary table ({exc})") from None
    missing = [c for c in ("run_id", "status", "encoder") if c not in summary.columns]
    if missing:
        raise ConfigError(f"{path}: not a mimbench summary (missing columns: {', '.join(missing)})")
    return summary


def _cut_mid_row(path: Path) -> bool:
    """Whether ``path`` (written whole, ending with a line break) ends in the middle of a row."""
    try:
        with open(path, "rb") as file:
            if file.seek(0, 2) == 0:
                return False  # empty: pandas says so
            file.seek(-1, 2)
            return file.read(1) not in (b"\n", b"\r")
    except OSError:
        return False  # pandas reports what is wrong with it

