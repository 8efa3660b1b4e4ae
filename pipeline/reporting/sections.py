"""The report as an ordered list of sections: each entry draws its own figures and writes its own blocks.

Adding a section is one entry in SECTIONS (a heading and a function of ReportInputs); the Markdown and the
HTML both render the one Document built here, and the figures it shows are the ones MLflow receives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.reporting import accuracy, architecture, cost, ladder, probes, published, tuning, verdict
from pipeline.reporting.inputs import ReportInputs
from pipeline.reporting.render import Block, Document, Figure, Section


@dataclass(frozen=True)
class SectionSpec:
    """One section of the report: its heading and the function that draws its figures and writes its blocks."""

    title: str  # "" for the untitled opening
    build: Callable[[ReportInputs], list[Block] | None]  # None leaves the section out (nothing to say)


SECTIONS: list[SectionSpec] = [
    SectionSpec("", verdict.header_blocks),
    SectionSpec("Verdict", verdict.verdict_blocks),
    SectionSpec("Accuracy", accuracy.blocks),
    SectionSpec("Published results, reproduced", published.blocks),
    SectionSpec("What each inductive bias buys", ladder.blocks),
    SectionSpec("Tuning", tuning.blocks),
    SectionSpec("Cost and speed", cost.blocks),
    SectionSpec(probes.TITLE, probes.blocks),
    SectionSpec("What the convolution learned", architecture.filter_blocks),
    SectionSpec("Architectures", architecture.blocks),
]


def build_document(inputs: ReportInputs, sections: list[SectionSpec] | None = None) -> Document:
    """Every section that has something to say, in order, under a title naming the models and the dataset."""
    built = []
    for spec in SECTIONS if sections is None else sections:
        blocks = spec.build(inputs)
        if blocks is not None:
            built.append(Section(spec.title, blocks))
    title = " vs ".join(inputs.labels[m] for m in inputs.comparison.models)
    return Document(f"convbench: {title} on `{inputs.params.data.name}`", built)


def figures_of(document: Document) -> list[Path]:
    """Every figure the document shows, in reading order."""
    return [block.path for section in document.sections for block in section.blocks if isinstance(block, Figure)]
