"""The report's opening: the header paragraph with the params block, and a verdict generated from the numbers.

A speed ratio is stated only when the side-by-side timing backs it (not noisy, per-round interval excluding 1),
and an accuracy difference only when the Holm-corrected McNemar test does; each pair's verdict names that test,
gives the paired-bootstrap interval beside it, and says in one sentence why the two disagree when they do.
A caveat shared by every pair (noisy timing) is said once, after the pairs.
"""

from __future__ import annotations

import math

import yaml

from pipeline.reporting import tuning
from pipeline.reporting.comparison import Comparison, SpeedCase, p_text, p_value
from pipeline.reporting.inputs import ReportInputs
from pipeline.reporting.render import Block, Code, Paragraph

FIX = "run `convbench bench` on an idle machine"


def header_blocks(inputs: ReportInputs) -> list[Block]:
    """What was trained, on which data and machine, with which recipe; then params.yaml folded away."""
    params, comparison, prepared = inputs.params, inputs.comparison, inputs.prepared
    context = inputs.metrics[0].context
    splits = prepared.splits
    names = ", ".join(comparison.name(m) for m in comparison.models)
    note = f"{tuning.recipe_note(params)} " if tuning.recipe_note(params) else ""
    header = Paragraph(
        f"convbench trained {len(comparison.models)} models ({names}; the reference is "
        f"{comparison.the(comparison.reference)}) {tuning.recipe_text(params, inputs.trains, comparison.labels)}, "
        f"over seeds "
        f"{inputs.seeds}, on `{params.data.name}`: {len(splits.train):,} train / {len(splits.val):,} val / "
        f"{len(splits.test):,} test images of shape {'x'.join(map(str, prepared.input_shape))}, "
        f"{prepared.num_classes} classes (data sha256 `{prepared.sha256[:12]}`). {note}"
        f"Device `{context['device']}` ({context['device_name']}, {context['threads']} threads, {context['dtype']}, "
        f"torch {context['torch']}); git commit `{inputs.commit}`."
    )
    params_text = yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False)
    return [header, Code("yaml", params_text, collapsed="params.yaml used for this report")]


def verdict_blocks(inputs: ReportInputs) -> list[Block]:
    """The verdict, a paragraph per pair, and which recipe its numbers come from."""
    return [*(Paragraph(text) for text in verdict(inputs.comparison)), Paragraph(tuning.verdict_source(inputs.params))]


def verdict(comparison: Comparison) -> list[str]:
    """Plain-language paragraphs generated from the numbers: per pair, accuracy first (by the test it follows,
    and why the paired tests disagree when they do), then what it costs; then, once, the speed not compared."""
    if not comparison.pairs:
        alone = comparison.accuracy[comparison.reference]
        return [
            f"Only {comparison.the(comparison.reference)} is in `models`, so there is nothing to compare it with: "
            f"it scores {alone.mean:.2%} test accuracy over {alone.n} seed(s). Add another model to `models` in "
            f"params.yaml to ask what one architecture buys over another."
        ]
    largest = max((c.case.batch for c in comparison.speed if c.case.kind == "inference"), default=None)
    inference = "inference" if largest is None else f"inference at batch {largest}"
    kinds = (("training_step", None, "the training step"), ("inference", largest, inference))
    unmeasured: dict[str, str] = {}  # the speed a case would have given, by what kept it out: noisy, not timed
    paragraphs = []
    for model in comparison.pairs:
        clauses, backed = [], {}
        for kind, batch, what in kinds:
            case, ratio, supported = _speed_claim(comparison, model, kind, batch)
            backed[kind] = (ratio, supported)
            if case is None:
                unmeasured.setdefault(what, "not timed")
            elif case.noisy:
                unmeasured.setdefault(what, "noisy")
            else:
                clauses.append(_speed_words(comparison, model, kind, ratio, supported, batch))
        sentences = [
            *_accuracy_sentences(comparison, model),
            _cost_sentence(comparison, model, clauses),
            _trade_off(comparison, model, *backed["training_step"]),
        ]
        paragraphs.append(" ".join(sentence for sentence in sentences if sentence))
    note = _unmeasured_note(unmeasured)
    return paragraphs + ([note] if note else [])


def _lead_interval(comparison: Comparison, model: str, winner: str | None) -> str:
    """The paired-bootstrap interval of the winner's lead (of the reference's without a winner), in points."""
    d = comparison.pairs[model].difference
    low, high = (d.low, d.high) if winner != model else (-d.high, -d.low)
    return f"[{low * 100:+.2f}, {high * 100:+.2f}] points"


def _accuracy_sentences(comparison: Comparison, model: str) -> list[str]:
    """The pair's accuracy verdict, naming the test it follows (McNemar) beside the paired-bootstrap interval,
    and one sentence on why the two disagree when they do."""
    ref, test = comparison.reference, comparison.pairs[model]
    a, b = comparison.accuracy[ref], comparison.accuracy[model]
    level = f"{comparison.confidence:.0%}"
    scores = f"{comparison.name(ref)} {a.mean:.2%} vs {comparison.name(model)} {b.mean:.2%}"
    winner = comparison.winner(model)
    agree = comparison.tests_agree(model)
    follows = "McNemar's test, which the verdict follows" if not agree else "McNemar's test"
    if winner is not None:
        loser = model if winner == ref else ref
        lead = abs(test.difference.difference)
        interval = _lead_interval(comparison, model, winner)
        said = (
            f"{comparison.the(winner, start=True)} is more accurate than {comparison.the(loser)} by {lead * 100:.2f} "
            f"percentage points ({scores}; {follows}, Holm-adjusted {p_text(test.p_holm)}"
        )
        if agree:
            return [f"{said}; {level} paired-bootstrap CI of the lead {interval})."]
        return [
            f"{said}), although the {level} paired-bootstrap CI of that lead, {interval}, includes zero.",
            "The two disagree because McNemar's test is significant in every seed on its own, while the bootstrap "
            "interval of the lead averaged over seeds reaches zero: the lead is real by the test, its size uncertain.",
        ]
    interval = _lead_interval(comparison, model, None)
    pair = f"{comparison.the(ref, start=True)} and {comparison.the(model)}"
    if comparison.significant(model):  # every seed differs, but not all in the same direction
        ahead = sum(1 for t in test.per_seed if t.only_a_correct > t.only_b_correct)
        return [
            f"{pair} differ significantly in every seed by McNemar's test (Holm-adjusted {p_text(test.p_holm)}), "
            f"but not in the same direction ({comparison.the(ref)} is ahead in {ahead} of {len(test.per_seed)} "
            f"seeds), so neither is named more accurate ({scores}; {level} paired-bootstrap CI of "
            f"{comparison.the(ref)}'s lead {interval})."
        ]
    said = (
        f"{pair} do not differ significantly in accuracy by {follows} ({scores}, Holm-adjusted {p_text(test.p_holm)})"
    )
    if agree:
        return [f"{said}; the {level} paired-bootstrap CI of {comparison.the(ref)}'s lead, {interval}, includes zero."]
    return [
        f"{said}, although the {level} paired-bootstrap CI of {comparison.the(ref)}'s lead, {interval}, excludes zero.",
        f"The two disagree because {_why_mcnemar_is_stricter(comparison, model)}.",
    ]


def _why_mcnemar_is_stricter(comparison: Comparison, model: str) -> str:
    """Why McNemar's verdict finds no difference where the bootstrap interval excludes zero, from this pair's
    numbers: Holm's correction, the per-seed (intersection-union) rule, or, with one seed, the exact test."""
    test, alpha = comparison.pairs[model], comparison.alpha
    seeds = len(test.per_seed)
    if test.p_value < alpha:
        return (
            f"Holm's correction for the {len(comparison.pairs)} pairs compared raises McNemar's p from "
            f"{p_value(test.p_value)} to {p_value(test.p_holm)}, and the bootstrap interval is not corrected for them"
        )
    if seeds > 1:
        significant = sum(1 for t in test.per_seed if t.p_value < alpha)
        if significant:
            return (
                f"McNemar's test counts a difference only when every seed shows it on its own ({significant} of "
                f"{seeds} seeds do; the largest p is {p_value(test.p_value)}), while the bootstrap pools the seeds, "
                f"averaging each image's difference over them"
            )
        return (
            f"no single seed's McNemar test reaches α = {alpha:.2g} (the smallest p is "
            f"{p_value(min(t.p_value for t in test.per_seed))}), while the bootstrap pools the {seeds} seeds, "
            f"averaging each image's difference over them"
        )
    (only,) = test.per_seed
    return (
        f"with one seed both read the same predictions, and McNemar's exact test on the "
        f"{only.only_a_correct + only.only_b_correct} images where the two models disagree is stricter than the "
        f"percentile-bootstrap interval, whose {comparison.confidence:.0%} coverage is only approximate"
    )


def _cost_sentence(comparison: Comparison, model: str, speed: list[str]) -> str:
    """The reference's parameters and FLOPs against `model`'s, then the speed clauses the timing backs."""
    ref = comparison.reference
    parameters, flops = comparison.axis("parameters").means, comparison.axis("forward_flops_image").means
    params_ratio = parameters[ref] / parameters[model]
    other = comparison.the(model)
    size = "the same parameter budget" if abs(params_ratio - 1) <= 0.01 else f"{params_ratio:.2f}x {other}'s parameters"
    said = f"With {size}, {comparison.the(ref)} spends {flops[ref] / flops[model]:.2f}x {other}'s FLOPs per image"
    return f"{said}; {' and '.join(speed)}." if speed else f"{said}."


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


def _speed_words(comparison: Comparison, model: str, kind: str, ratio: float, backed: bool, batch: int | None) -> str:
    """One speed clause of a cleanly timed case: the ratio when the per-round interval backs it, else that none
    was measured."""
    other = comparison.the(model)
    if kind == "training_step":
        if backed:
            return f"it trains at {ratio:.2f}x {other}'s speed"
        return f"its training speed does not differ measurably from {other}'s"
    if backed:
        return f"it runs inference at {ratio:.2f}x {other}'s speed (batch {batch})"
    return f"its inference speed (batch {batch}) does not differ measurably from {other}'s"


def _unmeasured_note(unmeasured: dict[str, str]) -> str:
    """One sentence, once, for the speed the verdict leaves out: noisy timings and cases not timed."""
    noisy = [what for what, why in unmeasured.items() if why == "noisy"]
    untimed = [what for what, why in unmeasured.items() if why == "not timed"]
    said = []
    if noisy:
        said.append(
            f"No speed is compared for {' or '.join(noisy)}: other work competed for the cores while "
            f"{'it was' if len(noisy) == 1 else 'they were'} timed (see Cost and speed)."
        )
    if untimed:
        said.append(
            f"No speed is compared for {' or '.join(untimed)}: the bench stage did not time "
            f"{'it' if len(untimed) == 1 else 'them'}."
        )
    return " ".join(said)


def _trade_off(comparison: Comparison, model: str, train_ratio: float, backed: bool) -> str:
    """What the accuracy costs in training speed, said only when the timing backs it."""
    if not backed:
        return ""
    ref = comparison.reference
    winner, faster = comparison.winner(model), (ref if train_ratio > 1 else model)
    if winner is None:
        if comparison.significant(model):
            return ""
        return f"With no significant accuracy difference, {comparison.the(faster)} is the cheaper one to train here."
    if winner == faster:
        return f"{comparison.the(winner, start=True)} is both more accurate and faster to train here."
    parameters = comparison.axis("parameters").means
    if abs(parameters[ref] / parameters[model] - 1) <= 0.01:
        return f"So {comparison.the(winner)}'s accuracy is bought with compute, not with parameters."
    return f"So {comparison.the(winner)}'s accuracy comes with slower training."
