"""The report's probe section: each probe as a table, a figure and the textbook claims that held or not.

The numbers of a retraining probe come from its entry in core.probes.PROBES; its words (paragraph, table,
claim, figure) are its entry in WORDS here, under the same name, so a new probe is one entry in each.
Translation and noise are measured by the evaluate stage for every cell; they are the ROBUSTNESS entries.
Every claim compares the reference model with each other model (the activation probe's compares each model with
itself under other activations), from per-seed numbers with t-intervals over seeds; nothing is hard-coded and no
model is named here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from pipeline.artifacts import paths, records
from pipeline.artifacts.probe_record import ProbeResult, ProbeRow
from pipeline.artifacts.records import CellMetrics
from pipeline.core.models import Ladder
from pipeline.core.probes import PROBES, probe_fingerprint
from pipeline.core.stats import Interval, t_interval
from pipeline.errors import ConvbenchError
from pipeline.params import Params
from pipeline.reporting import figures as draw
from pipeline.reporting.comparison import Cast
from pipeline.reporting.inputs import ReportInputs
from pipeline.reporting.render import Block, Figure, Paragraph, Section, Table

TITLE = "Why does it win? Probes"


@dataclass(frozen=True)
class Claim:
    """One textbook claim (about the reference model, or one model) and whether this run's numbers support it."""

    claim: str
    held: str  # "held", "did not hold", "partly held" or "not tested"
    evidence: str


# --- loading ------------------------------------------------------------------------------------------------------------


def load_probes(params: Params, dataset_sha256: str) -> dict[str, pd.DataFrame]:
    """Every registered probe's rows that match the current params and data, in registry order.

    Probes in probes.run must exist and match (DVC ran them); others, run by hand with `convbench probe`,
    are shown when their fingerprint matches and silently left out when they are stale.
    """
    frames = {}
    for name in PROBES:
        result = _probe_result(params, name, dataset_sha256, required=name in params.probes.run)
        if result is not None:
            frames[name] = probe_rows(result)
    return frames


def _probe_result(params: Params, name: str, dataset_sha256: str, required: bool) -> ProbeResult | None:
    """results/<dataset>/probes/<name>.json when it exists and matches; a required one that does not stops the report."""
    path = paths.probe(params.data.name, name)
    if not path.is_file():
        if required:
            raise ConvbenchError(f"{path} is missing; run `convbench probe {name}` (or `dvc repro`)")
        return None
    result = records.load_json(ProbeResult, path, f"run `convbench probe {name}` again")
    if result.fingerprint != probe_fingerprint(params, name, dataset_sha256):
        if required:
            raise ConvbenchError(
                f"{path} was made with other params or data; run `convbench probe {name}` (or `dvc repro`)"
            )
        return None
    return result


def probe_rows(result: ProbeResult) -> pd.DataFrame:
    """A probe's rows as one table (setting, value, model, seed, params, test_accuracy, ...) for grouping."""
    return pd.DataFrame([row.model_dump() for row in result.rows], columns=list(ProbeRow.model_fields))


# --- numbers per setting --------------------------------------------------------------------------------------------


def _interval_text(interval: Interval, scale: float = 100.0) -> str:
    """A lead in points with its interval (none with one seed), as every probe table shows it."""
    if interval.n < 2:
        return f"{interval.mean * scale:+.2f}"
    return f"{interval.mean * scale:+.2f} [{interval.low * scale:+.2f}, {interval.high * scale:+.2f}]"


def _accuracy_text(interval: Interval) -> str:
    """An accuracy with its interval (none with one seed)."""
    if interval.n < 2:
        return f"{interval.mean:.4f}"
    return f"{interval.mean:.4f} [{interval.low:.4f}, {interval.high:.4f}]"


@dataclass(frozen=True)
class Setting:
    """One row of a probe's advantage table: each model's accuracy and size at one setting, and the reference's
    lead over each other model, paired by seed."""

    setting: str  # as the table shows it ("0.5", "permuted", ...)
    value: float  # what orders the settings
    accuracy: dict[str, Interval]  # by model
    params: dict[str, int]  # by model
    lead: dict[str, Interval]  # by other model


def advantage_by_setting(rows: pd.DataFrame, confidence: float, cast: Cast) -> list[Setting]:
    """Per setting (in the order the rows have them): every model's accuracy interval and parameter count, and the
    reference's lead over each other model, paired by seed."""
    out = []
    for (setting, value), frame in rows.groupby(["setting", "value"], sort=False):
        by_model = {m: frame[frame["model"] == m].set_index("seed")["test_accuracy"] for m in cast.models}
        lead = {}
        for model in cast.others:
            seeds = sorted(set(by_model[cast.reference].index) & set(by_model[model].index))
            lead[model] = t_interval([by_model[cast.reference][s] - by_model[model][s] for s in seeds], confidence)
        out.append(
            Setting(
                str(setting),
                float(value),
                {m: t_interval(by_model[m].to_numpy(), confidence) for m in cast.models},
                {m: int(frame.loc[frame["model"] == m, "params"].iloc[0]) for m in cast.models},
                lead,
            )
        )
    return out


def by_value(table: list[Setting]) -> list[Setting]:
    """The settings from the smallest value to the largest."""
    return sorted(table, key=lambda row: row.value)


def _advantage_table(table: list[Setting], setting_header: str, cast: Cast, with_params: bool = False) -> Table:
    """Each setting's accuracies and the reference's leads, as one table of the section."""
    frame = pd.DataFrame({setting_header: [row.setting for row in table]})
    if with_params:
        frame["Parameters (" + " / ".join(cast.labels[m] for m in cast.models) + ")"] = [
            " / ".join(f"{row.params[m]:,}" for m in cast.models) for row in table
        ]
    for model in cast.models:
        frame[f"{cast.labels[model]} accuracy"] = [_accuracy_text(row.accuracy[model]) for row in table]
    for model in cast.others:
        frame[f"{cast.labels[cast.reference]} − {cast.labels[model]} (points)"] = [
            _interval_text(row.lead[model]) for row in table
        ]
    return Table(frame, ("left",) + ("right",) * (len(frame.columns) - 1))


def robustness_table(
    metrics: Iterable[CellMetrics], kind: Literal["shift", "noise"], confidence: float, cast: Cast
) -> list[Setting]:
    """Accuracy per model at each shift or noise level, with the reference's lead paired by seed."""
    measured = sorted(
        (
            (float(level), level, cell, accuracy)
            for cell in metrics
            for level, accuracy in cell.robustness.levels(kind).items()
        ),
        key=lambda item: item[0],
    )
    rows = [
        {
            "setting": level,
            "value": value,
            "model": cell.model,
            "seed": cell.seed,
            "params": cell.params,
            "test_accuracy": accuracy,
        }
        for value, level, cell, accuracy in measured
    ]  # levels in order
    return advantage_by_setting(pd.DataFrame(rows), confidence, cast) if rows else []


def interval_points(table: list[Setting], cast: Cast) -> pd.DataFrame:
    """Long table (model label, level, mean, low, high) from an advantage table, for the interval figures."""
    rows = []
    for row in table:
        for model in cast.models:
            interval = row.accuracy[model]
            rows.append(
                {
                    "model": cast.labels[model],
                    "level": row.value,
                    "mean": interval.mean,
                    "low": interval.low,
                    "high": interval.high,
                }
            )
    return pd.DataFrame(rows)


# --- claims -----------------------------------------------------------------------------------------------------------


def drop_claim(table: list[Setting], claim: str, what: str, cast: Cast, other: str) -> Claim:
    """Compare the reference's and `other`'s accuracy drop from the first to the last level of a robustness table."""
    first, last = table[0], table[-1]
    drops = {m: first.accuracy[m].mean - last.accuracy[m].mean for m in (cast.reference, other)}
    before, after = first.lead[other], last.lead[other]
    change = after.mean - before.mean
    better = drops[cast.reference] < drops[other]
    held = "held" if better and after.low > before.mean else ("partly held" if better else "did not hold")
    ref, oth = cast.the(cast.reference), cast.the(other)
    evidence = (
        f"at {what} {last.setting} {ref} loses {drops[cast.reference] * 100:.1f} points and {oth} "
        f"{drops[other] * 100:.1f}; {ref}'s lead moves by {change * 100:+.1f} points"
    )
    return Claim(f"{claim} than {oth}", held, evidence)


def permutation_claim(table: list[Setting], cast: Cast, other: str) -> Claim:
    """Does shuffling the pixels (which a fully-connected model cannot notice) take away the reference's lead?"""
    original = next(row for row in table if row.setting == "original").lead[other]
    permuted = next(row for row in table if row.setting == "permuted").lead[other]
    owed = original.mean - permuted.mean
    share = owed / original.mean if original.mean > 0 else float("nan")
    if original.mean <= 0:
        held = "not tested"
    elif permuted.mean <= 0 or (permuted.n > 1 and permuted.low <= 0):
        held = "held"
    elif owed > 0:
        held = "partly held"
    else:
        held = "did not hold"
    ref, oth = cast.name(cast.reference), cast.name(other)
    evidence = (
        f"{ref} − {oth} is {_interval_text(original)} points on the original images and "
        f"{_interval_text(permuted)} on permuted ones: {owed * 100:+.2f} points"
        + (f" ({share:.0%} of the lead)" if np.isfinite(share) else "")
        + " are owed to spatial structure"
    )
    return Claim(
        f"{cast.the(cast.reference, start=True)}'s lead over {cast.the(other)} comes from spatial structure (pixel "
        f"permutation control)",
        held,
        evidence,
    )


def fraction_claim(table: list[Setting], cast: Cast, other: str) -> Claim:
    """Is the reference's lead larger with less data, i.e. does it shrink as the training share grows?"""
    ordered = by_value(table)
    small, full = ordered[0], ordered[-1]
    before, after = small.lead[other].mean, full.lead[other].mean
    held = "held" if before > after else "did not hold"
    moves = "shrinks" if after < before else ("grows" if after > before else "stays the same")
    evidence = (
        f"{cast.name(cast.reference)} − {cast.name(other)} {moves} from {_interval_text(small.lead[other])} points "
        f"at share {small.setting} of the training set to {_interval_text(full.lead[other])} at share {full.setting}"
    )
    return Claim(
        f"{cast.the(cast.reference, start=True)} is more data-efficient than {cast.the(other)}", held, evidence
    )


def size_claim(table: list[Setting], cast: Cast, other: str) -> Claim:
    """At every scale, does the reference win?"""
    leads = [row.lead[other] for row in table]
    wins = sum(1 for interval in leads if interval.mean > 0)
    significant = sum(1 for interval in leads if interval.n > 1 and interval.low > 0)
    held = "held" if wins == len(table) else ("partly held" if wins else "did not hold")
    ref = cast.the(cast.reference)
    counts = [row.params[cast.reference] for row in table]
    evidence = (
        f"{ref} is ahead at {wins} of {len(table)} sizes ({significant} with an interval above zero), "
        f"from {min(counts):,} to {max(counts):,} parameters"
    )
    return Claim(f"At every size {ref} beats {cast.the(other)}", held, evidence)


def augment_claim(table: list[Setting], cast: Cast, other: str) -> Claim:
    """Does training on translated images close `other`'s gap to the reference (both augmented alike)?

    The augmented setting compared is the one where the gap is smallest (the most favourable to the claim), so
    "did not hold" means no strength tried closed it. Held: that gap is at most zero, or its interval reaches
    zero and it is at most half the unaugmented gap; partly held: it shrank; did not hold: it did not.
    """
    ordered = by_value(table)
    base = ordered[0]
    best = min(ordered[1:], key=lambda row: row.lead[other].mean)
    before, after = base.lead[other], best.lead[other]
    if before.mean <= 0:
        held = "not tested"
    elif after.mean <= 0 or (after.n > 1 and after.low <= 0 and after.mean <= before.mean / 2):
        held = "held"
    else:
        held = "partly held" if after.mean < before.mean else "did not hold"
    ref, oth = cast.the(cast.reference), cast.the(other)
    closed = (before.mean - after.mean) / before.mean if before.mean > 0 else float("nan")
    evidence = (
        f"{cast.name(cast.reference)} − {cast.name(other)} is {_interval_text(before)} points without augmentation "
        f"and {_interval_text(after)} with shifts {best.setting} (the smallest gap of the strengths tried)"
        + (f", {closed:.0%} of it closed" if np.isfinite(closed) else "")
        + f"; {oth} trained so reaches {best.accuracy[other].mean:.4f}, {ref} unaugmented "
        f"{base.accuracy[cast.reference].mean:.4f}"
    )
    return Claim(f"Augmentation closes {oth}'s gap to {ref}", held, evidence)


@dataclass(frozen=True)
class ProbeView:
    """What a probe's extra blocks read besides its rows: the cast, the ladder, where figures go, tuning."""

    confidence: float
    cast: Cast
    rungs: Ladder | None = None
    figures_dir: Path | None = None  # None: no extra figures (a section built without a report)
    tuned: bool = False  # tuning is on; probes still train every setting with the shared recipe


def augment_blocks(rows: pd.DataFrame, view: ProbeView) -> list[Block]:
    """The ladder split at each augmentation strength, and the translation robustness it buys."""
    out: list[Block] = []
    if view.tuned:
        out.append(
            Paragraph(
                "Tuning is on, and it searched on unaugmented images only: every strength here trains with the "
                "shared `train` recipe, the same for every model, so setting none is not the tuned comparison."
            )
        )
    cast, rungs = view.cast, view.rungs
    if rungs is not None and {rungs.dense, rungs.local, rungs.shared} <= set(cast.models):
        out += augment_ladder(rows, rungs, view)
    out += augment_robustness(rows, view)
    return out


def augment_ladder(rows: pd.DataFrame, rungs: Ladder, view: ProbeView) -> list[Block]:
    """Locality and weight sharing's gains at each strength, paired by seed, and what augmentation did to them."""
    labels = view.cast.labels
    steps = (("Locality", rungs.local, rungs.dense), ("Weight sharing", rungs.shared, rungs.local))
    split: list[dict[str, Any]] = []
    for (setting, value), frame in rows.groupby(["setting", "value"], sort=False):
        accuracy = {m: frame[frame["model"] == m].set_index("seed")["test_accuracy"] for m in labels}
        gains = {}
        for name, upper, lower in steps:
            seeds = sorted(set(accuracy[upper].index) & set(accuracy[lower].index))
            gains[name] = t_interval([accuracy[upper][s] - accuracy[lower][s] for s in seeds], view.confidence)
        split.append({"setting": setting, "value": value, **gains})
    split.sort(key=lambda row: float(row["value"]))
    frame = pd.DataFrame({"Largest training shift": [row["setting"] for row in split]})
    for name, upper, lower in steps:
        frame[f"{name}: {labels[upper]} − {labels[lower]} (points)"] = [_interval_text(row[name]) for row in split]
    first, last = split[0], split[-1]

    def said(row: dict[str, Any]) -> str:
        return " and ".join(f"{name.lower()} {row[name].mean * 100:+.2f} points" for name, _, _ in steps)

    return [
        Paragraph(
            f"**The ladder under augmentation.** Each step's gain at each strength, paired by seed. Without "
            f"augmentation {said(first)}; with shifts {last['setting']}, {said(last)}."
        ),
        Table(frame, ("left", "right", "right")),
    ]


def augment_robustness(rows: pd.DataFrame, view: ProbeView) -> list[Block]:
    """Each model's test accuracy under translation, trained without and with the strongest augmentation."""
    measured = rows[rows["shifted"].map(bool)]
    if measured.empty:
        return []
    values = sorted(measured["value"].unique())
    points = []
    for value in (values[0], values[-1]):
        at = measured[measured["value"] == value]
        trained = "unaugmented" if value == values[0] else f"with shifts {at['setting'].iloc[0]}"
        for model in view.cast.models:
            by_shift = pd.DataFrame(list(at[at["model"] == model]["shifted"]))
            for level in sorted(by_shift.columns, key=float):
                interval = t_interval(by_shift[level].to_numpy(), view.confidence)
                points.append(
                    {
                        "model": view.cast.labels[model],
                        "trained": trained,
                        "level": float(level),
                        "mean": interval.mean,
                        "low": interval.low,
                        "high": interval.high,
                        "text": _accuracy_text(interval),
                    }
                )
    frame = pd.DataFrame(points)
    levels = list(dict.fromkeys(frame["level"]))
    shown = frame.pivot_table(index=["model", "trained"], columns="level", values="text", aggfunc="first", sort=False)
    table = pd.DataFrame({"Model": [m for m, _ in shown.index], "Trained": [t for _, t in shown.index]})
    for level in levels:
        table[f"test shift {level:g}"] = list(shown[level])
    blocks: list[Block] = [
        Paragraph(
            "**Translation robustness after augmentation.** Test accuracy with the test images moved by k pixels "
            "(the evaluate stage's probe, averaged over directions), for each model trained without and with the "
            "strongest augmentation."
        ),
        Table(table, ("left", "left") + ("right",) * len(levels)),
    ]
    if view.figures_dir is not None:
        path = draw.augmented_robustness(frame.drop(columns="text"), view.figures_dir / "augment_robustness.png")
        blocks.append(
            Figure(path, "Accuracy under test-time shifts, trained unaugmented (dashed) and augmented (solid).")
        )
    return blocks


# --- the activation probe: each model against itself, one activation against another -------------------------------------

RELU_FAMILY = ("relu", "leaky_relu", "gelu", "silu", "elu")  # rectifier-like: the identity for large positive inputs


@dataclass(frozen=True)
class Trained:
    """One model trained with one activation: its final training loss and test accuracy, per seed and as intervals."""

    model: str
    activation: str
    losses: dict[int, float]  # final training loss by seed
    accuracies: dict[int, float]  # test accuracy by seed
    loss: Interval
    accuracy: Interval

    @property
    def relu_family(self) -> bool:
        """Whether its activation is one of RELU_FAMILY."""
        return self.activation in RELU_FAMILY


@dataclass(frozen=True)
class Told:
    """A probe's own part of the section (in place of the reference's advantage table): its blocks and its claims."""

    blocks: list[Block]
    claims: list[Claim]


def trained_by_activation(rows: pd.DataFrame, confidence: float, models: list[str]) -> list[Trained]:
    """Every (model, activation) of the activation probe's rows: `models` in their order (those the rows hold), each
    with its activations in the order the probe ran them."""
    out = []
    for model in models:
        mine = rows[rows["model"] == model].sort_values("value", kind="stable")
        for activation, frame in mine.groupby("setting", sort=False):
            losses = {int(k): float(v) for k, v in zip(frame["seed"], frame["final_train_loss"])}
            accuracies = {int(k): float(v) for k, v in zip(frame["seed"], frame["test_accuracy"])}
            out.append(
                Trained(
                    model,
                    str(activation),
                    losses,
                    accuracies,
                    t_interval(list(losses.values()), confidence),
                    t_interval(list(accuracies.values()), confidence),
                )
            )
    return out


def _loss_text(interval: Interval, signed: bool = False) -> str:
    """A training loss (or a difference of two, signed) with its interval (none with one seed)."""
    shown = "{:+.4f}" if signed else "{:.4f}"
    if interval.n < 2:
        return shown.format(interval.mean)
    return f"{shown.format(interval.mean)} [{shown.format(interval.low)}, {shown.format(interval.high)}]"


def activation_claim(trained: list[Trained], model: str, confidence: float, cast: Cast) -> Claim:
    """Does the best ReLU-family activation end training at a lower loss than the best other activation?

    Each group's best is the activation with the lowest mean final training loss; the two are compared paired by
    seed. Held: the family's loss is lower and the interval of the per-seed difference excludes zero; partly held:
    lower, but the interval reaches zero (or one seed gives none); did not hold: not lower; not tested: every
    activation tried falls in one group.
    """
    mine = [t for t in trained if t.model == model]
    family, others = [t for t in mine if t.relu_family], [t for t in mine if not t.relu_family]
    claim = f"ReLU-family activations train {cast.the(model)} best"
    if not family or not others:
        tried = ", ".join(t.activation for t in mine)
        group = "ReLU-family" if family else "non-ReLU-family"
        return Claim(claim, "not tested", f"only {group} activations were tried ({tried})")
    best, rival = min(family, key=lambda t: t.loss.mean), min(others, key=lambda t: t.loss.mean)
    seeds = sorted(set(best.losses) & set(rival.losses))
    gap = t_interval([rival.losses[s] - best.losses[s] for s in seeds], confidence)
    lead = t_interval([best.accuracies[s] - rival.accuracies[s] for s in seeds], confidence)
    if gap.n > 1 and gap.low > 0:
        held = "held"
    else:
        held = "partly held" if gap.mean > 0 else "did not hold"
    evidence = (
        f"final training loss {_loss_text(best.loss)} with {best.activation} (the family's lowest) against "
        f"{_loss_text(rival.loss)} with {rival.activation} (the lowest of the others): {rival.activation} − "
        f"{best.activation} = {_loss_text(gap, signed=True)}, paired by seed; test accuracy "
        f"{_accuracy_text(best.accuracy)} with {best.activation} and {_accuracy_text(rival.accuracy)} with "
        f"{rival.activation} ({best.activation} − {rival.activation} {_interval_text(lead)} points)"
    )
    return Claim(claim, held, evidence)


def activation_part(rows: pd.DataFrame, view: ProbeView) -> Told:
    """Each retrained model's final training loss and test accuracy per activation (table and figure), and the claim
    that ReLU-family activations train it best."""
    cast = view.cast
    trained = trained_by_activation(rows, view.confidence, cast.models)
    retrained = list(dict.fromkeys(t.model for t in trained))
    blocks: list[Block] = []
    left_out = [m for m in cast.models if m not in retrained]
    if left_out:
        blocks.append(
            Paragraph(f"Not retrained, as their settings name no activation: {', '.join(map(cast.name, left_out))}.")
        )
    best = {m: min((t for t in trained if t.model == m), key=lambda t: t.loss.mean).activation for m in retrained}
    table = pd.DataFrame(
        {
            "Model": [cast.labels[t.model] for t in trained],
            "Activation": [t.activation for t in trained],
            "ReLU family": ["yes" if t.relu_family else "no" for t in trained],
            "Final training loss": [
                f"**{_loss_text(t.loss)}**" if best[t.model] == t.activation else _loss_text(t.loss) for t in trained
            ],
            "Test accuracy": [_accuracy_text(t.accuracy) for t in trained],
        }
    )
    blocks.append(Table(table, ("left", "left", "left", "right", "right")))
    if view.figures_dir is not None:
        points = pd.DataFrame(
            [
                {
                    "model": cast.labels[t.model],
                    "activation": t.activation,
                    "relu_family": t.relu_family,
                    "measure": measure,
                    "mean": interval.mean,
                    "low": interval.low,
                    "high": interval.high,
                }
                for t in trained
                for measure, interval in (("loss", t.loss), ("accuracy", t.accuracy))
            ]
        )
        path = draw.activations(points, [cast.labels[m] for m in cast.models], view.figures_dir / "activation.png")
        blocks.append(
            Figure(
                path,
                "Final training loss and test accuracy per activation (mean over seeds, CI bars; shaded: the ReLU "
                "family).",
            )
        )
    return Told(blocks, [activation_claim(trained, m, view.confidence, cast) for m in retrained])


# --- the registries -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeFigure:
    """A probe's figure: its file, its caption, and how it draws interval points (model, level, mean, low, high)."""

    file: str
    caption: str
    draw: Callable[[pd.DataFrame, Path], Path]


@dataclass(frozen=True)
class ProbeWords:
    """How the report tells one probe of core.probes.PROBES: a paragraph, the table's setting column, a claim."""

    paragraph: str
    setting_header: str
    claim: Callable[[list[Setting], Cast, str], Claim] | None = None  # (advantage table, cast, other model)
    ordered: bool = False  # settings sorted by value (else in the order the probe ran them)
    with_params: bool = False  # the table shows each model's parameter count at each setting
    sizes: bool = False  # the settings change model sizes: its points join the accuracy-vs-cost figure
    figure: ProbeFigure | None = None
    extra: Callable[[pd.DataFrame, ProbeView], list[Block]] | None = None  # (rows, view): blocks after the table
    # (rows, view): the probe's own blocks and claims in place of the advantage table, its claim and figure (a probe
    # that compares each model with itself, whose rows need not hold every model)
    own: Callable[[pd.DataFrame, ProbeView], Told] | None = None


WORDS: dict[str, ProbeWords] = {
    "permutation": ProbeWords(
        "**Pixel permutation.** Every model retrained on images whose pixels are shuffled by one fixed permutation. "
        "A fully-connected model cannot tell; a convolution loses its locality.",
        "Images",
        permutation_claim,
    ),
    "fraction": ProbeWords(
        "**Data efficiency.** Every model retrained on a stratified share of the training split.",
        "Training share",
        fraction_claim,
        ordered=True,
        figure=ProbeFigure("data_efficiency.png", "Accuracy against the share of training data.", draw.fraction_curve),
    ),
    "size": ProbeWords(
        "**Size sweep.** Every built-in model's channels and widths scaled; size-matched models matched again at "
        "each scale.",
        "Scale",
        size_claim,
        ordered=True,
        with_params=True,
        sizes=True,
    ),
    "augment": ProbeWords(
        "**Augmentation.** Every model retrained with each training image moved by its own random offset of up to "
        "k pixels along each axis (zero fill), drawn anew every batch; validation and test images are never "
        "augmented. Can data teach what the architecture builds in? Lin, Memisevic and Konda (2015) lifted a "
        "fully-connected net on CIFAR-10 from about 70% to 78% with deformations; Pogodin et al. (2021) found that "
        "translations help locally connected networks but do not remove their gap to convolutions. A gap counts as "
        "closed when, at the strength where it is smallest, it is at most zero, or its interval reaches zero and it "
        "is at most half the unaugmented gap.",
        "Largest training shift (pixels)",
        augment_claim,
        ordered=True,
        figure=ProbeFigure("augment.png", "Accuracy against the augmentation's largest shift.", draw.augment_curve),
        extra=augment_blocks,
    ),
    "activation": ProbeWords(
        "**Activation.** Every model whose settings name an activation retrained with each of "
        "`probes.activations`, everything else unchanged; the report's claim is that ReLU-family activations "
        f"({', '.join(RELU_FAMILY)}) train best. Each model is compared with itself: its lowest final training loss "
        "(the last epoch's mean) with a ReLU-family activation against its lowest with any other, paired by seed; "
        "held when the family's loss is lower and the interval of the difference excludes zero, partly held when it "
        "is lower but the interval reaches zero. In each model's rows its lowest loss is in bold. For reference, the "
        "MNIST-1D activation notebook (greydanus/mnist1d: an MLP with 128 hidden units, 301 steps) ranks the mean "
        "training loss relu 1.337, swish 1.368, elu 1.474, tanh 1.524, softplus 1.647, sigmoid 1.753.",
        "Activation",
        own=activation_part,
    ),
}


def words(name: str) -> ProbeWords:
    """A probe's words: every probe registered in core.probes has its entry in WORDS (a test holds them equal)."""
    return WORDS[name]


@dataclass(frozen=True)
class Measured:
    """A robustness probe the evaluate stage measures on every cell: its paragraph, table column and claim."""

    kind: Literal["shift", "noise"]
    paragraph: str
    setting_header: str
    claim: str  # completes "The <reference> is ..."
    what: str  # how the evidence names a level


ROBUSTNESS = (
    Measured(
        "shift",
        "**Translation.** Test images moved by k pixels (zero fill), averaged over directions.",
        "Shift (pixels)",
        "more robust to translation",
        "shift",
    ),
    Measured(
        "noise",
        "**Noise.** Additive Gaussian noise, std in units of the pixel range.",
        "Noise std",
        "more robust to pixel noise",
        "noise std",
    ),
)
ROBUSTNESS_FIGURE = "robustness"


# --- the section ----------------------------------------------------------------------------------------------------------


def advantage(rows: pd.DataFrame, name: str, confidence: float, cast: Cast) -> list[Setting]:
    """A probe's advantage table, in the order its words ask for."""
    table = advantage_by_setting(rows, confidence, cast)
    return by_value(table) if words(name).ordered else table


def probe_figures(
    metrics: Iterable[CellMetrics], probes: dict[str, pd.DataFrame], confidence: float, cast: Cast, figures_dir: Path
) -> dict[str, Path]:
    """The robustness figure (when shift and noise were both measured) and each probe's own figure, by name."""
    metrics = list(metrics)
    out = {}
    shifts, noise = (robustness_table(metrics, kind, confidence, cast) for kind in ("shift", "noise"))
    if len(shifts) and len(noise):
        out[ROBUSTNESS_FIGURE] = draw.robustness(
            interval_points(shifts, cast), interval_points(noise, cast), figures_dir / "robustness.png"
        )
    for name, rows in probes.items():
        figure = words(name).figure
        if figure is not None:
            points = interval_points(advantage(rows, name, confidence, cast), cast)
            out[name] = figure.draw(points, figures_dir / figure.file)
    return out


def probe_section(
    metrics: Iterable[CellMetrics],
    probes: dict[str, pd.DataFrame],
    confidence: float,
    figures: dict[str, Path],
    cast: Cast,
    view: ProbeView | None = None,
) -> Section:
    """The report section with every probe that ran, and the claims it tested."""
    view = view or ProbeView(confidence, cast)
    metrics = list(metrics)
    ref = cast.the(cast.reference, start=True)
    blocks: list[Block] = [
        Paragraph(
            f"Textbooks say CNNs win on images because of local filters, weight sharing and translation "
            f"equivariance. These probes test what {cast.the(cast.reference)} (the reference) has over each other "
            f"model on this dataset. "
            f"Intervals are {confidence:.0%} t-intervals over seeds; each lead is paired by seed."
        )
    ]
    claims: list[Claim] = []
    for measured in ROBUSTNESS:
        table = robustness_table(metrics, measured.kind, confidence, cast)
        if len(table) > 1:
            claims += [drop_claim(table, f"{ref} is {measured.claim}", measured.what, cast, m) for m in cast.others]
            blocks += [Paragraph(measured.paragraph), _advantage_table(table, measured.setting_header, cast)]
    if ROBUSTNESS_FIGURE in figures:
        blocks.append(
            Figure(figures[ROBUSTNESS_FIGURE], "Accuracy under translation and noise (mean over seeds, CI bars).")
        )
    for name, rows in probes.items():
        said = words(name)
        if said.own is not None:
            told = said.own(rows, view)
            claims += told.claims
            blocks += [Paragraph(said.paragraph), *told.blocks]
            continue
        table = advantage(rows, name, confidence, cast)
        if said.claim is not None:
            claims += [said.claim(table, cast, m) for m in cast.others]
        blocks += [Paragraph(said.paragraph), _advantage_table(table, said.setting_header, cast, said.with_params)]
        if said.figure is not None and name in figures:
            blocks.append(Figure(figures[name], said.figure.caption))
        if said.extra is not None:
            blocks += said.extra(rows, view)
    if claims:
        summary = pd.DataFrame(
            {
                "Claim": [c.claim for c in claims],
                "Verdict here": [f"**{c.held}**" for c in claims],
                "Evidence": [c.evidence for c in claims],
            }
        )
        blocks.insert(1, Table(summary, ("left", "left", "left")))
    return Section(TITLE, blocks)


def blocks(inputs: ReportInputs) -> list[Block]:
    """The probe section of the report: its figures drawn under the report's figures folder, then its blocks."""
    drawn = probe_figures(inputs.metrics, inputs.probes, inputs.confidence, inputs.cast, inputs.figures_dir)
    ladder = inputs.comparison.ladder
    view = ProbeView(
        inputs.confidence,
        inputs.cast,
        ladder.rungs if ladder is not None else None,
        inputs.figures_dir,
        tuned=inputs.tuned is not None,
    )
    return probe_section(inputs.metrics, inputs.probes, inputs.confidence, drawn, inputs.cast, view).blocks


def sized_points(inputs: ReportInputs) -> list[dict[str, object]]:
    """Accuracy and parameter count of every model at every setting of the probes that change model sizes."""
    points: list[dict[str, object]] = []
    for name, rows in inputs.probes.items():
        if words(name).sizes:
            table = advantage(rows, name, inputs.confidence, inputs.cast)
            points += [
                {
                    "model": inputs.labels[m],
                    "params": row.params[m],
                    "flops": np.nan,
                    "accuracy": row.accuracy[m].mean,
                    "ci_low": row.accuracy[m].low,
                    "ci_high": row.accuracy[m].high,
                }
                for row in table
                for m in inputs.comparison.models
            ]
    return points


def varies_size(probes: dict[str, pd.DataFrame]) -> bool:
    """Whether any probe that ran changes the models' sizes."""
    return any(words(name).sizes for name in probes)
