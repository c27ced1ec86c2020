"""The code examples of README.md and docs/: every fenced python, yaml and toml block, with the
marker line above it that says how the tests run it (importable: pytest puts tests/ on sys.path).

Markers, one HTML comment on the line right above the block::

    <!-- test: plugin my_masks.py -->       a whole plugin file, saved under that name
    <!-- test: pyproject my_masks.py -->    the pyproject.toml that packages that plugin file
    <!-- test: uses my_masks.py -->         python run beside that plugin file (its test_* functions too)
    <!-- test: suite -->                    a whole suite: checked with `mimbench run FILE --dry-run`
    <!-- test: suite-fragment -->           part of a suite: merged over `quick`, then checked the same way
    <!-- test: api -->                      python run where `results/quick` holds a small finished suite
    <!-- test: skip REASON -->              not run, for the reason given
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
LANGUAGES = ("python", "yaml", "toml")
KINDS = {"plugin": "file", "pyproject": "file", "uses": "file", "suite": None, "suite-fragment": None, "api": None,
         "skip": "reason"}

_BLOCK = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)
_MARKER = re.compile(r"<!-- test: ([\w-]+)(?: (.+?))? -->")


@dataclass(frozen=True)
class Example:
    """One fenced block: where it is, its language, its code, and its marker (kind and argument)."""

    page: Path
    line: int
    language: str
    code: str
    kind: str | None
    argument: str | None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def examples() -> list[Example]:
    """Every python, yaml and toml block of README.md and docs/, in page order."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for block in _BLOCK.finditer(text):
            if block.group(1) not in LANGUAGES:
                continue
            before = text[:block.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = _MARKER.fullmatch(before.strip())
            found.append(Example(page, text.count("\n", 0, block.start()) + 1, block.group(1), block.group(2),
                                 marker.group(1) if marker else None, marker.group(2) if marker else None))
    return found


def of_kind(kind: str) -> list[Example]:
    return [example for example in examples() if example.kind == kind]


def plugin_file(name: str) -> str:
    """The text of plugin file ``name`` (``my_masks.py``) as the docs give it."""
    texts = {e.code for e in of_kind("plugin") if e.argument == name}
    assert len(texts) == 1, f"{name}: {len(texts)} different texts in the docs"
    return texts.pop()


def merged(base: dict, fragment: dict) -> dict:
    """``fragment`` laid over ``base``: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in fragment.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
