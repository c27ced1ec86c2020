"""The suite folder, ``OUT/<suite name>/``: the one owner of every file in it.

Everything that reads or writes a suite's files goes through :class:`SuiteFolder` (and the
:class:`~mimbench.folder.run.RunFolder` of each run): the driver (``suite.yaml``, ``columns.json``,
``summary.csv``, the lock, damaged folders set aside), the workers (their run folder), the report
(reading them all, writing its tables and figures), ``mimbench export``.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from mimbench import columns
from mimbench.columns import MetricColumn
from mimbench.errors import ConfigError
from mimbench.folder.ownership import check_inside, check_ownership, claim, empty_folder
from mimbench.folder.files import read_json_object, write_atomic, write_json
from mimbench.folder.lock import LockToken, SuiteLock
from mimbench.folder.ownership import SuiteIdentity
from mimbench.folder.run import RunFolder
from mimbench.folder.summary import SUMMARY_FILE, read_summary_csv, summary_row, summary_table
from mimbench.specs import Job

SUITE_FILE, COLUMNS_FILE, DESIGN_FILE = "suite.yaml", "columns.json", "design.json"
#: Where damaged run folders are set aside, inside the suite folder.
DAMAGED_DIR, RUNS_DIR, SUPERSEDED_DIR = "damaged", "runs", "superseded"


def _check_linked_run(run: RunFolder) -> None:
    """A run folder that is a link inside the suite folder may stay while its run is finished (or
    damaged: then it is set aside, link and all); an unfinished run starts in an emptied folder,
    which mimbench never does through a link: a ConfigError saying so."""
    if run.unreadable() or run.finished_record() is not None:
        return
    missing = "" if run.path.exists() else ", which does not exist"
    raise ConfigError(f"{run.path} is a symbolic link (to {os.readlink(run.path)}{missing}) and its run has not "
                      f"finished: mimbench empties an unfinished run's folder before running it, never through a "
                      f"link; nothing was run: replace the link with the folder it points to, or remove it")


class SuiteFolder:
    """``OUT/<suite name>/`` and what it holds (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"SuiteFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    def run(self, run_id: str, lock_token: str = "") -> RunFolder:
        """``runs/<run_id>``; with ``lock_token`` (its driver's :attr:`SuiteLock.token`) checked before each write."""
        token = LockToken(str(self.path), lock_token) if lock_token else None
        return RunFolder(self.path / RUNS_DIR / str(run_id), token)

    def exists(self) -> bool:
        return self.path.is_dir()

    # -- who may use it --------------------------------------------------------------------------------
    def lock(self) -> SuiteLock:
        """``with folder.lock():`` holds the folder for this process (see :mod:`mimbench.folder.lock`)."""
        return SuiteLock(self.path)

    def check_ownership(self, identity: SuiteIdentity, fresh: bool = False) -> str | None:
        """See :func:`mimbench.folder.ownership.check_ownership`."""
        return check_ownership(self.path, identity, fresh)

    def claim(self, identity: SuiteIdentity) -> None:
        claim(self.path, identity)

    def empty(self) -> None:
        """``--fresh``: delete everything but the lock and the marker (links removed, never followed)."""
        empty_folder(self.path)

    def check_run_folders(self, run_ids: Sequence[str]) -> None:
        """No folder a run writes, moves or deletes leads out of the suite folder through a link."""
        for name in (RUNS_DIR, DAMAGED_DIR, SUPERSEDED_DIR):
            check_inside(self.path, self.path / name)
        if (self.path / RUNS_DIR).is_dir():
            for run_id in run_ids:
                folder = self.run(run_id).path
                if folder.is_symlink():
                    check_inside(self.path, folder)
                    _check_linked_run(self.run(run_id))

    # -- suite.yaml and columns.json -------------------------------------------------------------------
    def previous_suite_yaml(self) -> str | None:
        """The ``suite.yaml`` an earlier run of the suite wrote; None when there is none. An unreadable
        one raises ``OSError`` or ``ValueError`` (not UTF-8)."""
        path = self.path / SUITE_FILE
        return path.read_text() if path.exists() else None

    def write_suite_yaml(self, text: str) -> None:
        write_atomic(self.path / SUITE_FILE, text)

    def read_suite(self) -> dict[str, Any]:
        """The suite as run (``suite.yaml``), or ``{}`` when it is missing or unreadable."""
        import yaml

        try:
            suite = yaml.safe_load((self.path / SUITE_FILE).read_text())
        except (OSError, ValueError, yaml.YAMLError):  # ValueError: not UTF-8
            return {}
        return suite if isinstance(suite, dict) else {}

    def write_design(self, design: dict[str, Any]) -> None:
        """``design.json``: the plan's configurations and runs (see :mod:`mimbench.design`)."""
        write_json(self.path / DESIGN_FILE, design)

    def read_design(self) -> dict[str, Any]:
        """``design.json`` as written by :meth:`write_design`; FileNotFoundError for a suite folder from
        before it, :class:`~mimbench.folder.DamagedFile` for one that cannot be read."""
        return read_json_object(self.path / DESIGN_FILE)

    def write_columns(self, declared: Sequence[MetricColumn],
                      param_types: Mapping[str, columns.ColumnType] | None = None) -> None:
        """``columns.json``: the declared metric columns, and the declared type of each param column."""
        write_atomic(self.path / COLUMNS_FILE, columns.dumps(list(declared), param_types))

    def read_param_types(self) -> dict[str, columns.ColumnType]:
        """The declared type of each ``<kind>.<param>`` column (``columns.json``); ``{}`` when unknown."""
        try:
            return columns.loads_types((self.path / COLUMNS_FILE).read_text())
        except (OSError, ValueError, AttributeError):
            return {}

    def summary_types(self, summary_columns: Sequence[str]) -> dict[str, columns.ColumnType]:
        """The declared type of each summary column that has one (:func:`mimbench.columns.column_types`)."""
        names = list(summary_columns)
        return columns.column_types(names, self.read_columns(names), self.read_param_types())

    def read_columns(self, summary_columns: Sequence[str]) -> list[MetricColumn]:
        """The suite's declared metric columns (``columns.json``), keeping those the summary has;
        inferred from the summary's column names for folders written before the file existed."""
        try:
            declared = columns.loads((self.path / COLUMNS_FILE).read_text())
        except (OSError, ValueError, KeyError, TypeError):
            return columns.inferred(list(summary_columns))
        present = set(summary_columns)
        return [c for c in declared if c.key in present]

    # -- summary.csv -----------------------------------------------------------------------------------
    def summary_rows(self, jobs: Sequence[Job]) -> dict[str, dict[str, Any]]:
        """Each job's summary row, read from its run folder, by run id."""
        return {job.run_id: summary_row(job, self.run(job.run_id)) for job in jobs}

    def write_summary(self, jobs: Sequence[Job], declared: Sequence[MetricColumn] = (),
                      rows: Mapping[str, dict[str, Any]] | None = None) -> pd.DataFrame:
        """Rebuild ``summary.csv`` for ``jobs`` from ``rows`` (:meth:`summary_rows`, kept up to date by
        the caller: a suite of N runs then reads N folders, not N per finished run), or from the run
        folders where not given; returns it as a DataFrame."""
        rows = rows if rows is not None else self.summary_rows(jobs)
        table = summary_table([rows[job.run_id] for job in jobs], declared, self.read_param_types())
        write_atomic(self.path / SUMMARY_FILE, table.to_csv(index=False))
        return table

    def read_summary(self) -> pd.DataFrame:
        """``summary.csv`` as written (see :func:`mimbench.folder.summary.read_summary_csv`)."""
        return read_summary_csv(self.path)

    def summary_date(self) -> str:
        """When the summary was last written (the same folder, the same report: no clock time)."""
        try:
            stamp = (self.path / SUMMARY_FILE).stat().st_mtime
        except OSError:
            return "unknown date"
        return dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")

    # -- damaged run folders and the report's files -----------------------------------------------------
    def set_aside(self, run_id: str, into: str = DAMAGED_DIR) -> Path:
        """Move ``runs/<run_id>`` (a damaged run folder, or with ``into="superseded"`` one run again
        on request) to ``<into>/<run_id>`` (``.2``, ``.3``... when taken), keeping every file;
        returns where it went. The run then starts again."""
        target = self.path / into / str(run_id)
        number = 1
        while target.exists() or target.is_symlink():
            number += 1
            target = target.with_name(f"{run_id}.{number}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.run(run_id).path, target)
        return target

    def write(self, name: str, data: bytes | str) -> Path:
        """A file of the report (``table.md``, ``figures/x.png``...), written atomically; its path."""
        path = self.path / name
        write_atomic(path, data)
        return path

    def read(self, name: str) -> bytes:
        """A file of the report (``figures/x.png``...) as written by :meth:`write`."""
        return (self.path / name).read_bytes()
