"""Render one report document to GitHub Markdown and to a self-contained HTML page.

A document is a title plus sections of blocks (paragraphs, tables, figures, code); both renderers
walk the same blocks, so the two files can never disagree. A block may be meant for one format only: a
Mermaid diagram is Markdown's (GitHub draws it), and the page, which runs no scripts, shows a drawn figure instead.

The page shows each figure at 96 CSS px per inch of the figure (the size matplotlib drew it at, read from the
PNG's dpi), so a point of figure text is a CSS point and the figures' labels match the page's text.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd


@dataclass(frozen=True)
class Paragraph:
    """Text with **bold** and `code` spans (the only Markdown the HTML renderer understands)."""

    text: str


@dataclass(frozen=True)
class Table:
    """A DataFrame shown as a table; `align` is per column ('left' or 'right')."""

    frame: pd.DataFrame
    align: tuple[str, ...] = ()


Format = Literal["markdown", "html", ""]  # a format a block is limited to; "" for both
MARKDOWN: Format = "markdown"
HTML: Format = "html"


@dataclass(frozen=True)
class Figure:
    """A PNG: linked by relative path from the Markdown, embedded as a data URI in the HTML."""

    path: Path
    caption: str
    only: Format = ""  # MARKDOWN or HTML: shown in that format alone; "": in both


@dataclass(frozen=True)
class Code:
    """A fenced code block; language 'mermaid' renders as a diagram on GitHub."""

    language: str
    text: str
    collapsed: str = ""  # summary line of a <details> block; empty for an always-open block
    only: Format = ""  # MARKDOWN or HTML: shown in that format alone; "": in both


Block = Paragraph | Table | Figure | Code


@dataclass(frozen=True)
class Section:
    """A titled run of blocks."""

    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass(frozen=True)
class Document:
    """The whole report."""

    title: str
    sections: list[Section]


def to_markdown(document: Document, base: Path) -> str:
    """GitHub Markdown; figure links are relative to `base` (the folder the .md file lives in)."""
    lines = [f"# {document.title}", ""]
    for section in document.sections:
        if section.title:
            lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if _shown(block, MARKDOWN):
                lines += [*_markdown_block(block, base), ""]
    return "\n".join(lines)


def _shown(block: Block, target: Format) -> bool:
    """Whether `block` belongs in the `target` format."""
    only = block.only if isinstance(block, (Figure, Code)) else ""
    return not only or only == target


def _markdown_block(block: Block, base: Path) -> list[str]:
    """One block as Markdown lines."""
    if isinstance(block, Paragraph):
        return [block.text]
    if isinstance(block, Table):
        return [block.frame.to_markdown(index=False, colalign=block.align or None, disable_numparse=True)]
    if isinstance(block, Figure):
        return [f"![{block.caption}]({block.path.relative_to(base).as_posix()})", "", f"*{block.caption}*"]
    fence = [f"```{block.language}", block.text.rstrip(), "```"]
    if block.collapsed:
        return [f"<details><summary>{block.collapsed}</summary>", "", *fence, "", "</details>"]
    return fence


def to_html(document: Document) -> str:
    """One self-contained HTML page: inline CSS, figures as base64 data URIs, no scripts, no network."""
    body = [f"<h1>{_inline(document.title)}</h1>"]
    for section in document.sections:
        if section.title:
            body.append(f"<h2>{_inline(section.title)}</h2>")
        body += [_html_block(block) for block in section.blocks if _shown(block, HTML)]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(_plain(document.title))}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            "<main>",
            *body,
            "</main>",
            "</body>",
            "</html>",
            "",
        ]
    )


def _html_block(block: Block) -> str:
    """One block as HTML, figures embedded so the page needs no other file."""
    if isinstance(block, Paragraph):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Table):
        header = "".join(f"<th>{_inline(str(c))}</th>" for c in block.frame.columns)
        align = block.align or ("left",) * len(block.frame.columns)
        rows = "".join(
            "<tr>" + "".join(f'<td class="{a}">{_inline(str(v))}</td>' for v, a in zip(row, align)) + "</tr>"
            for row in block.frame.itertuples(index=False)
        )
        return f'<div class="table"><table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table></div>'
    if isinstance(block, Figure):
        data = base64.b64encode(block.path.read_bytes()).decode("ascii")
        alt = html.escape(block.caption, quote=True)
        size = css_size(block.path)
        dimensions = f' width="{size[0]}" height="{size[1]}"' if size else ""
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{alt}"{dimensions}>'
            f"<figcaption>{_inline(block.caption)}</figcaption></figure>"
        )
    code = f'<pre><code class="language-{block.language}">{html.escape(block.text.rstrip())}</code></pre>'
    if block.collapsed:
        return f"<details><summary>{html.escape(block.collapsed)}</summary>{code}</details>"
    return code


CSS_PX_PER_INCH = 96


def css_size(path: Path) -> tuple[int, int] | None:
    """A PNG's drawn size in CSS px (96 per inch at the dpi it records), or None when it records no dpi."""
    from PIL import Image

    with Image.open(path) as image:
        dpi = image.info.get("dpi")
        if not dpi or not dpi[0] or not dpi[1]:
            return None
        return round(image.width / dpi[0] * CSS_PX_PER_INCH), round(image.height / dpi[1] * CSS_PX_PER_INCH)


def _inline(text: str) -> str:
    """Escape, then turn **bold**, `code` and [relative links](path) into tags."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    escaped = re.sub(r"\[([^\]]+)\]\(([^)\s\"<>]+)\)", r'<a href="\2">\1</a>', escaped)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def _plain(text: str) -> str:
    """Text without Markdown marks, for the page's <title>."""
    return text.replace("**", "").replace("`", "")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1f2328;background:#fff;margin:0}
main{max-width:1100px;margin:0 auto;padding:24px 32px 64px}
@media (max-width:600px){main{padding:16px 12px 48px}}
h1{font-size:1.9em;border-bottom:1px solid #d0d7de;padding-bottom:.3em}
h2{font-size:1.4em;margin-top:1.8em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
p{line-height:1.55}
div.table{overflow-x:auto;margin:12px 0}
table{border-collapse:collapse;font-size:.92em}
th,td{border:1px solid #d0d7de;padding:5px 10px}
th{background:#f6f8fa;text-align:left}
td.right{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#f6f8fa}
figure{margin:18px 0}
figure img{max-width:100%;height:auto;border:1px solid #eaeef2;box-sizing:border-box}
figcaption{color:#59636e;font-size:.9em;margin-top:4px}
code{background:#f6f8fa;padding:.1em .3em;border-radius:4px;font-size:.9em}
pre{background:#f6f8fa;padding:12px;overflow:auto;border-radius:6px}
pre code{background:none;padding:0}
details{margin:10px 0}
"""
