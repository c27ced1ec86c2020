"""Small helpers shared by the end-to-end tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from click.testing import CliRunner

from mimbench.cli import cli


def write_suite_file(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def run_cli(*args: str):
    """``mimbench ARGS`` in this process; an exception other than the exit re-raises, with its traceback."""
    result = CliRunner().invoke(cli, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result
