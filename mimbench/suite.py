"""Suites from YAML: a file, a packaged suite or a mapping, with ``--set`` overrides, read into the
schema (:mod:`mimbench.schema`) so that every mistake is one line naming the file and the key.
"""

from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import ValidationError

from mimbench.errors import ConfigError, cut, shown
from mimbench.schema import Suite, validation_message

#: A suite's YAML may hold this many values (mapping entries and list items), aliases expanded.
MAX_YAML_VALUES = 1_000_000
#: The origin of a suite given as a mapping (the Python API): every mapping counts as one origin,
#: so that a notebook may edit its suite and run it again into the same folder.
MAPPING_ORIGIN = "Python mapping"


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats without a dot, such as ``1e-3``, and refuses a
    mapping that gives a key twice (YAML forbids it; PyYAML would silently keep the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges may override keys: that is what they are for
            key = self.construct_object(key_node)
            if key in first:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {shown(key)} (first given on line {first[key].line + 1})",
                    key_node.start_mark)
            first[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str):
    return yaml.load(text, Loader=_YamlLoader)


def packaged_suites() -> dict[str, Path]:
    """Name -> path of the suites shipped with mimbench."""
    folder = resources.files("mimbench") / "suites"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def load_suite(source: str | Path | Mapping[str, Any] | None = None, overrides: list[str] | tuple[str, ...] = (),
               executor: str | None = None, trackers: list[str] | tuple[str, ...] = ()) -> Suite:
    """Read a suite from a YAML path, a packaged name (default ``quick``) or a mapping (as YAML
    would give it), apply ``--set`` overrides.

    ``executor`` (``--executor``) names where the runs execute, exactly as the override
    ``execution.executor=NAME`` would: the rest of the suite's ``execution`` mapping is kept
    (``threads_per_run``, which changes a CPU run's numbers, and the executor's params, which the
    executor then checks). ``trackers`` (``--tracker``) are added to the suite's ``trackers``
    unless it already lists them."""
    if isinstance(source, Mapping):
        where, raw = "suite", dict(source)
        _check_size(raw, where)
        raw = copy.deepcopy(raw)
    else:
        path = _suite_path(str(source or "quick"))
        where, raw = str(path), _read_yaml(path)
    if executor is not None:
        execution = raw.get("execution")
        raw["execution"] = {**execution, "executor": executor} if isinstance(execution, dict) else {"executor": executor}
    for override in overrides:
        _apply_override(raw, override)
    if overrides:
        where = f"{where} (with --set {cut(' '.join(overrides), 80)})"
        _check_size(raw, where)
    _add_trackers(raw, trackers)
    try:
        return Suite.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {validation_message(exc)}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
        raw = parse_yaml(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          f"save the suite as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error(path, exc)) from None
    except ValueError as exc:  # e.g. an int of 100000 digits, more than Python converts
        raise ConfigError(f"{path}: invalid YAML: {cut(exc, 120)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    except OSError as exc:
        raise ConfigError(f"cannot read suite {path}: {exc.strerror}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a suite must be a YAML mapping, got {type(raw).__name__}")
    _check_size(raw, str(path))
    return raw


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """``path:line:column: invalid YAML: what``, on one line."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow; it has no mark
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return f"{where}: invalid YAML: {exc.reason} (character #x{char:04x} at offset {exc.position})"
    return cut(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}", 300)


def _check_size(raw: Any, where: str) -> None:
    """Refuse YAML that holds more than ``MAX_YAML_VALUES`` values once aliases are expanded
    (an alias bomb), counting without expanding anything."""
    budget = MAX_YAML_VALUES
    stack = [raw]
    while stack:
        value = stack.pop()
        items = list(value.keys()) + list(value.values()) if isinstance(value, dict) else \
            value if isinstance(value, list) else ()
        budget -= len(items)
        if budget < 0:
            raise ConfigError(f"{where}: more than {MAX_YAML_VALUES:,} values once its aliases (*name) are "
                              f"expanded; a suite is far smaller (an alias bomb?)")
        stack.extend(v for v in items if isinstance(v, (dict, list)))


def _add_trackers(raw: dict[str, Any], names: list[str] | tuple[str, ...]) -> None:
    """``--tracker NAME``: append ``NAME`` to the suite's trackers unless it lists it already."""
    if not names:
        return
    listed = raw.get("trackers") or []
    listed = [listed] if isinstance(listed, (str, dict)) else list(listed)
    present = {t if isinstance(t, str) else t.get("name") for t in listed if isinstance(t, (str, dict))}
    raw["trackers"] = listed + [name for name in dict.fromkeys(names) if name not in present]


def _suite_path(source: str) -> Path:
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"suite file not found: {source}")
        return path
    suites = packaged_suites()
    if source not in suites:
        raise ConfigError(f"unknown suite {source!r}: not a file and not a packaged suite "
                          f"(packaged: {', '.join(sorted(suites))})")
    return suites[source]


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {shown(override)}: expected KEY=VALUE, e.g. train.epochs=1")
    try:
        value = parse_yaml(text)
    except (yaml.YAMLError, ValueError, RecursionError):
        raise ConfigError(f"--set {shown(override)}: the value is not valid YAML") from None
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if isinstance(child, str) and parts[i + 1] in ("name", "params"):
            child = node[part] = {"name": child}  # a component given by name: dataset=x, then dataset.params.y=z
        if not isinstance(child, dict):
            raise ConfigError(f"--set {shown(override)}: {shown(part)} is not a mapping")
        node = child
    node[parts[-1]] = value


def origin_of(source: Any) -> str:
    """Where a suite given to :func:`load_suite` comes from (recorded in its folder's marker, see
    :mod:`mimbench.folder.ownership`): a YAML path (absolute), a packaged suite's name, or a mapping."""
    if source is None:
        return "packaged suite quick"
    if not isinstance(source, (str, Path)):
        return MAPPING_ORIGIN
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return str(path.resolve())
    return f"packaged suite {source}" if str(source) in packaged_suites() else str(source)
