"""The report's opening: the header paragraph with the params block, and a verdict generated from the numbers.

A speed ratio is stated only when the side-by-side timing backs it (not noisy, per-round interval excluding 1),
and an accuracy difference only when the Holm-corrected paired test does.
"""

from __future__ import annotations

import math

import yaml

from pipeline.reporting import tuning
from pipeline.reporting.comparison import Comparison, SpeedCase
from pipeline.reporting.inputs import ReportInputs
from pipeline.reporting.render import Block, Code, Paragraph

FIX = "run `convbench bench` on an idle machine"


def header_blocks(inputs: ReportInputs) -> list[Block]:
    """What was trained, on which data and machine, with which recipe; then params.yaml folded away."""
    params, comparison, prepared = inputs.params, inputs.comparison, inputs.prepared
    context = inputs.metrics[0].context
    splits = prepared.splits
    names = ", ".join(comparison.name(m) for m in comparison.models)
    header = Paragraph(
        f"convbench trained {len(comparison.models)} models ({names}; the reference is "
        f"{comparison.the(comparison.reference)}) {tuning.recipe_text(params, inputs.trains, comparison.labels)}, "
        f"over seeds "
        f"{inputs.seeds}, on `{params.data.name}`: {len(splits.train):,} train / {len(splits.val):,} val / "
        f"{len(splits.test):,} test images of shape {'x'.join(map(str, prepared.input_shape))}, "
        f"{prepared.num_classes} classes (data sha256 `{prepared.sha256[:12]}`). {tuning.recipe_note(params)} "
        f"Device `{context['device']}` ({context['device_name']}, {context['threads']} threads, {context['dtype']}, "
        f"torch {context['torch']}); git commit `{inputs.commit}`."
    )
    params_text = yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False)
    return [header, Code("yaml", params_text, collapsed="params.yaml used for this report")]


def verdict_blocks(inputs: ReportInputs) -> list[Block]:
    """The verdict and which recipe its numbers come from."""
    return [Paragraph(verdict(inputs.comparison)), Paragraph(tuning.verdict_source(inputs.params))]


def verdict(comparison: Comparison) -> str:
    """A plain-language paragraph generated from the numbers: accuracy first, then what it costs."""
    if not comparison.pairs:
        only, alone = comparison.labels[comparison.reference], comparison.accuracy[comparison.reference]
        return (
            f"Only the {only} is in `models`, so there is nothing to compare it with: it scores {alone.mean:.2%} "
            f"test accuracy over {alone.n} seed(s). Add another model to `models` in params.yaml to ask what one "
            f"architecture buys over another."
        )
    largest = max((c.case.batch for c in comparison.speed if c.case.kind == "inference"), default=None)
    sentences = []
    for model in comparison.pairs:
        accuracy, winner = _accuracy_sentence(comparison, model)
        train_case, train_ratio, train_backed = _speed_claim(comparison, model, "training_step")
        infer_case, infer_ratio, infer_backed = _speed_claim(comparison, model, "inference", largest)
        label = comparison.labels[model]
        batch = "-" if largest is None else str(largest)
        speed = [
            _speed_words(
                train_case, train_backed, "training step", label, f"it trains at {train_ratio:.2f}x the {label}'s speed"
            ),
            _speed_words(
                infer_case,
                infer_backed,
                f"inference speed (batch {batch})",
                label,
                f"runs inference at {infer_ratio:.2f}x its speed (batch {batch})",
            ),
        ]
        sentences += [
            accuracy,
            _cost_sentence(comparison, model),
            " and ".join(speed) + ".",
            _trade_off(comparison, winner, model, train_ratio, train_backed),
        ]
    return " ".join(sentence for sentence in sentences if sentence)


def _accuracy_sentence(comparison: Comparison, model: str) -> tuple[str, str | None]:
    """Whether the reference or `model` is more accurate, and which one (None when indistinguishable)."""
    ref, test = comparison.reference, comparison.pairs[model]
    ref_label, label = comparison.labels[ref], comparison.labels[model]
    a, b = comparison.accuracy[ref], comparison.accuracy[model]
    if not comparison.significant(model):
        return (
            f"On accuracy the {ref_label} and the {label} are statistically indistinguishable: "
            f"{ref_label} {a.mean:.2%} vs {label} {b.mean:.2%} (Holm-adjusted McNemar p = {test.p_holm:.2g})."
        ), None
    lead = test.difference.difference
    leader, trailer = (ref_label, label) if lead > 0 else (label, ref_label)
    sentence = (
        f"The {leader} is more accurate than the {trailer} by {abs(lead) * 100:.2f} percentage points "
        f"({ref_label} {a.mean:.2%} vs {label} {b.mean:.2%}, Holm-adjusted McNemar p = {test.p_holm:.2g})."
    )
    return sentence, (ref if lead > 0 else model)


def _cost_sentence(comparison: Comparison, model: str) -> str:
    """The reference's parameters and FLOPs against `model`'s."""
    ref, label = comparison.reference, comparison.labels[model]
    parameters, flops = comparison.axis("parameters").means, comparison.axis("forward_flops_image").means
    params_ratio = parameters[ref] / parameters[model]
    size = (
        "the same parameter budget"
        if abs(params_ratio - 1) <= 0.01
        else f"{params_ratio:.2f}x the {label}'s parameters"
    )
    return (
        f"With {size}, the {comparison.labels[ref]} spends {flops[ref] / flops[model]:.2f}x the {label}'s FLOPs "
        f"per image;"
    )


def _speed_claim(
    comparison: Comparison, model: str, kind: str, batch: int | None = None
) -> tuple[SpeedCase | None, float, bool]:
    """The reference's speed over `model` in the first case of `kind`, and whether the per-round ratios back a
    difference (not noisy, interval excluding 1)."""
    case = comparison.throughput(kind, batch)
    if case is None:
        return None, math.nan, False
    ratio, low, high = case.ratio(comparison.reference, model, comparison.confidence, comparison.seed)
    return case, ratio, not case.noisy and (low > 1 or high < 1)


def _speed_words(case: SpeedCase | None, backed: bool, what: str, label: str, stated: str) -> str:
    """One speed clause: the ratio when backed, else why it is not stated."""
    if case is None:
        return f"its {what} was not timed"
    if case.noisy:
        return f"its {what} could not be measured cleanly (other work competed for the cores; {FIX})"
    return stated if backed else f"its {what} does not differ measurably from the {label}'s"


def _trade_off(comparison: Comparison, winner: str | None, model: str, train_ratio: float, backed: bool) -> str:
    """What the accuracy costs in training speed, said only when the timing backs it."""
    ref_label, label = comparison.labels[comparison.reference], comparison.labels[model]
    if winner is None:
        return "Without an accuracy difference, the faster model is the better buy here." if backed else ""
    if not backed:
        return ""
    slower = comparison.reference if train_ratio < 1 else model
    winner_label = ref_label if winner == comparison.reference else label
    if winner == slower:
        return f"So the {winner_label}'s accuracy is bought with compute, not with parameters."
    return f"The {winner_label} is both more accurate and faster to train here."
