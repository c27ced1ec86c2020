"""What a report wrote (:class:`Report`): made by :func:`~mimbench.report.page.write_report`, filled
in by the modules that write its parts (tables, figures, blocks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Report:
    """What :func:`~mimbench.report.page.write_report` wrote: the paths by name, and the warnings it met."""

    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def markdown(self) -> Path:
        return self.files["report.md"]

    @property
    def html(self) -> Path:
        return self.files["report.html"]
