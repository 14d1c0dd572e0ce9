"""A report as a list of blocks, rendered to Markdown and to one self-contained HTML page.

Blocks are headings, paragraphs, tables, figures and preformatted text. The Markdown links figures by their path
inside the run directory; the HTML page embeds them as base64 ``data:`` URIs and carries its own style sheet, so it
can be mailed or archived as a single file.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Code", "Document", "Figure", "Heading", "Para", "Table"]


@dataclass(frozen=True)
class Heading:
    """A section heading (level 2 or 3; the title is level 1)."""

    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    """A paragraph of plain text; ``code`` spans in backticks and ``**bold**`` are rendered in HTML."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table of strings; ``align`` is ``"l"`` or ``"r"`` per column (default: right for all but the first).

    ``shade`` optionally gives, per cell, a number in ``[0, 1]`` used as a background tint in HTML.
    """

    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    caption: str = ""
    align: str = ""
    shade: Sequence[Sequence[float | None]] | None = None


@dataclass(frozen=True)
class Figure:
    """A PNG figure: ``path`` relative to the run directory (for Markdown), ``png`` its bytes (for HTML)."""

    path: str
    png: bytes
    caption: str = ""


@dataclass(frozen=True)
class Code:
    """Preformatted text."""

    text: str


Block = Heading | Para | Table | Figure | Code


def _inline(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #1b1b1b; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #345; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #ccd; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 0.86em; }
th, td { border: 1px solid #c8ccd4; padding: 3px 7px; }
th { background: #eef1f6; }
td.r { text-align: right; font-variant-numeric: tabular-nums; }
caption { caption-side: bottom; font-size: .85em; color: #555; padding-top: .3em; text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #dde; }
figcaption { font-size: .85em; color: #555; }
pre { background: #f5f6f8; padding: .7em; white-space: pre-wrap; overflow-wrap: anywhere; font-size: .82em; }
code { background: #f0f1f4; padding: 0 3px; }
.ok { color: #137333; font-weight: bold; } .bad { color: #b3261e; font-weight: bold; }
"""


@dataclass
class Document:
    """A titled list of blocks."""

    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Document:
        """Append blocks; returns ``self``."""
        self.blocks.extend(blocks)
        return self

    def markdown(self) -> str:
        """The report as GitHub-flavoured Markdown."""
        lines = [f"# {self.title}", ""]
        for b in self.blocks:
            if isinstance(b, Heading):
                lines += ["#" * b.level + " " + b.text, ""]
            elif isinstance(b, Para):
                lines += [b.text, ""]
            elif isinstance(b, Table):
                align = b.align or "l" + "r" * (len(b.headers) - 1)
                lines.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
                lines.append("| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |")
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
                lines += [""] + ([f"*{b.caption}*", ""] if b.caption else [])
            elif isinstance(b, Figure):
                lines += [f"![{b.caption}]({b.path})", ""]
            elif isinstance(b, Code):
                lines += ["```", b.text.rstrip("\n"), "```", ""]
        return "\n".join(lines).rstrip("\n") + "\n"

    def html(self) -> str:
        """The report as one self-contained HTML page (figures embedded as base64 PNG)."""
        parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                 '<meta name="viewport" content="width=device-width, initial-scale=1">',
                 f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head><body>",
                 f"<h1>{html.escape(self.title)}</h1>"]
        for b in self.blocks:
            if isinstance(b, Heading):
                parts.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
            elif isinstance(b, Para):
                parts.append(f"<p>{_inline(b.text)}</p>")
            elif isinstance(b, Table):
                parts.append(self._table(b))
            elif isinstance(b, Figure):
                data = base64.b64encode(b.png).decode("ascii")
                parts.append(f'<figure><img alt="{html.escape(b.caption)}" src="data:image/png;base64,{data}">'
                             f"<figcaption>{_inline(b.caption)}</figcaption></figure>")
            elif isinstance(b, Code):
                parts.append(f"<pre>{html.escape(b.text)}</pre>")
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"

    @staticmethod
    def _table(t: Table) -> str:
        align = t.align or "l" + "r" * (len(t.headers) - 1)
        out = ["<table>"]
        if t.caption:
            out.append(f"<caption>{_inline(t.caption)}</caption>")
        out.append("<thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in t.headers) + "</tr></thead><tbody>")
        for i, row in enumerate(t.rows):
            cells = []
            for j, c in enumerate(row):
                cls = ' class="r"' if j < len(align) and align[j] == "r" else ""
                shade = t.shade[i][j] if t.shade is not None and i < len(t.shade) and j < len(t.shade[i]) else None
                style = ""
                if shade is not None:
                    s = min(max(float(shade), 0.0), 1.0)
                    style = f' style="background: rgba(214, 69, 65, {0.08 + 0.6 * s:.2f})"'
                text = _inline(str(c))
                if c in ("ok", "yes"):
                    text = f'<span class="ok">{text}</span>'
                elif c in ("FAILED", "no"):
                    text = f'<span class="bad">{text}</span>'
                cells.append(f"<td{cls}{style}>{text}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
        return "\n".join(out)
