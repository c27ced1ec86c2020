"""The reference configuration a user names (``report: {reference: {masker: patch}}`` in a suite,
``--reference masker=patch`` on the command line): parsed, checked and written back."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from mimbench.errors import ConfigError
from mimbench.schema import reference_error


def parse_reference(items: Sequence[str]) -> dict[str, Any]:
    """``["masker=patch", "masker.ratio=0.6"]`` (``--reference``) -> ``{"masker": "patch",
    "masker.ratio": 0.6}``, values read as YAML; a malformed item is a :class:`ConfigError`."""
    import yaml

    reference: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--reference {item!r}: expected KEY=VALUE, e.g. masker=patch or masker.ratio=0.6")
        try:
            reference[key] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--reference {item!r}: the value is not valid YAML") from None
    check_reference(reference, "--reference")
    return reference


def check_reference(reference: Mapping[str, Any], where: str = "report.reference") -> None:
    """A :class:`ConfigError` unless ``reference`` can name configurations (see
    :func:`mimbench.schema.reference_error`)."""
    error = reference_error(reference)
    if error:
        raise ConfigError(f"{where}: {error}")


def format_reference(reference: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in reference.items()) + "}"
