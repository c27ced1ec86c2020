"""The suite folder and its runs' folders: the only code that reads or writes their files.

- :class:`SuiteFolder` (``OUT/<suite>/``): ``suite.yaml``, ``design.json``, ``columns.json``, ``summary.csv``, the
  lock, the ownership marker, damaged folders set aside, the report's files;
- :class:`RunFolder` (``runs/<run_id>/``): ``config.json``, ``metrics.json``, ``history.csv``,
  ``encoder.pt``, ``reconstructions.png``, ``error.txt``;
- :func:`write_atomic`: how every one of them is written.
"""

from mimbench.folder.files import DamagedFile, write_atomic, write_json
from mimbench.folder.lock import LOCK_FILE, SuiteLock
from mimbench.folder.ownership import SuiteIdentity
from mimbench.folder.run import (CONFIG_FILE, ENCODER_FILE, ERROR_FILE, HISTORY_FILE, METRICS_FILE,
                                 RECONSTRUCTIONS_FILE, RunFolder)
from mimbench.folder.suite import COLUMNS_FILE, DAMAGED_DIR, DESIGN_FILE, RUNS_DIR, SUITE_FILE, SUPERSEDED_DIR, SuiteFolder
from mimbench.folder.summary import SUMMARY_FILE

__all__ = ["COLUMNS_FILE", "CONFIG_FILE", "DAMAGED_DIR", "DESIGN_FILE", "DamagedFile", "ENCODER_FILE", "ERROR_FILE", "HISTORY_FILE",
           "LOCK_FILE", "METRICS_FILE", "RECONSTRUCTIONS_FILE", "RUNS_DIR", "RunFolder", "SUITE_FILE", "SUMMARY_FILE", "SUPERSEDED_DIR",
           "SuiteFolder", "SuiteIdentity", "SuiteLock", "write_atomic", "write_json"]
