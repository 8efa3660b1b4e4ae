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


@pytest.mark.skipif(chromium() is None, reason=NO_CHROMIUM)
def test_report_renders_in_headless_chromium(workspace: Workspace) -> None:
    from playwright.sync_api import sync_playwright

    html_path = workspace.root / paths.report_html()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    screenshot = SCREENSHOTS / "comparison.png"
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: message.type == "error" and errors.append(f"console: {message.text}"))
            page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
            page.goto(html_path.resolve().as_uri(), wait_until="load")
            page.wait_for_function("[...document.images].every(image => image.complete)", timeout=15_000)
            images = page.evaluate("[...document.images].map(image => [image.alt, image.naturalWidth])")
            headings = page.evaluate("[...document.querySelectorAll('h2')].map(h => h.textContent)")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert errors == []
    figures = sorted((html_path.parent / "figures").glob("*.png"))
    assert len(images) == len(figures) == 7 and all(width > 0 for _alt, width in images), images
    assert headings == [
        "Verdict",
        "Accuracy",
        "Tuning",
        "Cost and speed",
        "Why does it win? Probes",
        "What the convolution learned",
        "Architectures",
    ]
    assert screenshot.stat().st_size > 50_000
    print(f"screenshot: {screenshot}")
