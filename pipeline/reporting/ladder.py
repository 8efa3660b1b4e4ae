"""The ladder section: the CNN's lead over the MLP split into what locality buys and what weight sharing buys,
and the steps beyond it (global mixing, attention, residual depth, recurrence), paired with its rungs where it exists.

The ladder appears when a fully-connected, a locally connected and a convolutional model of one geometry are all
compared (core.models.ladder finds them by role, not by name); the steps beyond it appear whenever a model of
a newer role and the model it is paired with are both compared, with or without a ladder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.reporting import figures as draw
from pipeline.reporting.comparison import BiasStep, Comparison, LadderResult, LadderStep, named, the
from pipeline.reporting.inputs import ReportInputs
from pipeline.reporting.render import Block, Figure, Paragraph, Table


def blocks(inputs: ReportInputs) -> list[Block] | None:
    """The ladder's table, sentence and figure, then the steps beyond it; None (no section) with neither."""
    comparison = inputs.comparison
    ladder = comparison.ladder
    out: list[Block] = []
    if ladder is not None:
        out += ladder_blocks(ladder, comparison, _figure(ladder, comparison, inputs.figures_dir))
    if comparison.beyond:
        out += beyond_blocks(comparison.beyond, comparison)
    return out or None


def ladder_blocks(ladder: LadderResult, comparison: Comparison, figure: Path) -> list[Block]:
    """What each step gains, paired on the same test images, and which gains more."""
    labels, rungs, steps = comparison.labels, ladder.rungs, ladder.steps
    total = sum(step.gain.difference for step in steps)
    table = step_columns(steps, labels, comparison.confidence)
    table["Share of the total"] = [f"{step.gain.difference / total:.0%}" if total > 0 else "n/a" for step in steps]
    return [
        Paragraph(
            f"{the(labels, rungs.dense, start=True)}, {the(labels, rungs.local)} and {the(labels, rungs.shared)} "
            f"form a ladder: {the(labels, rungs.local)} has {the(labels, rungs.shared)}'s exact geometry (kernels, "
            f"padding, pooling, head) but a separate filter at every position, so it has locality without weight "
            f"sharing. Each step is paired on the same test images (per-image differences averaged over seeds, then "
            f"bootstrapped)."
        ),
        Table(table, ("left", "left", "right", "right", "right")),
        Paragraph(ladder_sentence(ladder, labels)),
        Figure(figure, "Accuracy of each rung (CI over seeds) and what each step buys (paired bootstrap CI)."),
    ]


def step_columns(steps: Sequence[LadderStep | BiasStep], labels: dict[str, str], confidence: float) -> pd.DataFrame:
    """The columns every table of paired steps shares: the step, its two models, the gain and its interval."""
    return pd.DataFrame(
        {
            "Step": [step.name for step in steps],
            "Models": [f"{labels[step.upper]} − {labels[step.lower]}" for step in steps],
            "Accuracy gain (points)": [f"{step.gain.difference * 100:+.2f}" for step in steps],
            f"{confidence:.0%} paired-bootstrap CI": [
                f"[{step.gain.low * 100:+.2f}, {step.gain.high * 100:+.2f}]" for step in steps
            ],
        }
    )


def ladder_sentence(ladder: LadderResult, labels: dict[str, str]) -> str:
    """Which part of the lead is larger, said only as strongly as the paired contrast's interval allows."""
    locality, sharing = ladder.steps
    contrast = ladder.contrast
    total = locality.gain.difference + sharing.gain.difference

    def part(step: LadderStep) -> str:
        """One step's gain with its interval, flagged when the interval includes zero."""
        g = step.gain
        sign = "" if g.low > 0 or g.high < 0 else ", an interval that includes zero"
        return (
            f"{step.name} ({named(labels, step.upper)} − {named(labels, step.lower)}) {g.difference * 100:+.2f} points "
            f"[{g.low * 100:+.2f}, {g.high * 100:+.2f}{sign}]"
        )

    opening = (
        f"Of {the(labels, ladder.rungs.shared)}'s {total * 100:+.2f}-point lead over "
        f"{the(labels, ladder.rungs.dense)}, {part(locality)} and {part(sharing)}."
    )
    if contrast.low > 0:
        return (
            f"{opening} Weight sharing buys more than locality (their difference "
            f"{contrast.difference * 100:+.2f} points, CI [{contrast.low * 100:+.2f}, {contrast.high * 100:+.2f}])."
        )
    if contrast.high < 0:
        return (
            f"{opening} Locality buys more than weight sharing (their difference "
            f"{-contrast.difference * 100:+.2f} points, CI [{-contrast.high * 100:+.2f}, "
            f"{-contrast.low * 100:+.2f}])."
        )
    return (
        f"{opening} Which part is larger cannot be told from these numbers (the difference between them, "
        f"{contrast.difference * 100:+.2f} points for sharing minus locality, has a CI "
        f"[{contrast.low * 100:+.2f}, {contrast.high * 100:+.2f}] that includes zero)."
    )


SIZE_GAP = 1.05  # parameter counts further apart than this are said to differ (as cost.py's accuracy-vs-size)


def beyond_blocks(steps: list[BiasStep], comparison: Comparison) -> list[Block]:
    """One table of the steps beyond the ladder and one sentence per step, each as strong as its interval."""
    labels = comparison.labels
    table = step_columns(steps, labels, comparison.confidence)
    table["Parameters (first vs second)"] = [f"{step.upper_params:,} vs {step.lower_params:,}" for step in steps]
    opening = "Beyond the ladder, each" if comparison.ladder is not None else "Each"
    intro = (
        f"{opening} model of a newer inductive bias is paired with the model whose bias it replaces or builds on, "
        f"on the same test images: a step's gain is the first model's accuracy minus the second's (per-image "
        f"differences averaged over seeds, then bootstrapped)."
    )
    if any(max(s.upper_params, s.lower_params) > SIZE_GAP * min(s.upper_params, s.lower_params) for s in steps):
        intro += " Where the parameter counts differ, a step's gain is the bias and the size together."
    sentences = [Paragraph(beyond_sentence(step, labels, comparison.confidence)) for step in steps]
    return [Paragraph(intro), Table(table, ("left", "left", "right", "right", "right")), *sentences]


def beyond_sentence(step: BiasStep, labels: dict[str, str], confidence: float) -> str:
    """What one step buys, said only as strongly as its paired interval allows (one including zero says so)."""
    g, what = step.gain, step.kind.what
    upper, lower = the(labels, step.upper), the(labels, step.lower)
    interval = f"{confidence:.0%} CI [{g.low * 100:+.2f}, {g.high * 100:+.2f}]"
    head = f"**{step.name[0].upper()}{step.name[1:]}** ({named(labels, step.upper)} − {named(labels, step.lower)}): "
    if g.low > 0:
        return (
            f"{head}{upper} is {g.difference * 100:.2f} points more accurate than {lower} ({interval}), "
            f"a gain for {what} on this data."
        )
    if g.high < 0:
        return (
            f"{head}{upper} is {-g.difference * 100:.2f} points less accurate than {lower} ({interval}), "
            f"a cost of {what} on this data."
        )
    return (
        f"{head}{upper} and {lower} differ by {g.difference * 100:+.2f} points, a {interval} that includes zero: "
        f"no gain or loss from {what} can be told from these numbers."
    )


def _figure(ladder: LadderResult, comparison: Comparison, figures_dir: Path) -> Path:
    """Each rung's accuracy and each step's paired gain."""
    labels, rungs = comparison.labels, ladder.rungs
    gains = {step.upper: step for step in ladder.steps}

    def rung(model: str) -> dict[str, object]:
        """One bar of the figure: the rung's accuracy and the gain of the step that reached it."""
        step = gains.get(model)
        return {
            "label": labels[model],
            "accuracy": comparison.accuracy[model].mean,
            "low": comparison.accuracy[model].low,
            "high": comparison.accuracy[model].high,
            "step": f"+{step.name}\n({labels[model]} − {labels[step.lower]})" if step else None,
            "gain": step.gain.difference * 100 if step else np.nan,
            "gain_low": step.gain.low * 100 if step else np.nan,
            "gain_high": step.gain.high * 100 if step else np.nan,
        }

    frame = pd.DataFrame([rung(m) for m in (rungs.dense, rungs.local, rungs.shared)])
    return draw.ladder(frame, figures_dir / "ladder.png")
