"""``summary.csv``: one row per run and per baseline, rebuilt from the run folders.

Columns, in order (:mod:`mimbench.columns`): what was run (``SUMMARY_ID_COLUMNS``), the core's
measurements (``CORE_COLUMNS``), the declared metric columns of the suite's probes, the rest of
each record (undeclared columns), the timing and compute (``TIMING_COLUMNS``), then every param
as ``<kind>.<param>``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from mimbench.columns import CORE_COLUMNS, SUMMARY_ID_COLUMNS, TIMING_COLUMNS, MetricColumn
from mimbench.errors import ConfigError
from mimbench.folder.run import RunFolder
from mimbench.specs import BaselineSpec, Job, Status

SUMMARY_FILE = "summary.csv"
#: Params a suite that does not use them lacks: left out of the summary when null on every row.
OPTIONAL_PARAMS = ("eval.labels_per_class", "train.budget_flops")


def summary_row(job: Job, folder: RunFolder) -> dict[str, Any]:
    """One summary row from a job's spec and whatever its folder holds."""
    row: dict[str, Any] = dict.fromkeys(SUMMARY_ID_COLUMNS + CORE_COLUMNS)
    baseline = job.kind if isinstance(job, BaselineSpec) else None
    row.update(run_id=job.run_id, dataset=job.dataset.name, seed=job.seed, pretrained=baseline is None,
               baseline=baseline)
    components = {"encoder": job.encoder} if isinstance(job, BaselineSpec) else job.components()
    components = {axis: spec for axis, spec in components.items() if spec is not None}
    for axis, spec in components.items():
        row[axis] = spec.name
    if baseline == "pixels":
        row["encoder"] = "pixels"
    record = folder.finished_record()
    if record is not None:
        row.update(record)
    elif folder.has_error():
        row["status"] = Status.FAILED.value
        row["error"] = folder.error_line()
    else:
        row["status"] = Status.PENDING.value
    for kind, spec in {"dataset": job.dataset, **components}.items():
        for key, value in spec.params.items():
            row[f"{kind}.{key}"] = _cell(value)
    if not isinstance(job, BaselineSpec):
        for key, value in job.train.model_dump().items():
            row[f"train.{key}"] = _cell(value)
    row["eval.labels_per_class"] = job.eval.labels_per_class  # null: every label
    return row


def summary_table(rows: list[dict[str, Any]], declared: Sequence[MetricColumn] = ()) -> pd.DataFrame:
    """The summary of ``rows`` (from :func:`summary_row`), its columns in order."""
    table = pd.DataFrame(rows)
    for unused in OPTIONAL_PARAMS:
        if unused in table.columns and table[unused].isna().all():
            table = table.drop(columns=unused)
    params = [c for c in table.columns if "." in c]
    order = [*SUMMARY_ID_COLUMNS, *CORE_COLUMNS, *(c.key for c in declared)]
    leading = list(dict.fromkeys(c for c in order if c in table.columns))
    rest = [c for c in table.columns if c not in leading and c not in params and c not in TIMING_COLUMNS]
    timing = [c for c in TIMING_COLUMNS if c in table.columns]
    return table[leading + rest + timing + params].convert_dtypes()  # ints stay ints


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
    try:
        summary = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable summary table ({exc})") from None
    missing = [c for c in ("run_id", "status", "encoder") if c not in summary.columns]
    if missing:
        raise ConfigError(f"{path}: not a mimbench summary (missing columns: {', '.join(missing)})")
    return summary


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value
