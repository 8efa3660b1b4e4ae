"""The published numbers beside the measured ones (report.published), the shuffled-pixel row included when run.

The shuffled-pixel column is the permutation probe's permuted setting: the control a paper's permuted-MNIST
table reports, measured here the same way.
"""

from __future__ import annotations

import pandas as pd

from pipeline.core.stats import Interval, t_interval
from pipeline.reporting.inputs import ReportInputs
from pipeline.reporting.render import Block, Paragraph, Table

SHUFFLED = ("permutation", "permuted")  # the probe and the setting whose rows give the shuffled-pixel column


def blocks(inputs: ReportInputs) -> list[Block] | None:
    """The published and measured accuracies side by side; None (no section) without report.published."""
    published = inputs.params.report.published
    if published is None:
        return None
    comparison = inputs.comparison
    permuted = _shuffled(inputs)
    ran = SHUFFLED[0] in inputs.probes

    def measured(interval: Interval | None) -> str:
        """A measured interval, or why there is none."""
        if interval is None:
            return "–" if ran else f"not run (probes.run: [{SHUFFLED[0]}])"
        return (
            f"{interval.mean:.3f} [{interval.low:.3f}, {interval.high:.3f}]"
            if interval.n > 1
            else f"{interval.mean:.3f}"
        )

    def shown(value: float | None) -> str:
        """A published number, or a dash where the source gives none."""
        return "–" if value is None else f"{value:.3f}"

    columns = {
        "Model": [comparison.labels[m] for m in comparison.models],
        "Published": [shown(published.accuracy.get(m)) for m in comparison.models],
        f"Measured ({comparison.confidence:.0%} CI)": [measured(comparison.accuracy[m]) for m in comparison.models],
    }
    shuffled = bool(published.permuted) or ran  # a source without shuffled numbers and no probe: no such columns
    if shuffled:
        columns["Published, shuffled pixels"] = [shown(published.permuted.get(m)) for m in comparison.models]
        columns["Measured, shuffled pixels"] = [measured(permuted.get(m)) for m in comparison.models]
    how = "; the shuffled row comes from the permutation probe (one fixed pixel shuffle)" if shuffled else ""
    return [
        Paragraph(
            f"Source: {published.source}. Measured: mean test accuracy over seeds {inputs.seeds} with a t-interval{how}."
        ),
        Table(pd.DataFrame(columns), ("left",) + ("right",) * (len(columns) - 1)),
    ]


def _shuffled(inputs: ReportInputs) -> dict[str, Interval]:
    """Each model's accuracy interval on shuffled pixels, for the models the probe ran."""
    probe, setting = SHUFFLED
    if probe not in inputs.probes:
        return {}
    rows = inputs.probes[probe]
    rows = rows[rows["setting"] == setting]
    return {
        m: t_interval(rows.loc[rows["model"] == m, "test_accuracy"].to_numpy(), inputs.confidence)
        for m in inputs.comparison.models
        if (rows["model"] == m).any()
    }
