"""The numbers behind the report, computed once: accuracy intervals, paired tests, cost axes, speed, the ladder and
the steps beyond it.

Every section reads this one Comparison, so no two parts of the report can compute a figure differently.
Values come from the typed records (CellMetrics, BenchResult) by attribute; no model is named here, so any
list of registered models flows through.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.artifacts.bench_record import BenchCase, BenchResult
from pipeline.artifacts.records import CellMetrics
from pipeline.core.models import Ladder
from pipeline.core.stats import (
    Interval,
    McNemar,
    PairedDifference,
    bootstrap_mean,
    holm,
    mcnemar,
    median_interval,
    paired_bootstrap,
    t_interval,
    welch_p_value,
)
from pipeline.params import ReportParams


@dataclass(frozen=True)
class Cast:
    """Who a section talks about: the models in report order, their labels, and the reference."""

    models: list[str]
    labels: dict[str, str]
    reference: str

    @property
    def others(self) -> list[str]:
        """Every model but the reference."""
        return [m for m in self.models if m != self.reference]

    def name(self, model: str) -> str:
        """A model in running text: a built-in architecture by its label (CNN); any other model by its alias, as
        code (`mine`). A model whose label is its own alias is one the user named (a builder, or a second alias
        of an architecture), and an article before a name someone chose reads wrong ('the mine')."""
        return named(self.labels, model)

    def the(self, model: str, start: bool = False) -> str:
        """A model as a noun phrase: 'the CNN' ('The CNN' to open a sentence), or its alias `mine`, no article."""
        return the(self.labels, model, start)


def named(labels: dict[str, str], model: str) -> str:
    """A model in running text: its label, or its alias as code when the label is the alias (see Cast.name)."""
    label = labels[model]
    return f"`{label}`" if label == model else label


def the(labels: dict[str, str], model: str, start: bool = False) -> str:
    """A model as a noun phrase: 'the CNN' ('The CNN' to open a sentence), or its alias `mine`, no article."""
    label = labels[model]
    if label == model:
        return f"`{label}`"
    return f"{'The' if start else 'the'} {label}"


P_FLOOR = 0.001  # smaller p-values are stated as 'p < 0.001': the tests' tails are not that exact


def p_value(p: float) -> str:
    """A p-value as a table shows it: '< 0.001', else two significant digits ('0.052'), or 'n/a' (NaN)."""
    if math.isnan(p):
        return "n/a"
    if p < P_FLOOR:
        return f"< {P_FLOOR:g}"
    text = f"{p:.2g}"
    return f"{p:.3g}" if float(text) in (0.05, 0.01) and p < float(text) else text  # 0.0496 is not 'p = 0.05'


def p_text(p: float) -> str:
    """A p-value in running text: 'p < 0.001', 'p = 0.052' or 'p = n/a'."""
    shown = p_value(p)
    return f"p {shown}" if shown.startswith("<") else f"p = {shown}"


@dataclass(frozen=True)
class Axis:
    """One row of the cost table: a stable key (MLflow metric names), a heading, how to read it off a cell."""

    key: str
    label: str
    value: Callable[[CellMetrics], float]
    unit: str
    higher_is_better: bool
    exact: bool = False  # deterministic counts: no test, a tie when within 1%
    digits: int = 0


AXES = (
    Axis("parameters", "Parameters", lambda m: m.params, "", higher_is_better=False, exact=True),
    Axis(
        "forward_flops_image",
        "Forward FLOPs / image",
        lambda m: m.flops_forward_per_image,
        "MFLOP",
        False,
        exact=True,
        digits=2,
    ),
    Axis(
        "training_step_flops_image",
        "Training-step FLOPs / image",
        lambda m: m.flops_train_step_per_image,
        "MFLOP",
        False,
        exact=True,
        digits=2,
    ),
    Axis(
        "time_to_final_accuracy", "Time to final accuracy", lambda m: m.seconds_to_final_accuracy, "s", False, digits=1
    ),
    Axis(
        "peak_memory_training_step",
        "Peak memory, training step",
        lambda m: m.peak_memory_mb.train_step,
        "MiB",
        False,
        digits=1,
    ),
    Axis(
        "peak_memory_inference", "Peak memory, inference", lambda m: m.peak_memory_mb.inference, "MiB", False, digits=1
    ),
)
SCALE = {"MFLOP": 1e-6, "%": 100.0}


def number(value: float, unit: str, digits: int) -> str:
    """A value in its unit's display scale (MFLOP, %), with thousands separators."""
    return f"{value * SCALE.get(unit, 1.0):,.{digits}f}"


@dataclass(frozen=True)
class AxisResult:
    """One axis measured: each model's mean and spread over seeds, and which model is better, if any."""

    axis: Axis
    means: dict[str, float]
    spread: dict[str, float]  # standard deviation over seeds (0 with one seed)
    best: str
    runner_up: str
    ratio: float  # the larger of best's and runner-up's means over the smaller
    p_value: float  # Welch's test of best against runner-up (NaN for exact axes)
    winner: str  # a model, "tie" or "not significant"


LATENCY = BenchCase("inference", 1)  # the case whose ms per call is also shown as a latency row


@dataclass(frozen=True)
class SpeedCase:
    """One case of the bench stage (all models timed side by side, round by round) as the report uses it."""

    case: BenchCase
    values: dict[str, float]  # per model: median images/s (or ms per call for the latency row)
    spread: dict[str, float]  # per model: relative interquartile range over rounds
    samples: dict[str, list[float]]  # per model: images/s in each round (paired by round across models)
    noisy: bool
    latency: bool = False  # values are ms per call, not images/s

    @property
    def unit(self) -> str:
        """What the values count."""
        return "ms" if self.latency else "img/s"

    @property
    def label(self) -> str:
        """How the cost table names the row."""
        return f"Latency @ batch {self.case.batch}" if self.latency else self.case.label

    def ratio(self, faster: str, slower: str, confidence: float, seed: int) -> tuple[float, float, float]:
        """How many times `faster`'s speed `slower`'s is: median of per-round ratios, with a bootstrap interval."""
        return median_interval([a / b for a, b in zip(self.samples[faster], self.samples[slower])], confidence, seed)


def speed_cases(bench: BenchResult) -> list[SpeedCase]:
    """Inference at each batch size, batch-1 latency and the training step, from the bench record."""
    cases = []
    for case, result in bench.by_case().items():
        spread = {m: s.relative_iqr for m, s in result.models.items()}
        samples = {m: list(s.samples) for m, s in result.models.items()}
        cases.append(
            SpeedCase(case, {m: s.images_per_second for m, s in result.models.items()}, spread, samples, result.noisy)
        )
        if case == LATENCY:
            cases.append(
                SpeedCase(
                    case,
                    {m: s.ms_per_call for m, s in result.models.items()},
                    spread,
                    samples,
                    result.noisy,
                    latency=True,
                )
            )
    return cases


@dataclass(frozen=True)
class PairTest:
    """The reference against one other model on the same test images."""

    model: str
    difference: PairedDifference  # accuracy of the reference minus the model's
    per_seed: list[McNemar]
    p_value: float  # the largest per-seed McNemar p: significant only if every seed is (intersection-union test)
    p_holm: float  # adjusted across all the pairs of the report

    @property
    def interval_excludes_zero(self) -> bool:
        """Whether the paired-bootstrap interval of the reference's lead excludes zero."""
        return self.difference.low > 0 or self.difference.high < 0

    @property
    def directions(self) -> set[int]:
        """The sign of each seed's discordance (+1: only the reference right more often; -1: the model; 0: even)."""
        return {int(np.sign(t.only_a_correct - t.only_b_correct)) for t in self.per_seed}


@dataclass(frozen=True)
class LadderStep:
    """One rung's gain over the rung below it, paired on the same test images."""

    name: str
    lower: str
    upper: str
    gain: PairedDifference


@dataclass(frozen=True)
class LadderResult:
    """What locality and weight sharing each buy, and their contrast (sharing minus locality)."""

    rungs: Ladder
    steps: list[LadderStep]
    contrast: PairedDifference


@dataclass(frozen=True)
class BiasKind:
    """One kind of step beyond the ladder: a model of `role` paired with the model of the `anchor` role."""

    role: str  # the role of each model the step is taken for (core.models.ROLES)
    anchor: str  # the role of the one model it is paired with: "dense" or "shared", picked once per report
    above: bool  # True: the model's gain over the anchor; False: the anchor's gain over the model
    name: str  # the step as the table names it
    what: str  # what the upper model's bias adds over the lower's, as a noun phrase for the sentence


# In report order: what global mixing buys over dense layers, what locality and sharing buy over global mixing,
# what residual depth buys over a plain convolutional stack, what a recurrence buys over dense layers.
BEYOND = (
    BiasKind(
        role="mixing",
        anchor="dense",
        above=True,
        name="global, learned mixing",
        what="global mixing learned across patches over dense layers",
    ),
    BiasKind(
        role="attention",
        anchor="dense",
        above=True,
        name="global mixing by attention",
        what="global mixing by attention over dense layers",
    ),
    BiasKind(
        role="mixing",
        anchor="shared",
        above=False,
        name="locality and sharing over mixing",
        what="locality and weight sharing over global, learned mixing",
    ),
    BiasKind(
        role="attention",
        anchor="shared",
        above=False,
        name="locality and sharing over attention",
        what="locality and weight sharing over attention",
    ),
    BiasKind(
        role="residual",
        anchor="shared",
        above=True,
        name="residual depth",
        what="residual depth, BatchNorm and global pooling over a plain convolutional stack",
    ),
    BiasKind(
        role="recurrent",
        anchor="dense",
        above=True,
        name="recurrence",
        what="a recurrence with weights shared across steps over dense layers",
    ),
)


@dataclass(frozen=True)
class BiasStep:
    """One step beyond the ladder: the upper model's gain over the lower one, paired on the same test images."""

    kind: BiasKind
    lower: str
    upper: str
    gain: PairedDifference  # accuracy of upper minus lower
    lower_params: int
    upper_params: int

    @property
    def name(self) -> str:
        """The step as the table names it."""
        return self.kind.name

    @property
    def key(self) -> str:
        """A stable MLflow metric stem from the two aliases (letters, digits and underscores only)."""
        return f"beyond_{self.upper}_minus_{self.lower}"


@dataclass(frozen=True)
class Comparison:
    """Everything the report states, computed once from the metrics, predictions and bench record."""

    models: list[str]
    labels: dict[str, str]
    reference: str
    accuracy: dict[str, Interval]
    pairs: dict[str, PairTest]
    axes: list[AxisResult]
    confidence: float
    speed: list[SpeedCase] = field(default_factory=list)
    seed: int = 0
    ladder: LadderResult | None = None
    beyond: list[BiasStep] = field(default_factory=list)  # the steps beyond the ladder, in BEYOND's order

    @property
    def alpha(self) -> float:
        """Significance level that goes with the confidence level."""
        return 1 - self.confidence

    @property
    def cast(self) -> Cast:
        """The models, labels and reference, as the probe section takes them."""
        return Cast(self.models, self.labels, self.reference)

    def significant(self, model: str) -> bool:
        """Whether the reference and `model` differ in accuracy after Holm's correction."""
        return self.pairs[model].p_holm < self.alpha

    def winner(self, model: str) -> str | None:
        """The more accurate of the reference and `model` by McNemar's test, which the verdict follows: named only
        when the Holm-adjusted test is significant and every seed leans the same way (each seed's test is
        two-sided, so seeds that differ in opposite directions name no winner)."""
        if not self.significant(model):
            return None
        directions = self.pairs[model].directions
        if directions == {1}:
            return self.reference
        return model if directions == {-1} else None

    def tests_agree(self, model: str) -> bool:
        """Whether McNemar's verdict and the paired-bootstrap interval say the same (a difference, or none)."""
        return (self.winner(model) is not None) == self.pairs[model].interval_excludes_zero

    def name(self, model: str) -> str:
        """A model in running text (see Cast.name)."""
        return named(self.labels, model)

    def the(self, model: str, start: bool = False) -> str:
        """A model as a noun phrase (see Cast.the)."""
        return the(self.labels, model, start)

    def axis(self, key: str) -> AxisResult:
        """One cost axis by its key."""
        return next(result for result in self.axes if result.axis.key == key)

    def throughput(self, kind: str, batch: int | None = None) -> SpeedCase | None:
        """The first images/s case of `kind` (at `batch`, if given), or None when it was not timed."""
        return next(
            (
                c
                for c in self.speed
                if not c.latency and c.case.kind == kind and (batch is None or c.case.batch == batch)
            ),
            None,
        )


def by_model(metrics: Sequence[CellMetrics]) -> dict[str, list[CellMetrics]]:
    """The cells' metrics grouped per model, seeds in the order read."""
    grouped: dict[str, list[CellMetrics]] = {}
    for cell in metrics:
        grouped.setdefault(cell.model, []).append(cell)
    return grouped


def compare(  # 9 parameters: each input is a different record: metrics, correctness, bench, ladder, roles
    metrics: Sequence[CellMetrics],
    correctness: dict[str, np.ndarray],
    settings: ReportParams,
    models: list[str],
    reference: str,
    labels: dict[str, str],
    speed: list[SpeedCase] | None = None,
    rungs: Ladder | None = None,
    roles: Mapping[str, str] | None = None,
) -> Comparison:
    """Intervals over seeds, the paired tests of the reference against every other model, the best model per axis,
    the ladder and, given each model's role, the steps beyond it."""
    grouped = by_model(metrics)
    accuracy = {m: t_interval([c.test_accuracy for c in grouped[m]], settings.confidence) for m in models}
    pairs = pair_tests(correctness, settings, reference, [m for m in models if m != reference])
    axes = [axis_result(axis, grouped, models, 1 - settings.confidence) for axis in AXES]
    ladder = ladder_steps(rungs, correctness, settings) if rungs is not None else None
    beyond = beyond_steps(beyond_pairs(roles or {}, models, reference, rungs), correctness, grouped, settings)
    return Comparison(
        models,
        labels,
        reference,
        accuracy,
        pairs,
        axes,
        settings.confidence,
        speed or [],
        settings.bootstrap_seed,
        ladder,
        beyond,
    )


def pair_tests(
    correctness: dict[str, np.ndarray], settings: ReportParams, reference: str, others: list[str]
) -> dict[str, PairTest]:
    """Per other model: the paired bootstrap of the reference's lead, McNemar per seed, Holm across the pairs."""
    raw = {}
    for model in others:
        per_seed = [mcnemar(ref, other) for ref, other in zip(correctness[reference], correctness[model])]
        difference = paired_bootstrap(
            correctness[reference],
            correctness[model],
            settings.confidence,
            settings.bootstrap_resamples,
            settings.bootstrap_seed,
        )
        raw[model] = (difference, per_seed, max(test.p_value for test in per_seed))
    adjusted = holm([raw[m][2] for m in others]) if others else []
    return {m: PairTest(m, raw[m][0], raw[m][1], raw[m][2], p) for m, p in zip(others, adjusted)}


def axis_result(axis: Axis, grouped: dict[str, list[CellMetrics]], models: list[str], alpha: float) -> AxisResult:
    """Each model's mean on one axis and the best one: exact counts tie within 1%, measured ones need Welch's p."""
    values = {m: np.array([float(axis.value(cell)) for cell in grouped[m]]) for m in models}
    means = {m: float(v.mean()) for m, v in values.items()}
    spread = {m: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()}
    ranked = sorted(models, key=lambda m: means[m], reverse=axis.higher_is_better)
    best = ranked[0]
    if len(ranked) == 1:
        return AxisResult(axis, means, spread, best, best, 1.0, math.nan, "tie")
    runner_up = ranked[1]
    high, low = max(means[best], means[runner_up]), min(means[best], means[runner_up])
    ratio = high / low if low > 0 else math.inf
    if axis.exact:
        p_value, winner = math.nan, ("tie" if ratio <= 1.01 else best)
    else:
        p_value = welch_p_value(values[best], values[runner_up])
        winner = best if p_value < alpha else "not significant"
    return AxisResult(axis, means, spread, best, runner_up, ratio, p_value, winner)


def paired_gain(correctness: dict[str, np.ndarray], upper: str, lower: str, settings: ReportParams) -> PairedDifference:
    """One step's paired gain (upper minus lower), bootstrapped like every other pair of the report."""
    return paired_bootstrap(
        correctness[upper],
        correctness[lower],
        settings.confidence,
        settings.bootstrap_resamples,
        settings.bootstrap_seed,
    )


def ladder_steps(rungs: Ladder, correctness: dict[str, np.ndarray], settings: ReportParams) -> LadderResult:
    """Locality (local − dense) and weight sharing (shared − local), plus their contrast (sharing − locality)."""
    steps = [
        LadderStep("locality", rungs.dense, rungs.local, paired_gain(correctness, rungs.local, rungs.dense, settings)),
        LadderStep(
            "weight sharing", rungs.local, rungs.shared, paired_gain(correctness, rungs.shared, rungs.local, settings)
        ),
    ]
    as_float = {m: correctness[m].astype(float) for m in (rungs.dense, rungs.local, rungs.shared)}
    contrast = bootstrap_mean(
        as_float[rungs.shared] - 2 * as_float[rungs.local] + as_float[rungs.dense],
        settings.confidence,
        settings.bootstrap_resamples,
        settings.bootstrap_seed,
    )
    return LadderResult(rungs, steps, contrast)


def anchor(role: str, roles: Mapping[str, str], models: list[str], reference: str, rungs: Ladder | None) -> str | None:
    """The one model of `role` the steps beyond the ladder pair with: the ladder's rung of that role when there is
    a ladder, else the reference when it has that role, else the first such model in report order."""
    rung = {"dense": rungs.dense, "local": rungs.local, "shared": rungs.shared}.get(role) if rungs else None
    if rung is not None and rung in models:
        return rung
    if reference in models and roles.get(reference) == role:
        return reference
    return next((m for m in models if roles.get(m) == role), None)


def beyond_pairs(
    roles: Mapping[str, str], models: list[str], reference: str, rungs: Ladder | None
) -> list[tuple[BiasKind, str, str]]:
    """(kind, lower, upper) for each step beyond the ladder whose two models are both compared, found by role."""
    found = []
    for kind in BEYOND:
        paired = anchor(kind.anchor, roles, models, reference, rungs)
        if paired is None:
            continue
        for model in (m for m in models if roles.get(m) == kind.role):
            found.append((kind, paired, model) if kind.above else (kind, model, paired))
    return found


def beyond_steps(
    pairs: list[tuple[BiasKind, str, str]],
    correctness: dict[str, np.ndarray],
    grouped: dict[str, list[CellMetrics]],
    settings: ReportParams,
) -> list[BiasStep]:
    """Each pair's paired gain with the ladder's bootstrap settings, and both models' parameter counts."""
    return [
        BiasStep(
            kind,
            lower,
            upper,
            paired_gain(correctness, upper, lower, settings),
            grouped[lower][0].params,
            grouped[upper][0].params,
        )
        for kind, lower, upper in pairs
    ]


def comparison_metrics(comparison: Comparison) -> dict[str, float]:
    """The comparison's headline numbers as flat MLflow metrics, named by model alias and axis key."""
    values: dict[str, float] = {}
    for model, interval in comparison.accuracy.items():
        values |= {
            f"{model}_accuracy_mean": interval.mean,
            f"{model}_accuracy_std": interval.std,
            f"{model}_accuracy_ci_low": interval.low,
            f"{model}_accuracy_ci_high": interval.high,
        }
    for model, test in comparison.pairs.items():
        values |= {
            f"{model}_lead_of_reference": test.difference.difference,
            f"{model}_lead_of_reference_ci_low": test.difference.low,
            f"{model}_lead_of_reference_ci_high": test.difference.high,
            f"{model}_mcnemar_p_max_over_seeds": test.p_value,
            f"{model}_mcnemar_p_holm": test.p_holm,
        }
    for result in comparison.axes:
        values |= {f"{model}_{result.axis.key}": result.means[model] for model in comparison.models}
    if comparison.ladder is not None:
        for step in comparison.ladder.steps:
            key = step.name.replace(" ", "_")
            values |= {
                f"ladder_{key}": step.gain.difference,
                f"ladder_{key}_ci_low": step.gain.low,
                f"ladder_{key}_ci_high": step.gain.high,
            }
        values |= {"ladder_sharing_minus_locality": comparison.ladder.contrast.difference}
    for beyond in comparison.beyond:
        values |= {
            beyond.key: beyond.gain.difference,
            f"{beyond.key}_ci_low": beyond.gain.low,
            f"{beyond.key}_ci_high": beyond.gain.high,
        }
    return {k: float(v) for k, v in values.items() if not math.isnan(float(v))}
