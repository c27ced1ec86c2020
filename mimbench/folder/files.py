"""Files written so that a crash never leaves one that looks complete, and read so that a damaged
one is told apart from a missing one.

Every file goes to a temporary name in its folder and is renamed into place (:func:`write_atomic`).
JSON files are strict JSON: a non-finite float (a diverged loss) is written as ``null``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


class DamagedFile(ValueError):
    """A results file that exists but cannot be read as what it must be; the message says which and why."""


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    On failure (disk full, no permission) ``path`` is left as it was, and the ``OSError``
    names ``path`` (not the temporary file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results are meant to be shared
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as strict JSON: non-finite floats become ``null`` (``NaN`` is not JSON)."""
    write_atomic(path, json.dumps(finite(data), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n")


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (in dicts, lists and tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; FileNotFoundError when there is none, :class:`DamagedFile`
    when it cannot be read, is not UTF-8 JSON or is not an object."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise DamagedFile(f"{path.name} cannot be read ({exc.strerror})") from None
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DamagedFile(f"{path.name} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DamagedFile(f"{path.name} is not JSON ({exc})") from None
    except RecursionError:
        raise DamagedFile(f"{path.name} is nested too deeply to be a mimbench file") from None
    if not isinstance(value, dict):
        raise DamagedFile(f"{path.name} holds a JSON {type(value).__name__}, not an object")
    return value


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue())


def read_csv_rows(path: Path) -> list[dict[str, float]]:
    """The rows of a numeric CSV (``epoch`` an int, the rest floats); ``[]`` when it is missing."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [{key: int(value) if key == "epoch" else float(value) for key, value in row.items()}
            for row in csv.DictReader(io.StringIO(text))]


def read_text_lossy(path: Path) -> str:
    """A text file, whatever it holds (undecodable bytes replaced); what went wrong when it cannot be read."""
    try:
        return Path(path).read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"({Path(path).name} cannot be read: {exc.strerror})"
