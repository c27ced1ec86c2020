"""A tiny document model for the report, rendered twice: as GitHub markdown (``report.md``, figures
linked) and as one self-contained HTML page (``report.html``, figures inlined as base64).

Text may use three inline markdown forms, rendered in both: ``code``, **bold**, [text](href).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from mimbench.folder import SuiteFolder


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)  # right-aligned columns


@dataclass(frozen=True)
class Image:
    path: Path  # relative to the report's folder
    alt: str
    caption: str = ""


Block = Heading | Paragraph | Bullets | Table | Image


def to_markdown(blocks: list[Block]) -> str:
    """GitHub markdown; images link to their files (paths relative to the report)."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            parts.append(_markdown_table(block))
        elif isinstance(block, Image):
            image = f"![{block.alt}]({block.path.as_posix()})"
            parts.append(image + (f"\n\n*{block.caption}*" if block.caption else ""))
    return "\n\n".join(parts) + "\n"


def _markdown_table(table: Table) -> str:
    numeric = table.numeric or [False] * len(table.headers)

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([row(table.headers), row(["--:" if n else ":--" for n in numeric])]
                     + [row(cells) for cells in table.rows])


STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: #1f2328;
       max-width: 1180px; margin: 2rem auto; padding: 0 1.5rem; line-height: 1.5; }
h1 { border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; margin-top: 2.2rem; }
code { background: #f0f2f4; padding: .1rem .3rem; border-radius: 4px; font-size: 90%; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; margin: .8rem 0; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: .25rem .5rem; white-space: nowrap; }
th { background: #f6f8fa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafbfc; }
figure { margin: 1rem 0 2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 14px; margin-top: .4rem; }
"""


def to_html(blocks: list[Block], title: str, folder: Path) -> str:
    """One self-contained HTML page: images read from ``folder`` and inlined as base64."""
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            body.append(_html_table(block))
        elif isinstance(block, Image):
            data = base64.b64encode(SuiteFolder(folder).read(str(block.path))).decode("ascii")
            caption = f"<figcaption>{_inline(block.caption)}</figcaption>" if block.caption else ""
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.alt)}">'
                        f"{caption}</figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def _html_table(table: Table) -> str:
    numeric = table.numeric or [False] * len(table.headers)
    cls = [' class="num"' if n else "" for n in numeric]
    head = "".join(f"<th{c}>{_inline(h)}</th>" for h, c in zip(table.headers, cls))
    rows = "".join("<tr>" + "".join(f"<td{c}>{_inline(str(v))}</td>" for v, c in zip(cells, cls)) + "</tr>"
                   for cells in table.rows)
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*|\[([^\]]+)\]\(([^)\s]+)\)|\*([^*]+)\*")


def _inline(text: str) -> str:
    """Escape ``text`` for HTML, turning `code`, **bold**, *italic* and [text](href) into tags."""
    out, last = [], 0
    for match in _INLINE.finditer(text):
        out.append(html.escape(text[last:match.start()]))
        code, bold, link_text, href, italic = match.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        elif bold is not None:
            out.append(f"<strong>{_inline(bold)}</strong>")
        elif link_text is not None:
            out.append(f'<a href="{html.escape(href)}">{_inline(link_text)}</a>')
        else:
            out.append(f"<em>{_inline(italic)}</em>")
        last = match.end()
    out.append(html.escape(text[last:]))
    return "".join(out)
