"""What code made a run: for each of its components, the plugin that provided it (a distribution
and its version, a ``--plugin`` file or a module) and a hash of the source files that define it:
the file of its factory and the file of the plugin that registers it.

A run records this in its ``config.json`` (``code``); before reusing a finished run, the driver
compares it with the code loaded now (:func:`changed_components`), so that an edited plugin never
yields "already finished" without saying what changed. The source is hashed for every provider
(an installed release, an editable install, a file), so the record holds even where a version
string does not change.

What is hashed is each file's syntax tree (``ast.dump`` without positions), with docstrings left
out: comments, blank lines, layout and documentation do not count as a change, any change to
what the code does does. ``source`` is that hash (``ast:`` + 16 hex digits); ``source_bytes`` is
the hash of the files' bytes, which runs recorded before mimbench hashed trees are compared with.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
from pathlib import Path
from typing import Any, Callable

from mimbench.registry import Registry
from mimbench.specs import BaselineSpec, Component, Job

#: (kind, name) -> its code record; one per process and registry is enough.
CodeCache = dict[tuple[str, str], dict[str, str]]


def job_code(registry: Registry, job: Job, cache: CodeCache | None = None) -> dict[str, dict[str, str]]:
    """``{"<kind> <name>": {"provider", "version", "source"}}`` for every component ``job`` uses
    (pre-training components, dataset, probes, reference masker, probe dataset)."""
    cache = {} if cache is None else cache
    code = {}
    for kind, spec in job_components(job):
        key = (kind, spec.name)
        if key not in cache:
            cache[key] = component_code(registry, kind, spec.name)
        code[f"{kind} {spec.name}"] = cache[key]
    return code


def job_components(job: Job) -> list[tuple[str, Component]]:
    """(kind, spec) of every component ``job`` builds."""
    named: list[tuple[str, Component | None]] = [("dataset", job.dataset), ("encoder", job.encoder)]
    if not isinstance(job, BaselineSpec):
        named += [(axis, spec) for axis, spec in job.components().items() if axis != "encoder"]
        named.append(("masker", job.eval.reference_masker))
    named += [("probe", spec) for spec in job.eval.probes] + [("dataset", job.eval.dataset)]
    return [(kind, spec) for kind, spec in named if spec is not None]


def component_code(registry: Registry, kind: str, name: str) -> dict[str, str]:
    """One component's record: its provider's name and version, ``source`` (the hash of the syntax
    trees of its factory's file and its plugin's file, see the module) and ``source_bytes`` (of
    their bytes); both ``""`` when neither is a file."""
    component = registry.get(kind, name)
    plugin = registry.plugins.manager.get_plugin(component.plugin)
    files = sorted({path for path in (_source_file(component.factory), _source_file(plugin)) if path})
    trees, raw = hashlib.sha256(), hashlib.sha256()
    for path in files:
        data = Path(path).read_bytes()
        raw.update(Path(path).name.encode() + b"\0" + data + b"\0")
        trees.update(Path(path).name.encode() + b"\0" + _tree(data) + b"\0")
    return {"provider": component.provider.name, "version": component.provider.version,
            "source": f"{TREE_PREFIX}{trees.hexdigest()[:16]}" if files else "",
            "source_bytes": raw.hexdigest()[:16] if files else ""}


#: Marks ``source`` as a hash of syntax trees (a run recorded before has a hash of bytes there).
TREE_PREFIX = "ast:"


def _tree(source: bytes) -> bytes:
    """The code of a Python file without what does not change what it does: its syntax tree,
    positions and docstrings left out (the bytes themselves when it does not parse)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return source
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False).encode()


def tree_hashes(code: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """``code`` without the byte hashes: what a checkpoint's fingerprint holds, so that a comment
    edited between a kill and the resume does not make the run start over."""
    return {key: {k: v for k, v in record.items() if k != "source_bytes"} for key, record in code.items()}


def same_code(then: dict[str, Any], now: dict[str, str]) -> bool:
    """Whether a recorded component (``then``) is the code loaded now: same provider and version,
    and the same tree hash (or, for a run recorded before trees were hashed, the same bytes)."""
    if (then.get("provider"), then.get("version")) != (now["provider"], now["version"]):
        return False
    source = str(then.get("source", ""))
    return source == now["source"] if source.startswith(TREE_PREFIX) or not source else source == now["source_bytes"]


def changed_components(recorded: Any, current: dict[str, dict[str, str]]) -> list[str]:
    """The components whose code differs between a run's recorded ``code`` and ``current``, as
    ``"masker 'diagonal' (source edited)"``; ``[]`` when they match or nothing was recorded (a run
    from before mimbench recorded its code)."""
    if not isinstance(recorded, dict):
        return []
    changes = []
    for key, now in current.items():
        then = recorded.get(key)
        if not isinstance(then, dict) or same_code(then, now):
            continue
        kind, _, name = key.partition(" ")
        if then.get("version") != now["version"]:
            what = f"{now['provider']} {then.get('version') or '?'} -> {now['version'] or '?'}"
        elif then.get("provider") != now["provider"]:
            what = f"now from {now['provider']}"
        else:
            what = "source edited"
        changes.append(f"{kind} {name!r} ({what})")
    return changes


def _source_file(obj: Callable[..., Any] | object | None) -> str | None:
    """The Python file that defines ``obj`` (a function, class, partial or module), or None."""
    obj = getattr(obj, "func", obj)  # functools.partial
    try:
        path = inspect.getsourcefile(obj)  # type: ignore[arg-type]
    except TypeError:  # a builtin, or an instance
        try:
            path = inspect.getsourcefile(type(obj))
        except TypeError:
            return None
    return path if path and Path(path).is_file() else None
