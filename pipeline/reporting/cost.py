"""The Cost and speed section: every cost axis and bench case per model, which model is better, and why it says so.

A cost axis names a better model only when a test over seeds backs it (exact counts: a tie within 1%); a speed
row only when the per-round ratios of the side-by-side timing do and the case was not noisy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.reporting import figures as draw
from pipeline.reporting import probes
from pipeline.reporting.comparison import AxisResult, Comparison, SpeedCase, by_model, number, p_text
from pipeline.reporting.inputs import ReportInputs
from pipeline.reporting.render import Block, Figure, Paragraph, Table
from pipeline.reporting.verdict import FIX


def axes_frame(comparison: Comparison) -> pd.DataFrame:
    """Every cost and speed axis with each model's value and which one is best."""
    rows = comparison.axes
    table = {"Axis": [f"{r.axis.label} ({r.axis.unit})" if r.axis.unit else r.axis.label for r in rows]}
    for model in comparison.models:
        table[comparison.labels[model]] = [_axis_cell(r, model) for r in rows]
    table["Better" if len(comparison.models) == 2 else "Best"] = [_better(comparison, r) for r in rows]
    frame = pd.DataFrame(table)
    speed = pd.DataFrame([_speed_row(comparison, case) for case in comparison.speed], columns=frame.columns)
    return pd.concat([frame.iloc[:3], speed, frame.iloc[3:]], ignore_index=True) if len(speed) else frame


def _axis_cell(result: AxisResult, model: str) -> str:
    """A model's mean on one axis, ± its spread over seeds for measured axes."""
    axis = result.axis
    text = number(result.means[model], axis.unit, axis.digits)
    if not axis.exact and result.spread[model] > 0:
        text += f" ± {number(result.spread[model], axis.unit, axis.digits)}"
    return text


def _better(comparison: Comparison, result: AxisResult) -> str:
    """Which model is better on one axis, with the ratio and p-value that back it."""
    if result.winner == "tie":
        return "tie (within 1%)"
    if result.winner == "not significant":
        return f"neither (not significant, {p_text(result.p_value)})"
    direction = "higher" if result.axis.higher_is_better else "lower"
    suffix = "" if result.axis.exact else f", {p_text(result.p_value)}"
    runner = f" than {comparison.labels[result.runner_up]}" if len(comparison.models) > 2 else ""
    return f"**{comparison.labels[result.winner]}** ({result.ratio:.2f}x {direction}{runner}{suffix})"


def _speed_row(comparison: Comparison, case: SpeedCase) -> list[str]:
    """One bench case: each model's median (± relative IQR over rounds) and the best, if per-round ratios back it."""
    digits = 3 if case.latency else 0
    cells = [f"{case.values[m]:,.{digits}f} ± {case.spread[m]:.0%}" for m in comparison.models]
    ranked = sorted(comparison.models, key=lambda m: float(np.median(case.samples[m])), reverse=True)
    if len(ranked) < 2:
        best = "n/a"
    elif case.noisy:
        best = "noisy: not compared"  # the note above the table says why and what to do, once
    else:
        ratio, low, high = case.ratio(ranked[0], ranked[1], comparison.confidence, comparison.seed)
        interval = f"[{low:.2f}, {high:.2f}]"
        runner = f" than {comparison.labels[ranked[1]]}" if len(ranked) > 2 else ""
        best = (
            f"**{comparison.labels[ranked[0]]}** ({ratio:.2f}x faster{runner}, per-round {interval})"
            if low > 1
            else f"neither (per-round ratio {ratio:.2f} {interval} includes 1)"
        )
    return [f"{case.label} ({case.unit})", *cells, best]


def method_sentence(inputs: ReportInputs) -> str:
    """How the rows were measured and when a model is named better, with each model's MFU."""
    bench, comparison = inputs.bench, inputs.comparison
    mfu = "; ".join(
        f"{comparison.labels[m]} {bench.mfu[m].train:.1%} training, {bench.mfu[m].inference:.1%} inference"
        for m in comparison.models
    )
    return (
        f"Speed rows come from the bench stage: every model timed in one process, round by round ({bench.rounds} "
        f"rounds, each model in turn), so load and drift fall on all alike; each value is the median over rounds "
        f"± the relative interquartile range, and a model is named faster only when the {comparison.confidence:.0%} "
        "bootstrap interval of its per-round speed ratio excludes 1 and the case was not noisy (run-queue wait "
        "over 10% of the time, or a spread over 15%). Other rows are means over seeds ± their standard deviation; "
        f"peak memory names a better model only when Welch's t-test over seeds gives p < {comparison.alpha:.2f}. "
        "FLOPs are counted by `torch.utils.flop_counter` (a multiply-add is 2 FLOPs; the optimizer update is not "
        "counted). Peak memory is the most tensor memory alive at once (CUDA's max_memory_allocated; on CPU, "
        "torch.profiler's allocation events). MFU (achieved FLOP/s over a square matmul's, timed in the bench "
        f"process at {bench.matmul_flops_per_second / 1e9:,.1f} GFLOP/s): {mfu}."
    )


def blocks(inputs: ReportInputs) -> list[Block]:
    """The cost table, how it was measured, and the accuracy-vs-cost and throughput figures."""
    comparison = inputs.comparison
    out: list[Block] = [
        Table(axes_frame(comparison), ("left",) + ("right",) * len(comparison.models) + ("left",)),
        Paragraph(method_sentence(inputs)),
    ]
    noisy = [case.label for case in comparison.speed if case.noisy and not case.latency]
    if noisy:
        out.insert(
            0,
            Paragraph(
                f"**Noisy timing**: other work competed for the cores while {', '.join(noisy)} were timed, so those "
                f"rows name no faster model; {FIX} (it re-times without retraining)."
            ),
        )
    if probes.varies_size(inputs.probes) or sizes_differ(inputs):
        out.append(
            Figure(_accuracy_vs_cost(inputs), "Test accuracy against parameters and FLOPs (error bars: CI over seeds).")
        )
    out.append(
        Figure(
            _throughput(inputs),
            "Inference throughput against batch size, timed side by side (band: range over rounds).",
        )
    )
    return out


def sizes_differ(inputs: ReportInputs) -> bool:
    """Whether the models' parameter counts differ by more than 5% (else accuracy-vs-size is one vertical line)."""
    counts = [cells[0].params for cells in by_model(inputs.metrics).values()]
    return max(counts) > 1.05 * min(counts)


def _accuracy_vs_cost(inputs: ReportInputs) -> Path:
    """Each model's accuracy against its parameters and FLOPs, plus every size a probe trained it at."""
    comparison, grouped = inputs.comparison, by_model(inputs.metrics)
    points = pd.DataFrame(
        [
            {
                "model": comparison.labels[m],
                "params": grouped[m][0].params,
                "flops": grouped[m][0].flops_forward_per_image,
                "accuracy": comparison.accuracy[m].mean,
                "ci_low": comparison.accuracy[m].low,
                "ci_high": comparison.accuracy[m].high,
            }
            for m in comparison.models
        ]
        + probes.sized_points(inputs)
    ).drop_duplicates(subset=["model", "params"])
    return draw.accuracy_vs_cost(points, inputs.figures_dir / "accuracy_vs_cost.png")


def _throughput(inputs: ReportInputs) -> Path:
    """Inference images/s of every round at every batch size."""
    comparison = inputs.comparison
    throughput = pd.DataFrame(
        [
            {"model": comparison.labels[model], "batch_size": case.case.batch, "images_per_second": value}
            for case in comparison.speed
            if case.case.kind == "inference" and not case.latency
            for model in comparison.models
            for value in case.samples[model]
        ]
    )
    return draw.throughput_vs_batch(throughput, inputs.figures_dir / "throughput_vs_batch.png")
