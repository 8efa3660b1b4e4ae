"""Overview stage: every dataset's headline numbers on one page, and whether the reference's lead held across them.

It reads only the summaries the report stage wrote (metrics/<dataset>/summary.json), so it is quick and loads no
torch. A lead counts as held on a dataset when its paired bootstrap interval lies above zero; each dataset's own
report says more (McNemar per seed, the probes, the costs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.artifacts import atomic, paths
from pipeline.artifacts.records import Summary
from pipeline.params import Params
from pipeline.reporting.render import Document, Paragraph, Section, Table, to_html, to_markdown


@dataclass(frozen=True)
class Outcome:
    """How the reference fared against every other model on one dataset."""

    dataset: str
    held: bool  # every other model's interval lies below the reference's (its lead's interval above zero)
    reversed: list[str]  # models whose interval lies above the reference's
    undecided: list[str]  # models whose interval includes zero


@dataclass(frozen=True)
class OverviewResult:
    """The files the overview wrote and what it concluded per dataset."""

    markdown: Path
    html: Path
    outcomes: list[Outcome]


def overview(all_params: list[Params]) -> OverviewResult:
    """Write reports/index.md and reports/index.html from every listed dataset's summary."""
    summaries = {p.data.name: Summary.load(paths.summary(p.data.name), p.data.name) for p in all_params}
    outcomes = [outcome(p.data.name, summaries[p.data.name], p.reference_model) for p in all_params]
    written = {}
    for path, suffix, render in (
        (paths.overview_markdown(), ".md", lambda d: to_markdown(d, paths.REPORTS_DIR)),
        (paths.overview_html(), ".html", to_html),
    ):
        atomic.write_text(path, render(document(all_params, summaries, outcomes, suffix)))
        written[suffix] = path
    return OverviewResult(written[".md"], written[".html"], outcomes)


def outcome(dataset: str, summary: Summary, reference: str) -> Outcome:
    """Held, reversed or undecided, pair by pair, from the paired intervals of the reference's lead."""
    others = [m for m in summary.accuracy if m != reference]
    reversed_ = [m for m in others if summary.lead_high[m] < 0]
    undecided = [m for m in others if summary.lead_low[m] <= 0 <= summary.lead_high[m]]
    return Outcome(dataset, not reversed_ and not undecided, reversed_, undecided)


def document(all_params: list[Params], summaries: dict[str, Summary], outcomes: list[Outcome], suffix: str) -> Document:
    """The overview: a table per dataset linking to its report, then the across-datasets part."""
    first = all_params[0]
    names = [p.data.name for p in all_params]
    sections = [Section("", [Paragraph(_opening(all_params, suffix))])]
    for params in all_params:
        dataset = params.data.name
        sections.append(
            Section(
                dataset,
                [
                    Table(_headline(summaries[dataset], params), ("left",) + ("right",) * 5),
                    Paragraph(f"[The full report on {dataset}]({dataset}/comparison{suffix})"),
                ],
            )
        )
    sections.append(Section("Across datasets", _across(all_params, summaries, outcomes)))
    title = " vs ".join(f"`{m}`" for m in first.models)
    return Document(f"convbench: {title} on {', '.join(f'`{n}`' for n in names)}", sections)


def _opening(all_params: list[Params], suffix: str) -> str:
    """What the page is and where the rest is."""
    links = ", ".join(f"[{p.data.name}]({p.data.name}/comparison{suffix})" for p in all_params)
    confidence = all_params[0].report.confidence
    return (
        f"Every model was trained with the same recipe on each dataset; accuracies are means over the seeds with "
        f"their {confidence:.0%} t-interval, and a lead is the reference's test accuracy minus the model's on the "
        f"same test images, with its {confidence:.0%} paired bootstrap interval; training images/s are one training "
        f"step's, every model timed side by side in one process. Each dataset's full report "
        f"(curves, costs, probes, architectures, McNemar's test per seed): {links}."
    )


def _points(value: float) -> str:
    return f"{value * 100:+.2f}"


def _lead(summary: Summary, model: str) -> str:
    """'+1.80 [+1.10, +2.50]' in percentage points."""
    return f"{_points(summary.lead[model])} [{_points(summary.lead_low[model])}, {_points(summary.lead_high[model])}]"


def _headline(summary: Summary, params: Params) -> pd.DataFrame:
    """One row per model: accuracy, the reference's lead, size, cost and training speed."""
    reference = params.reference_model
    rows = []
    for model, accuracy in summary.accuracy.items():
        spread = f" ± {summary.accuracy_ci[model] * 100:.2f}" if model in summary.accuracy_ci else ""
        rows.append(
            {
                "Model": model + (" (reference)" if model == reference else ""),
                "Test accuracy (%)": f"{accuracy * 100:.2f}{spread}",
                f"{reference}'s lead (points)": "—" if model == reference else _lead(summary, model),
                "Parameters": f"{summary.params[model]:,}",
                "MFLOP / image": f"{summary.mflops[model]:,.3g}",
                "Training img/s": f"{summary.train_img_s[model]:,.0f}" if model in summary.train_img_s else "—",
            }
        )
    return pd.DataFrame(rows)


def _across(all_params: list[Params], summaries: dict[str, Summary], outcomes: list[Outcome]) -> list:
    """The reference's lead over each model on each dataset, and one sentence on where the claim held."""
    reference = all_params[0].reference_model
    models = [m for p in all_params for m in p.models if m != p.reference_model]
    others = list(dict.fromkeys(models))
    frame = pd.DataFrame(
        [
            {"Model": m}
            | {
                p.data.name: _lead(summaries[p.data.name], m) if m in summaries[p.data.name].lead else "—"
                for p in all_params
            }
            for m in others
        ]
    )
    blocks: list = [
        Paragraph(f"`{reference}`'s lead over each model in percentage points, with its paired interval:"),
        Table(frame, ("left",) + ("right",) * len(all_params)),
        Paragraph(claim_sentence(reference, outcomes)),
    ]
    return blocks


def claim_sentence(reference: str, outcomes: list[Outcome]) -> str:
    """Whether '`reference` is more accurate than every other model' held on all, some or none of the datasets."""
    claim = f"The claim that `{reference}` is more accurate than every other model"
    held = [o.dataset for o in outcomes if o.held]
    failed = [o for o in outcomes if not o.held]
    if len(outcomes) == 1:
        only = outcomes[0]
        verdict = "held" if only.held else "did not hold"
        return (
            f"{claim} {verdict} on `{only.dataset}`{_why_not(only)}, the one dataset compared; list several in "
            f"data.name (`dvc exp run -S 'data.name=[mnist5k,digits,mnist1d]'`) to see whether it generalises."
        )
    if not failed:
        return (
            f"{claim} held on all {len(outcomes)} datasets: on each, every paired interval of its lead lies above zero."
        )
    reasons = "; ".join(f"`{o.dataset}`{_why_not(o)}" for o in failed)
    if not held:
        return f"{claim} held on none of the {len(outcomes)} datasets ({reasons})."
    return (
        f"{claim} held on {len(held)} of {len(outcomes)} datasets ({', '.join(f'`{d}`' for d in held)}) but not "
        f"on {reasons}."
    )


def _why_not(result: Outcome) -> str:
    """' (its lead over `mlp` is undecided: the interval includes zero)', or nothing when the claim held."""
    parts = []
    if result.undecided:
        parts.append(f"its lead over {_names(result.undecided)} is undecided: the interval includes zero")
    if result.reversed:
        parts.append(f"{_names(result.reversed)} {'is' if len(result.reversed) == 1 else 'are'} more accurate")
    return f" ({'; '.join(parts)})" if parts else ""


def _names(models: list[str]) -> str:
    return ", ".join(f"`{m}`" for m in models)
