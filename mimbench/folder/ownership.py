"""Whose is a suite folder? mimbench deletes only inside folders it can prove are the suite's own,
and writes only into folders that are a suite's.

A suite folder carries a marker, ``.mimbench-suite`` (JSON): the suite's name, its *origin* (where
the suite came from: a file's absolute path, ``packaged suite NAME``, or ``Python mapping``) and a
hash of the runs that origin last asked for, written when the driver first takes an empty or new
folder and kept up to date by runs from that origin. For a suite of the same name:

- a folder that does not exist, or holds nothing but mimbench's ``.lock``, is free;
- a folder whose marker has the same origin, or the same runs, is the suite's: ``--fresh`` may
  empty it (the same file, edited, is the same suite);
- a folder whose marker has another origin and other runs belongs to another suite that shares
  the name: a plain run may add its runs beside that suite's (nothing is deleted; a note says
  so), ``--fresh`` is refused;
- a folder without marker but with a ``suite.yaml`` of that name (from an mimbench before the
  marker) is taken over, except by ``--fresh`` when the runs it describes differ;
- anything else (a user's own files, another suite's folder) is refused.

A refusal is one line (:class:`~mimbench.errors.ConfigError`, exit 2) before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimbench.errors import ConfigError, shown
from mimbench.folder.lock import LOCK_FILE

MARKER_FILE = ".mimbench-suite"
SUITE_FILE = "suite.yaml"


@dataclass(frozen=True)
class SuiteIdentity:
    """What a suite folder must belong to: the suite's ``name``, its ``origin`` and its YAML as
    the driver writes it to ``suite.yaml`` (``yaml_text``)."""

    name: str
    origin: str
    yaml_text: str


def what_runs(yaml_text: str) -> str:
    """A suite's YAML as the current schema reads it (every default filled in, so that a key added
    to the schema since does not make another suite), without ``description``, ``execution``,
    ``trackers``, ``max_runs`` and ``report``: how the suite is described, where its runs execute, who
    watches them, how many they may be and how they are compared do not make another suite. Text
    the schema cannot read is compared as it is."""
    import yaml

    from mimbench.schema import Suite

    try:
        raw = Suite.model_validate(yaml.safe_load(yaml_text)).model_dump()
    except (yaml.YAMLError, ValueError, RecursionError, TypeError):  # pydantic's ValidationError is a ValueError
        return yaml_text
    for key in ("description", "execution", "trackers", "max_runs", "report"):
        raw.pop(key, None)
    return json.dumps(raw, sort_keys=True, default=str)


def check_ownership(suite_dir: Path, identity: SuiteIdentity, fresh: bool = False) -> str | None:
    """Raise :class:`ConfigError` (one line: what was found, what to do) unless ``suite_dir`` may be
    used by ``identity``'s suite, and emptied when ``fresh``; returns a note to show when the
    folder is shared with another suite of the same name. Reads only; writes nothing."""
    suite_dir = Path(suite_dir)
    action = "--fresh deleted nothing" if fresh else "nothing was written"
    remedy = "choose another --out, or --set name=... to run the suite under another name"
    if suite_dir.is_symlink() and not suite_dir.exists():
        raise ConfigError(f"{suite_dir} is a broken symbolic link (to {os.readlink(suite_dir)}); {action}: "
                          f"remove the link or {remedy}")
    if not suite_dir.exists():
        return None
    if not suite_dir.is_dir():
        raise ConfigError(f"{suite_dir} is a file, not a suite folder; {action}: {remedy}")
    # the lock, and a file another driver is writing (write_atomic's temporary: .<name>.<random>.tmp)
    entries = sorted(p.name for p in suite_dir.iterdir()
                     if p.name != LOCK_FILE and not (p.name.startswith(".") and p.name.endswith(".tmp")))
    if not entries:
        return None
    marker = read_marker(suite_dir)
    if marker is not None and marker.get("suite") == identity.name:
        if marker.get("origin") == identity.origin or marker.get("runs") == runs_hash(identity.yaml_text):
            return None
        owner = f"suite {identity.name!r} from {marker.get('origin')}"
        if fresh:
            raise ConfigError(f"{suite_dir} holds {owner}, not suite {identity.name!r} from {identity.origin}; "
                              f"{action}: {remedy}, or delete that folder yourself if it is no longer needed")
        return (f"{suite_dir} was made by {owner}; this suite (from {identity.origin}) adds its runs beside "
                f"that suite's and rewrites summary.csv for its own; --fresh is refused there")
    named = _stored_name(suite_dir) if marker is None else marker.get("suite")
    if marker is None and named == identity.name:
        stored = _stored_runs(suite_dir)
        if fresh and stored != what_runs(identity.yaml_text):
            raise ConfigError(f"{suite_dir} holds another version of suite {identity.name!r}, written by an "
                              f"earlier mimbench that did not record where it came from, so it cannot be shown to "
                              f"be this suite's; {action}: delete that folder yourself, or {remedy}")
        return None
    found = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    what = f"it is suite {shown(named)}'s" if named is not None else f"no {MARKER_FILE} marker"
    raise ConfigError(f"{suite_dir} is not the folder of suite {identity.name!r} (it holds {found}; {what}); "
                      f"{action}: {remedy}")


def claim(suite_dir: Path, identity: SuiteIdentity) -> None:
    """Mark ``suite_dir`` (held by this driver, accepted by :func:`check_ownership`) as
    ``identity``'s when it has no marker; record the runs its origin asks for now."""
    from mimbench.folder.files import write_json
    from mimbench.version import __version__

    marker = read_marker(suite_dir)
    runs = runs_hash(identity.yaml_text)
    if marker is None:
        marker = {"suite": identity.name, "origin": identity.origin, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "by": f"mimbench {__version__}"}
    elif marker.get("origin") != identity.origin or marker.get("runs") == runs:
        return
    write_json(Path(suite_dir) / MARKER_FILE, {**marker, "runs": runs})


def runs_hash(yaml_text: str) -> str:
    """A short hash of :func:`what_runs`: which runs a suite asks for."""
    return hashlib.sha256(what_runs(yaml_text).encode()).hexdigest()[:16]


def read_marker(suite_dir: Path) -> dict[str, Any] | None:
    """The folder's marker, or None when it has none (or one that is not a JSON object)."""
    try:
        marker = json.loads((Path(suite_dir) / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def empty_folder(suite_dir: Path) -> None:
    """``--fresh``, on a folder :func:`check_ownership` accepted: delete everything in it but the
    lock this driver holds and the marker (the folder stays its first suite's). Symbolic links are
    removed, never followed."""
    for path in Path(suite_dir).iterdir():
        if path.name in (LOCK_FILE, MARKER_FILE):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # removes links inside the tree, never what they point to
        else:
            path.unlink()


def check_inside(suite_dir: Path, path: Path) -> None:
    """Raise :class:`ConfigError` when ``path`` (a run folder, ``runs/``, ``damaged/``) is or passes
    through a symbolic link that leads out of ``suite_dir``: mimbench writes, moves and deletes run
    folders, and must never do so outside the suite's folder."""
    root = Path(os.path.realpath(suite_dir))
    real = Path(os.path.realpath(path))
    if real != root and root not in real.parents:
        raise ConfigError(f"{path} leads out of the suite folder (to {real}) through a symbolic link; mimbench "
                          f"writes and deletes only inside {suite_dir}: replace the link with a folder")


def _stored_runs(suite_dir: Path) -> str | None:
    try:
        return what_runs((Path(suite_dir) / SUITE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _stored_name(suite_dir: Path) -> str | None:
    import yaml

    try:
        raw = yaml.safe_load((Path(suite_dir) / SUITE_FILE).read_text())
    except (OSError, ValueError, yaml.YAMLError, RecursionError):
        return None
    return raw.get("name") if isinstance(raw, dict) and isinstance(raw.get("name"), str) else None
