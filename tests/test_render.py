"""Markdown and HTML from one document; the real report opened in headless Chromium."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.artifacts import paths
from pipeline.reporting.render import Code, Document, Figure, Paragraph, Section, Table, to_html, to_markdown
from tests.conftest import Workspace
from tests.helpers import CHROMIUM_ARGS, NO_CHROMIUM, SCREENSHOTS, chromium

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf000000030101004918dd8d0000000049454e44ae426082"
)


def sample(tmp_path: Path) -> Document:
    figure = tmp_path / "figures" / "dot.png"
    figure.parent.mkdir()
    figure.write_bytes(PNG)
    table = Table(pd.DataFrame({"Model": ["CNN"], "Better": ["**CNN** <fast>"]}), ("left", "left"))
    return Document(
        "Title with `code`",
        [
            Section(
                "Results",
                [Paragraph("a **bold** claim"), table, Figure(figure, "A dot"), Code("mermaid", "graph TD\n A --> B")],
            )
        ],
    )


def test_markdown_links_figures_relative_to_the_report(tmp_path: Path) -> None:
    text = to_markdown(sample(tmp_path), tmp_path)
    assert "![A dot](figures/dot.png)" in text and "```mermaid\ngraph TD\n A --> B\n```" in text
    assert "| CNN     | **CNN** <fast> |" in text


def test_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    page = to_html(sample(tmp_path))
    assert 'src="data:image/png;base64,iVBORw0KGgo' in page and "figures/dot.png" not in page
    assert "<strong>CNN</strong> &lt;fast&gt;" in page and "<code>code</code>" in page
    assert "<script" not in page and "http" not in page.replace('name="viewport"', "")


def test_a_block_for_one_format_is_left_out_of_the_other(tmp_path: Path) -> None:
    from pipeline.reporting.render import HTML, MARKDOWN

    figure = tmp_path / "flow.png"
    figure.write_bytes(PNG)
    document = Document(
        "t",
        [Section("", [Code("mermaid", "graph TD\n A --> B", only=MARKDOWN), Figure(figure, "Drawn", only=HTML)])],
    )
    text, page = to_markdown(document, tmp_path), to_html(document)
    assert "```mermaid\ngraph TD" in text and "flow.png" not in text
    assert "graph TD" not in page and 'alt="Drawn"' in page


def test_the_page_shows_a_figure_at_96_css_px_per_inch_it_was_drawn_at(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from pipeline.reporting.figures import save

    figure, _axis = plt.subplots(figsize=(5, 2.5))
    path = save(figure, tmp_path / "f.png")
    page = to_html(Document("t", [Section("", [Figure(path, "f")])]))
    assert 'width="480" height="240"' in page, "5 x 2.5 inches at any dpi"
    assert ' width="' not in to_html(sample(tmp_path)), "a PNG without a dpi keeps its own size"


WIDTHS = (1400, 800)  # a desktop window and a narrow one, where the text column is 736 px
LEGIBLE = 11.5  # CSS px: the least any figure text may show at (9 pt drawn at 96 px per inch is 12 px)


def _figure_texts(page: str) -> list[tuple[float, float]]:
    """(smallest text in pt, dpi) of each PNG embedded in the page, in page order, read from the PNG itself."""
    import base64
    import io
    import re

    from PIL import Image

    from pipeline.reporting.figures import SMALLEST_KEY

    found = []
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            found.append((float(image.info[SMALLEST_KEY]), float(image.info["dpi"][0])))
    return found


@pytest.mark.skipif(chromium() is None, reason=NO_CHROMIUM)
def test_report_reads_in_headless_chromium_at_1400_and_800_px(workspace: Workspace) -> None:
    """The real page in a wide and a narrow window: every figure's smallest text at least LEGIBLE px as shown,
    no Mermaid source, no sideways scrolling, the sections in order; screenshots are kept for people to look at."""
    from playwright.sync_api import sync_playwright

    html_path = workspace.root / paths.report_html("digits")
    page_text = html_path.read_text()
    texts = _figure_texts(page_text)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    seen = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            for width in WIDTHS:
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
                page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
                page.goto(html_path.resolve().as_uri(), wait_until="load")
                page.wait_for_function("[...document.images].every(image => image.complete)", timeout=15_000)
                seen[width] = page.evaluate(
                    """() => ({
                        images: [...document.images].map(i => [i.alt, i.naturalWidth, i.getBoundingClientRect().width]),
                        headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
                        text: document.body.innerText,
                        body: parseFloat(getComputedStyle(document.querySelector('p')).fontSize),
                        overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
                    })"""
                )
                page.screenshot(path=str(SCREENSHOTS / f"comparison-{width}.png"), full_page=True)
                page.close()
        finally:
            browser.close()
    assert errors == []
    figures = sorted((html_path.parent / "figures").glob("*.png"))
    for width, shown in seen.items():
        images = shown["images"]
        assert len(images) == len(figures) == len(texts) == 7 and all(natural > 0 for _a, natural, _w in images)
        for (alt, natural, displayed), (smallest, dpi) in zip(images, texts):
            pixels = smallest / 72 * dpi * displayed / natural
            assert pixels >= LEGIBLE, f"at {width} px wide, {alt[:40]!r} shows {smallest} pt text at {pixels:.1f} px"
        assert shown["body"] == 16 and shown["overflow"] <= 0, (width, shown["body"], shown["overflow"])
        assert "graph TD" not in shown["text"] and "-->" not in shown["text"], "no Mermaid source on the page"
        assert shown["headings"] == [
            "Verdict",
            "Accuracy",
            "Tuning",
            "Cost and speed",
            "Why does it win? Probes",
            "What the convolution learned",
            "Architectures",
        ]
        assert "McNemar's test" in shown["text"] and "p = 0 " not in shown["text"] and "p = 0)" not in shown["text"]
        assert (SCREENSHOTS / f"comparison-{width}.png").stat().st_size > 50_000
    print(f"screenshots: {SCREENSHOTS}/comparison-{{{','.join(map(str, WIDTHS))}}}.png")
