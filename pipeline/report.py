"""Report stage: every model over seeds, compared with the reference, as Markdown, HTML, figures and an MLflow run.

Any list of models flows through: the accuracy table, the paired tests against the reference (Holm-
corrected), the cost table, the figures, the probes, the ladder (what locality and weight sharing each
buy, when an MLP, an LCN and a CNN of one geometry are all present) and the generated verdict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from pipeline import atomic, models, paths, recipes, tracking, tune_report
from pipeline import checkpoint as checkpoints
from pipeline.data import load_prepared
from pipeline.errors import ConvbenchError
from pipeline.models import Ladder, ModelConfig
from pipeline.params import Params, ReportParams
from pipeline.probe_report import Cast, advantage_by_setting, interval_points, load_probes, probe_section, robustness_table
from pipeline.render import Code, Document, Figure, Paragraph, Section, Table, to_html, to_markdown
from pipeline.runtime import normalize
from pipeline.stats import (
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


@dataclass(frozen=True)
class ReportResult:
    """Files the report stage wrote and the comparison behind them."""

    markdown: Path
    figures: list[Path]
    comparison: Comparison


def _cell_files(models: list[str], seeds: list[int], where: Callable[[str, int], Path], stage: str) -> list[tuple[str, int, Path]]:
    """Every expected per-cell file; a missing one names the command that makes it."""
    cells = [(model, seed, where(model, seed)) for model in models for seed in seeds]
    for model, seed, path in cells:
        if not path.is_file():
            raise ConvbenchError(f"{path} is missing; run `convbench {stage} --model {model} --seed {seed}` first")
    return cells


METRICS_KEYS = ("model", "seed", "dataset", "test_accuracy")  # what every metrics file of `convbench evaluate` has


def _read_metrics(path: Path, model: str, seed: int) -> dict:
    """One cell's metrics JSON, or a one-line error naming the file and the command that writes it again."""
    redo = f"run `convbench evaluate --model {model} --seed {seed}` to write it again"
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConvbenchError(f"{path} is not UTF-8 text; {redo}") from None
    except json.JSONDecodeError as exc:
        raise ConvbenchError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); {redo}") from None
    if not isinstance(content, dict):
        raise ConvbenchError(f"{path} holds a JSON {type(content).__name__}, not the evaluate stage's object; {redo}")
    missing = [key for key in METRICS_KEYS if key not in content]
    if missing:
        raise ConvbenchError(f"{path} lacks {', '.join(repr(k) for k in missing)}, so `convbench evaluate` did not "
                             f"write it; {redo}")
    return content


def load_metrics(models: list[str], seeds: list[int], dataset: str) -> pd.DataFrame:
    """One row per (model, seed) from metrics/<model>-s<seed>.json, nested figures as 'a.b.c' columns."""
    rows = []
    for model in models:
        for seed in seeds:  # each file is checked as it is read, so the first bad one is the one named
            (cell,) = _cell_files([model], [seed], paths.metrics, "evaluate")
            rows.append(_read_metrics(cell[2], model, seed))
    stale = [f"{row['model']}-s{row['seed']} ({row['dataset']})" for row in rows if row["dataset"] != dataset]
    if stale:
        raise ConvbenchError(
            f"metrics of {', '.join(stale)} are not for data.name '{dataset}'; run `dvc repro` (or train and evaluate)"
        )
    nested = {"confusion_matrix", "per_class_accuracy", "units", "context"}
    flat = pd.json_normalize([{k: v for k, v in row.items() if k not in nested} for row in rows], sep=".")
    for key in ("confusion_matrix", "per_class_accuracy", "context"):
        flat[key] = [row.get(key) for row in rows]
    return flat


def load_curves(models: list[str], seeds: list[int]) -> pd.DataFrame:
    """Per-epoch curves of every cell, with model and seed columns."""
    cells = _cell_files(models, seeds, paths.curves, "train")
    return pd.concat([pd.read_csv(path).assign(model=m, seed=s) for m, s, path in cells], ignore_index=True)


def load_correctness(models: list[str], seeds: list[int]) -> dict[str, np.ndarray]:
    """Per model, a (seeds, test images) boolean array of which test images each seed got right."""
    frames = {(m, s): pd.read_csv(path) for m, s, path in _cell_files(models, seeds, paths.predictions, "evaluate")}
    reference = frames[(models[0], seeds[0])]
    for (model, seed), frame in frames.items():
        if len(frame) != len(reference) or not frame["label"].equals(reference["label"]):
            raise ConvbenchError(
                f"{paths.predictions(model, seed)} scores other test images than {paths.predictions(models[0], seeds[0])}; "
                f"run `dvc repro` so every cell is evaluated on the same split"
            )
    return {m: np.stack([(frames[(m, s)]["label"] == frames[(m, s)]["prediction"]).to_numpy() for s in seeds])
            for m in models}


@dataclass(frozen=True)
class Axis:
    """One row of the cost table: a stable key (MLflow metric names), a heading, a metrics column, a direction."""

    key: str
    label: str
    column: str
    unit: str
    higher_is_better: bool
    exact: bool = False  # deterministic counts: no test, a tie when within 1%
    digits: int = 0


AXES = (
    Axis("parameters", "Parameters", "params", "", higher_is_better=False, exact=True),
    Axis("forward_flops_image", "Forward FLOPs / image", "flops_forward_per_image", "MFLOP", False, exact=True, digits=2),
    Axis("training_step_flops_image", "Training-step FLOPs / image", "flops_train_step_per_image", "MFLOP", False,
         exact=True, digits=2),
    Axis("time_to_final_accuracy", "Time to final accuracy", "seconds_to_final_accuracy", "s", False, digits=1),
    Axis("peak_memory_training_step", "Peak memory, training step", "peak_memory_mb.train_step", "MiB", False, digits=1),
    Axis("peak_memory_inference", "Peak memory, inference", "peak_memory_mb.inference", "MiB", False, digits=1),
)
SCALE = {"MFLOP": 1e-6, "%": 100.0}


@dataclass(frozen=True)
class SpeedCase:
    """One case of the bench stage (all models timed side by side, round by round) as the report uses it."""

    key: str
    label: str
    unit: str  # "img/s" or "ms"
    values: dict[str, float]  # per model: median images/s (or ms per call for latency)
    spread: dict[str, float]  # per model: relative interquartile range over rounds
    samples: dict[str, list[float]]  # per model: images/s in each round (paired by round across models)
    noisy: bool

    def ratio(self, faster: str, slower: str, confidence: float, seed: int) -> tuple[float, float, float]:
        """How many times `faster`'s speed `slower`'s is: median of per-round ratios, with a bootstrap interval."""
        return median_interval([a / b for a, b in zip(self.samples[faster], self.samples[slower])], confidence, seed)


def speed_cases(bench: dict) -> list[SpeedCase]:
    """Inference at each batch size, batch-1 latency and the training step, from metrics/bench.json."""
    cases = []
    for key, case in bench["cases"].items():
        values = {m: f["images_per_second"] for m, f in case["models"].items()}
        spread = {m: f["relative_iqr"] for m, f in case["models"].items()}
        samples = {m: f["samples"] for m, f in case["models"].items()}
        size = key.rsplit("_", 1)[-1]
        label = f"Inference @ batch {size}" if key.startswith("inference") else f"Training step @ batch {size}"
        cases.append(SpeedCase(key, label, "img/s", values, spread, samples, case["noisy"]))
        if key == "inference_batch_1":
            latency = {m: f["ms_per_call"] for m, f in case["models"].items()}
            cases.append(SpeedCase("latency_batch_1", "Latency @ batch 1", "ms", latency, spread, samples, case["noisy"]))
    return cases


def load_bench(models: list[str], dataset: str) -> dict:
    """metrics/bench.json, refused when it timed other models or another dataset."""
    path = paths.bench()
    if not path.is_file():
        raise ConvbenchError(f"{path} is missing; run `convbench bench` (or `dvc repro`)")
    try:
        bench = json.loads(path.read_text())
        timed, where = bench["models"], bench["dataset"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConvbenchError(f"{path} is not a bench result ({type(exc).__name__}); run `convbench bench` again") from None
    if sorted(timed) != sorted(models) or where != dataset:
        raise ConvbenchError(f"{path} timed {timed} on '{where}', not {models} on '{dataset}'; run `convbench bench`")
    return bench


@dataclass(frozen=True)
class PairTest:
    """The reference against one other model on the same test images."""

    model: str
    difference: PairedDifference  # accuracy of the reference minus the model's
    per_seed: list[McNemar]
    p_value: float  # the largest per-seed McNemar p: significant only if every seed is (intersection-union test)
    p_holm: float  # adjusted across all the pairs of the report


@dataclass(frozen=True)
class Comparison:
    """Everything the report states, computed once from the metrics and predictions."""

    models: list[str]
    labels: dict[str, str]
    reference: str
    accuracy: dict[str, Interval]
    pairs: dict[str, PairTest]
    axes: pd.DataFrame  # one row per axis: key, label, unit, digits, exact, higher_is_better, <model>, <model>_spread, ...
    confidence: float
    speed: list[SpeedCase] = field(default_factory=list)
    seed: int = 0

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


def compare(metrics: pd.DataFrame, correctness: dict[str, np.ndarray], settings: ReportParams, models: list[str],
            reference: str, labels: dict[str, str], speed: list[SpeedCase] | None = None) -> Comparison:
    """Intervals over seeds, the paired tests of the reference against every other model, the best model per axis."""
    accuracy = {m: t_interval(metrics.loc[metrics["model"] == m, "test_accuracy"].to_numpy(), settings.confidence)
                for m in models}
    others = [m for m in models if m != reference]
    raw = {}
    for model in others:
        per_seed = [mcnemar(ref_seed, other_seed) for ref_seed, other_seed in zip(correctness[reference], correctness[model])]
        difference = paired_bootstrap(correctness[reference], correctness[model], settings.confidence,
                                      settings.bootstrap_resamples, settings.bootstrap_seed)
        raw[model] = (difference, per_seed, max(test.p_value for test in per_seed))
    adjusted = holm([raw[m][2] for m in others]) if others else []
    pairs = {m: PairTest(m, raw[m][0], raw[m][1], raw[m][2], p) for m, p in zip(others, adjusted)}
    rows = [_axis_row(axis, metrics, models, 1 - settings.confidence) for axis in AXES]
    return Comparison(models, labels, reference, accuracy, pairs, pd.DataFrame(rows), settings.confidence, speed or [],
                      settings.bootstrap_seed)


def _axis_row(axis: Axis, metrics: pd.DataFrame, models: list[str], alpha: float) -> dict[str, object]:
    values = {m: metrics.loc[metrics["model"] == m, axis.column].astype(float).to_numpy() for m in models}
    means = {m: float(v.mean()) for m, v in values.items()}
    ranked = sorted(models, key=lambda m: means[m], reverse=axis.higher_is_better)
    best = ranked[0]
    row: dict[str, object] = {"key": axis.key, "label": axis.label, "unit": axis.unit, "digits": axis.digits,
                              "exact": axis.exact, "higher_is_better": axis.higher_is_better, "best": best}
    for model in models:
        row[model] = means[model]
        row[f"{model}_spread"] = float(values[model].std(ddof=1)) if len(values[model]) > 1 else 0.0
    if len(ranked) == 1:
        return row | {"runner_up": best, "ratio": 1.0, "p_value": math.nan, "winner": "tie"}
    runner_up = ranked[1]
    high, low = max(means[best], means[runner_up]), min(means[best], means[runner_up])
    ratio = high / low if low > 0 else math.inf
    if axis.exact:
        p_value, winner = math.nan, ("tie" if ratio <= 1.01 else best)
    else:
        p_value = welch_p_value(values[best], values[runner_up])
        winner = best if p_value < alpha else "not significant"
    return row | {"runner_up": runner_up, "ratio": ratio, "p_value": p_value, "winner": winner}


def _number(value: float, unit: str, digits: int) -> str:
    return f"{value * SCALE.get(unit, 1.0):,.{digits}f}"


def accuracy_frame(comparison: Comparison, metrics: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy per model: mean, std and t-interval over seeds, and its parameter count."""
    level = f"{comparison.confidence:.0%}"
    intervals = [comparison.accuracy[m] for m in comparison.models]
    return pd.DataFrame(
        {
            "Model": [comparison.labels[m] for m in comparison.models],
            "Parameters": [f"{int(metrics.loc[metrics['model'] == m, 'params'].iloc[0]):,}" for m in comparison.models],
            "Test accuracy (mean ± std)": [f"{i.mean:.4f} ± {i.std:.4f}" for i in intervals],
            f"{level} CI (t, over seeds)": [f"[{i.low:.4f}, {i.high:.4f}]" if i.n > 1 else "n/a (1 seed)" for i in intervals],
            "Seeds": [str(i.n) for i in intervals],
        }
    )


def pairs_frame(comparison: Comparison) -> pd.DataFrame:
    """One row per model: the reference's paired lead over it, the per-seed McNemar tests and the Holm p-value."""
    ref = comparison.labels[comparison.reference]
    level = f"{comparison.confidence:.0%}"
    rows = []
    for model, test in comparison.pairs.items():
        d = test.difference
        rows.append({
            "Model": comparison.labels[model],
            f"{ref} − model (points)": f"{d.difference * 100:+.2f}",
            f"{level} paired-bootstrap CI": f"[{d.low * 100:+.2f}, {d.high * 100:+.2f}]",
            "McNemar per seed (only ref right / only model right, p)": "; ".join(
                f"{t.only_a_correct}/{t.only_b_correct}, p = {t.p_value:.2g}" for t in test.per_seed),
            "p (Holm)": f"{test.p_holm:.2g}",
            "Verdict": (f"**{ref} better**" if d.difference > 0 else f"**{comparison.labels[model]} better**")
            if comparison.significant(model) else "not significant",
        })
    return pd.DataFrame(rows)


def paired_sentence(comparison: Comparison) -> str:
    """How the paired comparisons above were made, in one paragraph."""
    d = next(iter(comparison.pairs.values())).difference if comparison.pairs else None
    resamples = f"{d.resamples:,} resamples of test images" if d else "resamples of test images"
    return (
        f"Each model is paired with the reference ({comparison.labels[comparison.reference]}) on the same test images: the "
        f"paired-bootstrap CI resamples images ({resamples}, each image's difference averaged over seeds first). "
        f"The exact McNemar test is run per seed, never on predictions pooled across seeds (which would count each "
        f"image once per seed); a pair's p is the largest of its seeds' p-values (it is significant only if every seed "
        f"is), then Holm-corrected across the {len(comparison.pairs)} pair(s) at α = {comparison.alpha:.2f}."
    )


def axes_frame(comparison: Comparison) -> pd.DataFrame:
    """Every cost and speed axis with each model's value and which one is best."""
    def cell(row: pd.Series, model: str) -> str:
        text = _number(row[model], row["unit"], row["digits"])
        if not row["exact"] and row[f"{model}_spread"] > 0:
            text += f" ± {_number(row[f'{model}_spread'], row['unit'], row['digits'])}"
        return text

    def better(row: pd.Series) -> str:
        if row["winner"] == "tie":
            return "tie (within 1%)"
        if row["winner"] == "not significant":
            p = "n/a" if math.isnan(row["p_value"]) else f"{row['p_value']:.2g}"
            return f"neither (not significant, p = {p})"
        direction = "higher" if row["higher_is_better"] else "lower"
        suffix = "" if row["exact"] else f", p = {row['p_value']:.2g}"
        runner = f" than {comparison.labels[row['runner_up']]}" if len(comparison.models) > 2 else ""
        return f"**{comparison.labels[row['winner']]}** ({row['ratio']:.2f}x {direction}{runner}{suffix})"

    rows = list(comparison.axes.iterrows())
    table = {"Axis": [f"{r['label']} ({r['unit']})" if r["unit"] else r["label"] for _, r in rows]}
    for model in comparison.models:
        table[comparison.labels[model]] = [cell(r, model) for _, r in rows]
    table["Better" if len(comparison.models) == 2 else "Best"] = [better(r) for _, r in rows]
    frame = pd.DataFrame(table)
    speed = pd.DataFrame([_speed_row(comparison, case) for case in comparison.speed], columns=frame.columns)
    return pd.concat([frame.iloc[:3], speed, frame.iloc[3:]], ignore_index=True) if len(speed) else frame


FIX = "run `convbench bench` on an idle machine"


def _speed_row(comparison: Comparison, case: SpeedCase) -> list[str]:
    """One bench case: each model's median (± relative IQR over rounds) and the best, if per-round ratios back it."""
    digits = 3 if case.unit == "ms" else 0
    cells = [f"{case.values[m]:,.{digits}f} ± {case.spread[m]:.0%}" for m in comparison.models]
    ranked = sorted(comparison.models, key=lambda m: float(np.median(case.samples[m])), reverse=True)
    if len(ranked) < 2:
        best = "n/a"
    elif case.noisy:
        best = f"noisy: not compared ({FIX})"
    else:
        ratio, low, high = case.ratio(ranked[0], ranked[1], comparison.confidence, comparison.seed)
        interval = f"[{low:.2f}, {high:.2f}]"
        runner = f" than {comparison.labels[ranked[1]]}" if len(ranked) > 2 else ""
        best = (f"**{comparison.labels[ranked[0]]}** ({ratio:.2f}x faster{runner}, per-round {interval})" if low > 1
                else f"neither (per-round ratio {ratio:.2f} {interval} includes 1)")
    return [f"{case.label} ({case.unit})", *cells, best]


def _speed_claim(comparison: Comparison, model: str, prefix: str) -> tuple[SpeedCase | None, float, bool]:
    """The reference's speed over `model` in the first bench case whose key starts with `prefix`, and whether the
    per-round ratios back a difference (not noisy, interval excluding 1)."""
    case = next((c for c in comparison.speed if c.key.startswith(prefix) and c.unit == "img/s"), None)
    if case is None:
        return None, math.nan, False
    ratio, low, high = case.ratio(comparison.reference, model, comparison.confidence, comparison.seed)
    return case, ratio, not case.noisy and (low > 1 or high < 1)


def verdict(comparison: Comparison, metrics: pd.DataFrame) -> str:
    """A plain-language paragraph generated from the numbers: accuracy first, then what it costs.

    A speed ratio is stated only when the side-by-side timing backs it (not noisy, per-round interval excluding 1).
    """
    ref = comparison.reference
    ref_label = comparison.labels[ref]
    axes = comparison.axes.set_index("key")
    inference_cases = [c for c in comparison.speed if c.key.startswith("inference_batch_")]
    largest = f"inference_batch_{max(int(c.key.rsplit('_', 1)[-1]) for c in inference_cases)}" if inference_cases else "-"
    sentences = []
    for model, test in comparison.pairs.items():
        label = comparison.labels[model]
        a, b = comparison.accuracy[ref], comparison.accuracy[model]
        if not comparison.significant(model):
            sentences.append(f"On accuracy the {ref_label} and the {label} are statistically indistinguishable: "
                             f"{ref_label} {a.mean:.2%} vs {label} {b.mean:.2%} (Holm-adjusted McNemar p = {test.p_holm:.2g}).")
            winner = None
        else:
            leader, trailer = (ref_label, label) if test.difference.difference > 0 else (label, ref_label)
            winner = ref if test.difference.difference > 0 else model
            sentences.append(
                f"The {leader} is more accurate than the {trailer} by {abs(test.difference.difference) * 100:.2f} "
                f"percentage points ({ref_label} {a.mean:.2%} vs {label} {b.mean:.2%}, Holm-adjusted McNemar "
                f"p = {test.p_holm:.2g})."
            )
        params_ratio = axes.loc["parameters", ref] / axes.loc["parameters", model]
        size = ("the same parameter budget" if abs(params_ratio - 1) <= 0.01
                else f"{params_ratio:.2f}x the {label}'s parameters")
        flops_ratio = axes.loc["forward_flops_image", ref] / axes.loc["forward_flops_image", model]
        sentences.append(f"With {size}, the {ref_label} spends {flops_ratio:.2f}x the {label}'s FLOPs per image;")
        train_case, train_ratio, train_backed = _speed_claim(comparison, model, "training_step")
        infer_case, infer_ratio, infer_backed = _speed_claim(comparison, model, largest)
        batch = largest.rsplit("_", 1)[-1]
        speed = []
        for case, ratio, backed, what, stated in (
            (train_case, train_ratio, train_backed, "training step", f"it trains at {train_ratio:.2f}x the {label}'s speed"),
            (infer_case, infer_ratio, infer_backed, f"inference speed (batch {batch})",
             f"runs inference at {infer_ratio:.2f}x its speed (batch {batch})"),
        ):
            if case is None:
                speed.append(f"its {what} was not timed")
            elif case.noisy:
                speed.append(f"its {what} could not be measured cleanly (other work competed for the cores; {FIX})")
            else:
                speed.append(stated if backed else f"its {what} does not differ measurably from the {label}'s")
        sentences.append(" and ".join(speed) + ".")
        sentences.append(_trade_off(comparison, winner, model, train_ratio, train_backed))
    return " ".join(sentence for sentence in sentences if sentence)


def _trade_off(comparison: Comparison, winner: str | None, model: str, train_ratio: float, backed: bool) -> str:
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


@dataclass(frozen=True)
class LadderStep:
    """One rung's gain over the rung below it, paired on the same test images."""

    name: str
    lower: str
    upper: str
    gain: PairedDifference


def ladder_steps(rungs: Ladder, correctness: dict[str, np.ndarray], settings: ReportParams) -> tuple[list[LadderStep], PairedDifference]:
    """Locality (local − dense) and weight sharing (shared − local), plus their contrast (sharing − locality)."""
    def gain(upper: str, lower: str) -> PairedDifference:
        return paired_bootstrap(correctness[upper], correctness[lower], settings.confidence,
                                settings.bootstrap_resamples, settings.bootstrap_seed)

    steps = [LadderStep("locality", rungs.dense, rungs.local, gain(rungs.local, rungs.dense)),
             LadderStep("weight sharing", rungs.local, rungs.shared, gain(rungs.shared, rungs.local))]
    as_float = {m: correctness[m].astype(float) for m in (rungs.dense, rungs.local, rungs.shared)}
    contrast = bootstrap_mean(as_float[rungs.shared] - 2 * as_float[rungs.local] + as_float[rungs.dense],
                              settings.confidence, settings.bootstrap_resamples, settings.bootstrap_seed)
    return steps, contrast


def ladder_section(rungs: Ladder, steps: list[LadderStep], contrast: PairedDifference, comparison: Comparison,
                   figure: Path) -> Section:
    """The CNN's lead over the MLP split into what locality buys and what weight sharing buys on top."""
    labels = comparison.labels
    level = f"{comparison.confidence:.0%}"
    total = sum(step.gain.difference for step in steps)
    table = pd.DataFrame({
        "Step": [step.name for step in steps],
        "Models": [f"{labels[step.upper]} − {labels[step.lower]}" for step in steps],
        "Accuracy gain (points)": [f"{step.gain.difference * 100:+.2f}" for step in steps],
        f"{level} paired-bootstrap CI": [f"[{step.gain.low * 100:+.2f}, {step.gain.high * 100:+.2f}]" for step in steps],
        "Share of the total": [f"{step.gain.difference / total:.0%}" if total > 0 else "n/a" for step in steps],
    })
    return Section("What each inductive bias buys", [
        Paragraph(
            f"The {labels[rungs.dense]}, the {labels[rungs.local]} and the {labels[rungs.shared]} form a ladder: the "
            f"{labels[rungs.local]} has the {labels[rungs.shared]}'s exact geometry (kernels, padding, pooling, head) but "
            f"a separate filter at every position, so it has locality without weight sharing. Each step is paired on "
            f"the same test images (per-image differences averaged over seeds, then bootstrapped)."
        ),
        Table(table, ("left", "left", "right", "right", "right")),
        Paragraph(ladder_sentence(rungs, steps, contrast, labels)),
        Figure(figure, "Accuracy of each rung (CI over seeds) and what each step buys (paired bootstrap CI)."),
    ])


def ladder_sentence(rungs: Ladder, steps: list[LadderStep], contrast: PairedDifference, labels: dict[str, str]) -> str:
    """Which part of the lead is larger, said only as strongly as the paired contrast's interval allows."""
    locality, sharing = steps
    total = locality.gain.difference + sharing.gain.difference

    def part(step: LadderStep) -> str:
        g = step.gain
        sign = "" if g.low > 0 or g.high < 0 else ", an interval that includes zero"
        return f"{step.name} ({labels[step.upper]} − {labels[step.lower]}) {g.difference * 100:+.2f} points " \
               f"[{g.low * 100:+.2f}, {g.high * 100:+.2f}{sign}]"

    opening = (f"Of the {labels[rungs.shared]}'s {total * 100:+.2f}-point lead over the {labels[rungs.dense]}, "
               f"{part(locality)} and {part(sharing)}.")
    if contrast.low > 0:
        return f"{opening} Weight sharing buys more than locality (their difference {contrast.difference * 100:+.2f} " \
               f"points, CI [{contrast.low * 100:+.2f}, {contrast.high * 100:+.2f}])."
    if contrast.high < 0:
        return f"{opening} Locality buys more than weight sharing (their difference {-contrast.difference * 100:+.2f} " \
               f"points, CI [{-contrast.high * 100:+.2f}, {-contrast.low * 100:+.2f}])."
    return (f"{opening} Which part is larger cannot be told from these numbers (the difference between them, "
            f"{contrast.difference * 100:+.2f} points for sharing minus locality, has a CI "
            f"[{contrast.low * 100:+.2f}, {contrast.high * 100:+.2f}] that includes zero).")


def published_section(params: Params, comparison: Comparison, probes: dict[str, pd.DataFrame]) -> Section | None:
    """The published numbers beside the measured ones, the shuffled-pixel row included when it was run."""
    published = params.report.published
    if published is None:
        return None
    permuted = {}
    if "permutation" in probes:
        rows = probes["permutation"]
        shuffled = rows[rows["setting"] == "permuted"]
        permuted = {m: t_interval(shuffled.loc[shuffled["model"] == m, "test_accuracy"].to_numpy(), comparison.confidence)
                    for m in comparison.models if (shuffled["model"] == m).any()}

    def measured(interval: Interval | None) -> str:
        if interval is None:
            return "not run (probes.run: [permutation])" if "permutation" not in probes else "–"
        return f"{interval.mean:.3f} [{interval.low:.3f}, {interval.high:.3f}]" if interval.n > 1 else f"{interval.mean:.3f}"

    def shown(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    table = pd.DataFrame({
        "Model": [comparison.labels[m] for m in comparison.models],
        "Published": [shown(published.accuracy.get(m)) for m in comparison.models],
        f"Measured ({comparison.confidence:.0%} CI)": [measured(comparison.accuracy[m]) for m in comparison.models],
        "Published, shuffled pixels": [shown(published.permuted.get(m)) for m in comparison.models],
        "Measured, shuffled pixels": [measured(permuted.get(m)) for m in comparison.models],
    })
    return Section("Published results, reproduced", [
        Paragraph(f"Source: {published.source}. Measured: mean test accuracy over seeds {list(params.train.seeds)} "
                  f"with a t-interval; the shuffled row comes from the permutation probe (one fixed pixel shuffle)."),
        Table(table, ("left", "right", "right", "right", "right")),
    ])


def build_document(params: Params, comparison: Comparison, manifest: dict, metrics: pd.DataFrame, bench: dict,
                   configs: dict[str, ModelConfig], recipe: dict[str, dict], figures: dict[str, Path],
                   probes: dict[str, pd.DataFrame] | None = None,
                   ladder: Section | None = None) -> Document:
    """Everything the report says, in order, for both the Markdown and the HTML renderer."""
    probes = probes or {}
    context = metrics.iloc[0]["context"]
    sizes = manifest["sizes"]
    labels = comparison.labels
    names = ", ".join(labels[m] for m in comparison.models)
    header = Paragraph(
        f"convbench trained {len(comparison.models)} models ({names}; the reference is the "
        f"{labels[comparison.reference]}) {tune_report.recipe_text(params, recipe, labels)}, over seeds "
        f"{list(params.train.seeds)}, on "
        f"`{params.data.name}`: {sizes['train']:,} train / {sizes['val']:,} val / {sizes['test']:,} test images of shape "
        f"{'x'.join(map(str, manifest['input_shape']))}, {len(manifest['classes'])} classes (data sha256 "
        f"`{manifest['sha256'][:12]}`). {tune_report.recipe_note(params)} Device `{context['device']}` "
        f"({context['device_name']}, {context['threads']} threads, {context['dtype']}, torch {context['torch']}); "
        f"git commit `{tracking.git_commit()}`."
    )
    params_text = yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False)
    cost_blocks: list = [
        Table(axes_frame(comparison), ("left",) + ("right",) * len(comparison.models) + ("left",)),
        Paragraph(
            f"Speed rows come from the bench stage: every model timed in one process, round by round ({bench['rounds']} "
            f"rounds, each model in turn), so load and drift fall on all alike; each value is the median over rounds "
            f"± the relative interquartile range, and a model is named faster only when the {comparison.confidence:.0%} "
            "bootstrap interval of its per-round speed ratio excludes 1 and the case was not noisy (run-queue wait "
            "over 10% of the time, or a spread over 15%). Other rows are means over seeds ± their standard deviation; "
            f"peak memory names a better model only when Welch's t-test over seeds gives p < {comparison.alpha:.2f}. "
            "FLOPs are counted by `torch.utils.flop_counter` (a multiply-add is 2 FLOPs; the optimizer update is not "
            "counted). Peak memory is the most tensor memory alive at once (CUDA's max_memory_allocated; on CPU, "
            "torch.profiler's allocation events). MFU (achieved FLOP/s over a square matmul's, timed in the bench "
            f"process at {bench['matmul_flops_per_second'] / 1e9:,.1f} GFLOP/s): "
            + "; ".join(f"{comparison.labels[m]} {bench['mfu'][m]['train']:.1%} training, "
                        f"{bench['mfu'][m]['inference']:.1%} inference" for m in comparison.models) + "."
        ),
    ]
    if "accuracy_vs_cost" in figures:
        cost_blocks.append(Figure(figures["accuracy_vs_cost"], "Test accuracy against parameters and FLOPs (error bars: "
                                                               "CI over seeds)."))
    if bench["noisy"]:
        cost_blocks.insert(0, Paragraph(
            f"**Speed could not be measured cleanly**: other work competed for the cores during "
            f"{', '.join(bench['noisy'])}, so those rows name no faster model; {FIX} (it re-times without retraining)."))
    cost_blocks.append(Figure(figures["throughput"], "Inference throughput against batch size, timed side by side "
                                                     "(band: range over rounds)."))
    sections = [
        Section("", [header, Code("yaml", params_text, collapsed="params.yaml used for this report")]),
        Section("Verdict", [Paragraph(verdict(comparison, metrics)), Paragraph(tune_report.verdict_source(params))]),
        Section("Accuracy", [Table(accuracy_frame(comparison, metrics), ("left", "right", "right", "right", "right")),
                             Table(pairs_frame(comparison), ("left", "right", "right", "left", "right", "left")),
                             Paragraph(paired_sentence(comparison)),
                             Figure(figures["learning_curves"], "Learning curves: each seed faint, the mean over seeds bold."),
                             Figure(figures["confusion"], "Confusion matrices on the test split, summed over seeds."),
                             Figure(figures["misclassified"], "Test images each model gets wrong (seed 0).")]),
    ]
    published = published_section(params, comparison, probes)
    if published is not None:
        sections.append(published)
    if ladder is not None:
        sections.append(ladder)
    sections.append(tune_report.section(params, comparison, manifest["sha256"], figures))
    sections += [
        Section("Cost and speed", cost_blocks),
        probe_section(metrics, probes, params.report.confidence, figures, comparison.cast),
    ]
    if "filters" in figures:
        sections.append(Section("What the convolution learned", [
            Figure(figures["filters"], "First-layer filters and the feature maps they produce for one test image "
                                       "(same grid position, same filter): each filter slides over the input to make one map."),
        ]))
    sections.append(Section("Architectures", _architecture_blocks(configs, labels, figures["architecture"])))
    title = " vs ".join(labels[m] for m in comparison.models)
    return Document(f"convbench: {title} on `{params.data.name}`", sections)


KERAS_REFERENCE = """from keras.models import Sequential
from keras.layers import Conv2D, MaxPooling2D, Flatten, Dense
model = Sequential([
    Conv2D(32, (3, 3), activation='relu', input_shape=(64, 64, 3)),
    MaxPooling2D(pool_size=(2, 2)),
    Flatten(),
    Dense(128, activation='relu'),
    Dense(10, activation='softmax')
])"""


def mermaid(labels: list[str]) -> str:
    """A top-down Mermaid flowchart (graph TD) with one node per label, as GitHub renders it."""
    names = [f"N{i}" for i in range(len(labels))]
    nodes = [f'    {name}["{label.replace(chr(34), chr(39))}"]' for name, label in zip(names, labels)]
    edges = [f"    {a} --> {b}" for a, b in zip(names, names[1:])]
    return "\n".join(["graph TD", *nodes, *edges])


def _architecture_blocks(configs: dict[str, ModelConfig], labels: dict[str, str], diagram: Path) -> list:
    blocks: list = [Paragraph(
        "The default CNN is the explainer's Keras model (below) at this dataset's input size; convbench runs each "
        "MaxPool before its ReLU, which gives identical outputs and gradients and is faster. A model with "
        "`match: params` has its width solved so its parameter count matches the reference's. The tables and "
        "diagrams are read off the built modules."
    ), Code("python", KERAS_REFERENCE, collapsed="The reference Keras model")]
    for model, config in configs.items():
        rows = models.describe(config)
        table = pd.DataFrame({"Layer": [r["layer"] for r in rows], "Output shape": [r["output_shape"] for r in rows],
                              "Parameters": [f"{r['params']:,}" for r in rows]})
        total = sum(r["params"] for r in rows)
        blocks += [Paragraph(f"**{labels[model]}** (`{config.arch}`, {total:,} parameters)"),
                   Table(table, ("left", "right", "right")),
                   Code("mermaid", mermaid(models.flow_labels(config)))]
    blocks.append(Figure(diagram, "Every architecture as a flowchart (the Mermaid diagrams above render on GitHub)."))
    return blocks


def sizes_differ(metrics: pd.DataFrame) -> bool:
    """Whether the models' parameter counts differ by more than 5% (else accuracy-vs-size is one vertical line)."""
    counts = metrics.groupby("model")["params"].first().astype(float)
    return bool(counts.max() > 1.05 * counts.min())


def draw_figures(
    params: Params, metrics: pd.DataFrame, curves: pd.DataFrame, comparison: Comparison, manifest: dict,
    configs: dict[str, ModelConfig], probes: dict[str, pd.DataFrame], figures_dir: Path,
    ladder_rungs: tuple[Ladder, list[LadderStep]] | None = None,
) -> dict[str, Path]:
    """Every figure of the report, written under `figures_dir`; models appear by their labels, in report order."""
    from pipeline import figures as draw

    labels = comparison.labels
    cast = comparison.cast
    seeds = list(params.train.seeds)
    classes = [str(c) for c in manifest["classes"]]
    labelled_curves = curves.assign(model=curves["model"].map(labels))
    out = {"learning_curves": draw.learning_curves(labelled_curves, figures_dir / "learning_curves.png")}
    points = pd.DataFrame([
        {"model": labels[m], "params": metrics.loc[metrics["model"] == m, "params"].iloc[0],
         "flops": metrics.loc[metrics["model"] == m, "flops_forward_per_image"].iloc[0],
         "accuracy": comparison.accuracy[m].mean, "ci_low": comparison.accuracy[m].low,
         "ci_high": comparison.accuracy[m].high}
        for m in comparison.models
    ])
    if "size" in probes:
        sized = advantage_by_setting(probes["size"], params.report.confidence, cast)
        points = pd.concat([points, pd.DataFrame(
            [{"model": labels[m], "params": row[f"params:{m}"], "flops": np.nan, "accuracy": row[m].mean,
              "ci_low": row[m].low, "ci_high": row[m].high} for _, row in sized.iterrows() for m in comparison.models]
        )], ignore_index=True).drop_duplicates(subset=["model", "params"])
    if "size" in probes or sizes_differ(metrics):
        out["accuracy_vs_cost"] = draw.accuracy_vs_cost(points, figures_dir / "accuracy_vs_cost.png")
    confidence = params.report.confidence
    shifts = robustness_table(metrics, "shift", confidence, cast)
    noise = robustness_table(metrics, "noise", confidence, cast)
    if len(shifts) and len(noise):
        out["robustness"] = draw.robustness(interval_points(shifts, cast), interval_points(noise, cast),
                                            figures_dir / "robustness.png")
    if "fraction" in probes:
        table = advantage_by_setting(probes["fraction"], confidence, cast)
        out["fraction"] = draw.fraction_curve(interval_points(table, cast), figures_dir / "data_efficiency.png")
    throughput = pd.DataFrame([
        {"model": labels[model], "batch_size": int(case.key.rsplit("_", 1)[-1]), "images_per_second": value}
        for case in comparison.speed if case.key.startswith("inference_batch_")
        for model in comparison.models for value in case.samples[model]
    ])
    out["throughput"] = draw.throughput_vs_batch(throughput, figures_dir / "throughput_vs_batch.png")
    matrices = {labels[m]: np.sum([np.asarray(c) for c in metrics.loc[metrics["model"] == m, "confusion_matrix"]], axis=0)
                for m in comparison.models}
    out["confusion"] = draw.confusion_matrices(matrices, classes, figures_dir / "confusion_matrices.png")
    prepared = load_prepared(paths.prepared_tensors(params.data.name), paths.prepared_manifest(params.data.name))
    test_x = normalize(prepared.splits.test.x, prepared.mean, prepared.std, torch.device("cpu"))
    predictions = {m: pd.read_csv(paths.predictions(m, seeds[0])) for m in comparison.models}
    truth = predictions[comparison.models[0]]["label"].astype(str).tolist()
    out["misclassified"] = draw.misclassified(
        test_x.numpy(), truth, {labels[m]: p["prediction"].astype(str).tolist() for m, p in predictions.items()},
        figures_dir / "misclassified.png",
    )
    for model in comparison.models:  # the first model with a convolution shows its filters
        path = paths.checkpoint(model, seeds[0])
        maps = first_conv_maps(checkpoints.restore(checkpoints.load(path, model), path).eval(), test_x[0])
        if maps is not None:
            weights, feature_maps = maps
            out["filters"] = draw.filters_and_feature_maps(weights.numpy(), test_x[0].numpy(), feature_maps.numpy(),
                                                           figures_dir / "filters.png")
            break
    out["architecture"] = draw.architecture_diagram(
        {labels[m]: models.flow_labels(c) for m, c in configs.items()}, figures_dir / "architectures.png"
    )
    if ladder_rungs is not None:
        rungs, steps = ladder_rungs
        order = [rungs.dense, rungs.local, rungs.shared]
        gains = {step.upper: step for step in steps}
        frame = pd.DataFrame([{
            "label": labels[m], "accuracy": comparison.accuracy[m].mean, "low": comparison.accuracy[m].low,
            "high": comparison.accuracy[m].high,
            "step": f"+{gains[m].name}\n({labels[m]} − {labels[gains[m].lower]})" if m in gains else None,
            "gain": gains[m].gain.difference * 100 if m in gains else np.nan,
            "gain_low": gains[m].gain.low * 100 if m in gains else np.nan,
            "gain_high": gains[m].gain.high * 100 if m in gains else np.nan,
        } for m in order])
        out["ladder"] = draw.ladder(frame, figures_dir / "ladder.png")
    out |= tune_report.draw(params, labels, manifest["sha256"], figures_dir)
    return out


def first_conv_maps(model: torch.nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The first conv layer's weights and its ReLU feature maps of one (C, ...) image; None for models without convs."""
    conv = next((layer for layer in model.modules() if isinstance(layer, (torch.nn.Conv1d, torch.nn.Conv2d))), None)
    if conv is None:
        return None
    with torch.no_grad():
        maps = torch.relu(conv(image.unsqueeze(0).to(conv.weight.device)))[0]
    return conv.weight.detach().float().cpu(), maps.float().cpu()


def load_checkpoints(params: Params, manifest: dict) -> tuple[dict[str, ModelConfig], dict]:
    """Every cell's checkpoint, refused when stale; the configs per model and the recipe each model was trained with."""
    seeds = list(params.train.seeds)
    configs, recipe = {}, {}
    loaded = {}
    for model in params.models:
        own = recipes.params_for(params, model, manifest["sha256"])  # the shared recipe, or the model's tuned one
        configs[model] = models.resolve(own, tuple(manifest["input_shape"]), len(manifest["classes"]), [model])[model]
        recipe[model] = own.train.model_dump(mode="json", exclude={"seeds"})
        for seed in seeds:
            path = paths.checkpoint(model, seed)
            loaded[(model, seed)] = checkpoint = checkpoints.load(path, model)
            checkpoints.check_current(checkpoint, path, configs[model], params.data.name, manifest["sha256"], recipe[model])
    return configs, {"recipe": recipe, "run_ids": [c.mlflow_run_id for c in loaded.values() if c.mlflow_run_id]}


def report(params: Params, markdown_path: Path, figures_dir: Path, html_path: Path | None = None) -> ReportResult:
    """Build the comparison from every (model, seed) cell: Markdown, HTML, figures, and a parent MLflow run."""
    seeds = list(params.train.seeds)
    names = list(params.models)
    metrics = load_metrics(names, seeds, params.data.name)
    curves = load_curves(names, seeds)
    correctness = load_correctness(names, seeds)
    manifest_path = paths.prepared_manifest(params.data.name)
    if not manifest_path.is_file():
        raise ConvbenchError(f"{manifest_path} is missing; run `convbench prepare` first")
    manifest = json.loads(manifest_path.read_text())
    configs, trained = load_checkpoints(params, manifest)
    labels = {m: c.label for m, c in configs.items()}
    bench = load_bench(names, params.data.name)
    comparison = compare(metrics, correctness, params.report, names, params.reference_model, labels, speed_cases(bench))
    probes = load_probes(params, manifest["sha256"])
    rungs = models.ladder(configs)
    steps = ladder_steps(rungs, correctness, params.report) if rungs else None
    html_path = html_path or markdown_path.with_suffix(".html")
    # Everything is drawn and rendered in a staging folder and logged to MLflow from there; only when all of
    # that worked do the files replace the previous report, so a failure leaves the previous set as it was.
    with atomic.staged_folder(markdown_path.parent) as stage:
        staged_figures = stage / figures_dir.relative_to(markdown_path.parent)
        figures = draw_figures(params, metrics, curves, comparison, manifest, configs, probes, staged_figures,
                               (rungs, steps[0]) if rungs and steps else None)
        ladder = ladder_section(rungs, steps[0], steps[1], comparison, figures["ladder"]) if rungs and steps else None
        document = build_document(params, comparison, manifest, metrics, bench, configs, trained["recipe"], figures,
                                  probes, ladder)
        staged_markdown, staged_html = stage / markdown_path.name, stage / html_path.name
        atomic.write_text(staged_markdown, to_markdown(document, stage))
        atomic.write_text(staged_html, to_html(document))
        tags = {"convbench.kind": "comparison", "convbench.dataset": params.data.name, "convbench.seeds": seeds,
                "convbench.models": names}
        with tracking.run(params.tracking, params.data.name, "comparison", tags) as logger:
            logger.log_metrics(comparison_metrics(comparison, steps))
            logger.log_artifact(staged_markdown, "report")
            logger.log_artifact(staged_html, "report")
            for figure in figures.values():
                logger.log_artifact(figure, "report/figures")
            logger.adopt(trained["run_ids"])
        atomic.replace_set({staged_markdown: markdown_path, staged_html: html_path, staged_figures: figures_dir})
    figures = {key: figures_dir / path.name for key, path in figures.items()}
    return ReportResult(markdown_path, list(figures.values()), comparison)


def comparison_metrics(comparison: Comparison,
                       ladder: tuple[list[LadderStep], PairedDifference] | None = None) -> dict[str, float]:
    """The comparison's headline numbers as flat MLflow metrics, named by model alias and axis key."""
    values: dict[str, float] = {}
    for model, interval in comparison.accuracy.items():
        values |= {f"{model}_accuracy_mean": interval.mean, f"{model}_accuracy_std": interval.std,
                   f"{model}_accuracy_ci_low": interval.low, f"{model}_accuracy_ci_high": interval.high}
    for model, test in comparison.pairs.items():
        values |= {f"{model}_lead_of_reference": test.difference.difference,
                   f"{model}_lead_of_reference_ci_low": test.difference.low,
                   f"{model}_lead_of_reference_ci_high": test.difference.high,
                   f"{model}_mcnemar_p_max_over_seeds": test.p_value, f"{model}_mcnemar_p_holm": test.p_holm}
    for _, row in comparison.axes.iterrows():
        values |= {f"{model}_{row['key']}": row[model] for model in comparison.models}
    if ladder is not None:
        steps, contrast = ladder
        for step in steps:
            key = step.name.replace(" ", "_")
            values |= {f"ladder_{key}": step.gain.difference, f"ladder_{key}_ci_low": step.gain.low,
                       f"ladder_{key}_ci_high": step.gain.high}
        values |= {"ladder_sharing_minus_locality": contrast.difference}
    return {k: float(v) for k, v in values.items() if not math.isnan(float(v))}
