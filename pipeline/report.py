"""Report stage: CNN vs MLP over seeds as a Markdown table and a learning-curve figure."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import atomic, paths, tracking
from pipeline.errors import ConvbenchError
from pipeline.models import MODEL_NAMES
from pipeline.params import Params, ReportParams
from pipeline.stats import Interval, McNemar, PairedDifference, mcnemar, paired_bootstrap, t_interval, welch_p_value

MODEL_LABELS = {"cnn": "CNN", "mlp": "MLP"}
COLORS = {"cnn": "tab:blue", "mlp": "tab:orange"}


@dataclass(frozen=True)
class ReportResult:
    """Files the report stage wrote and the summary table behind them."""

    markdown: Path
    figures: list[Path]
    comparison: Comparison


def _cell_files(models: tuple[str, ...], seeds: list[int], where: Callable[[str, int], Path], stage: str) -> list[tuple[str, int, Path]]:
    """Every expected per-cell file; a missing one names the command that makes it."""
    cells = [(model, seed, where(model, seed)) for model in models for seed in seeds]
    for model, seed, path in cells:
        if not path.is_file():
            raise ConvbenchError(f"{path} is missing; run `convbench {stage} --model {model} --seed {seed}` first")
    return cells


def load_metrics(models: tuple[str, ...], seeds: list[int], dataset: str) -> pd.DataFrame:
    """One row per (model, seed) from metrics/<model>-s<seed>.json, nested figures as 'a.b.c' columns."""
    rows = [json.loads(path.read_text()) for _m, _s, path in _cell_files(models, seeds, paths.metrics, "evaluate")]
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


def load_curves(models: tuple[str, ...], seeds: list[int]) -> pd.DataFrame:
    """Per-epoch curves of every cell, with model and seed columns."""
    cells = _cell_files(models, seeds, paths.curves, "train")
    return pd.concat([pd.read_csv(path).assign(model=m, seed=s) for m, s, path in cells], ignore_index=True)


def load_correctness(models: tuple[str, ...], seeds: list[int]) -> dict[str, np.ndarray]:
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
    """One row of the comparison: a metrics column, how to print it, and which direction is better."""

    label: str
    column: str
    unit: str
    higher_is_better: bool
    exact: bool = False  # deterministic counts: no test, a tie when within 1%
    digits: int = 0


AXES = (
    Axis("Parameters", "params", "", higher_is_better=False, exact=True),
    Axis("Forward FLOPs / image", "flops_forward_per_image", "MFLOP", higher_is_better=False, exact=True, digits=2),
    Axis("Training-step FLOPs / image", "flops_train_step_per_image", "MFLOP", higher_is_better=False, exact=True, digits=2),
    Axis("Training throughput", "train_images_per_second", "img/s", higher_is_better=True),
    Axis("Time to final accuracy", "seconds_to_final_accuracy", "s", higher_is_better=False, digits=1),
    Axis("Latency @ batch 1, median", "latency.median_ms", "ms", higher_is_better=False, digits=3),
    Axis("Latency @ batch 1, p95", "latency.p95_ms", "ms", higher_is_better=False, digits=3),
    Axis("Peak memory, training step", "peak_memory_mb.train_step", "MiB", higher_is_better=False, digits=1),
    Axis("Peak memory, inference", "peak_memory_mb.inference", "MiB", higher_is_better=False, digits=1),
    Axis("MFU, training", "mfu.train", "%", higher_is_better=True, digits=2),
    Axis("MFU, inference", "mfu.inference", "%", higher_is_better=True, digits=2),
)
SCALE = {"MFLOP": 1e-6, "%": 100.0}


def axes_for(metrics: pd.DataFrame) -> list[Axis]:
    """AXES plus one inference-throughput row per timed batch size, in the order they appear."""
    batch_columns = sorted(
        (c for c in metrics.columns if c.startswith("inference.") and c.endswith(".images_per_second")),
        key=lambda c: int(c.split(".")[1].removeprefix("batch_")),
    )
    throughput = [Axis(f"Inference @ batch {c.split('.')[1].removeprefix('batch_')}", c, "img/s", higher_is_better=True)
                  for c in batch_columns]
    return [*AXES[:3], *throughput, *AXES[3:]]


@dataclass(frozen=True)
class Comparison:
    """Everything the report states, computed once from the metrics and predictions."""

    accuracy: dict[str, Interval]
    mcnemar: McNemar
    difference: PairedDifference
    axes: pd.DataFrame  # one row per axis: label, unit, cnn, mlp, cnn_spread, mlp_spread, p_value, winner, ratio
    confidence: float

    @property
    def alpha(self) -> float:
        """Significance level that goes with the confidence level."""
        return 1 - self.confidence

    @property
    def accuracy_winner(self) -> str | None:
        """'cnn' or 'mlp' when McNemar rejects equal error rates, None when the difference is not significant."""
        if self.mcnemar.p_value >= self.alpha:
            return None
        return "cnn" if self.difference.difference > 0 else "mlp"


def compare(metrics: pd.DataFrame, correctness: dict[str, np.ndarray], settings: ReportParams) -> Comparison:
    """Intervals over seeds, the paired CNN-vs-MLP tests, and the better model on every axis."""
    accuracy = {
        model: t_interval(frame["test_accuracy"].to_numpy(), settings.confidence)
        for model, frame in metrics.groupby("model", sort=False)
    }
    pooled_cnn, pooled_mlp = correctness["cnn"].ravel(), correctness["mlp"].ravel()
    test = mcnemar(pooled_cnn, pooled_mlp)
    difference = paired_bootstrap(
        correctness["cnn"], correctness["mlp"], settings.confidence, settings.bootstrap_resamples, settings.bootstrap_seed
    )
    rows = [_axis_row(axis, metrics, 1 - settings.confidence) for axis in axes_for(metrics)]
    return Comparison(accuracy, test, difference, pd.DataFrame(rows), settings.confidence)


def _axis_row(axis: Axis, metrics: pd.DataFrame, alpha: float) -> dict[str, object]:
    values = {m: metrics.loc[metrics["model"] == m, axis.column].astype(float).to_numpy() for m in ("cnn", "mlp")}
    cnn, mlp = float(values["cnn"].mean()), float(values["mlp"].mean())
    ratio = max(cnn, mlp) / min(cnn, mlp) if min(cnn, mlp) > 0 else math.inf
    better = "cnn" if (cnn > mlp) == axis.higher_is_better else "mlp"
    if axis.exact:
        p_value = math.nan
        winner = "tie" if ratio <= 1.01 else better
    else:
        p_value = welch_p_value(values["cnn"], values["mlp"])
        winner = better if p_value < alpha else "not significant"
    spread = {m: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()}
    return {"label": axis.label, "unit": axis.unit, "digits": axis.digits, "exact": axis.exact, "cnn": cnn, "mlp": mlp,
            "cnn_spread": spread["cnn"], "mlp_spread": spread["mlp"], "p_value": p_value, "winner": winner, "ratio": ratio,
            "higher_is_better": axis.higher_is_better}


def _number(value: float, unit: str, digits: int) -> str:
    return f"{value * SCALE.get(unit, 1.0):,.{digits}f}"


def accuracy_table(comparison: Comparison) -> str:
    """Test accuracy per model: mean, std and t-interval over seeds."""
    level = f"{comparison.confidence:.0%}"
    table = pd.DataFrame(
        {
            "Model": [MODEL_LABELS.get(m, m) for m in comparison.accuracy],
            "Test accuracy (mean ± std)": [f"{i.mean:.4f} ± {i.std:.4f}" for i in comparison.accuracy.values()],
            f"{level} CI (t, over seeds)": [
                f"[{i.low:.4f}, {i.high:.4f}]" if i.n > 1 else "n/a (1 seed)" for i in comparison.accuracy.values()
            ],
            "Seeds": [i.n for i in comparison.accuracy.values()],
        }
    )
    return table.to_markdown(index=False)


def paired_sentence(comparison: Comparison) -> str:
    """The paired test of CNN vs MLP on the same test images, in one line."""
    d, m = comparison.difference, comparison.mcnemar
    level = f"{comparison.confidence:.0%}"
    significance = (
        f"significant at α = {comparison.alpha:.2f}" if comparison.accuracy_winner
        else f"**not significant** at α = {comparison.alpha:.2f}"
    )
    return (
        f"Paired on the same test images: CNN − MLP accuracy = {d.difference * 100:+.2f} points, "
        f"{level} paired-bootstrap CI [{d.low * 100:+.2f}, {d.high * 100:+.2f}] ({d.resamples:,} resamples of test images, "
        f"per-image difference averaged over seeds). Exact McNemar test on the seed-paired predictions: "
        f"{m.only_a_correct} images only the CNN got right, {m.only_b_correct} only the MLP, p = {m.p_value:.3g}: {significance}."
    )


def axes_table(comparison: Comparison) -> str:
    """Every cost and speed axis with both models' values and which one is better."""
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
        return f"**{MODEL_LABELS[row['winner']]}** ({row['ratio']:.2f}x {direction}{suffix})"

    table = pd.DataFrame(
        {
            "Axis": [f"{r.label} ({r.unit})" if r.unit else r.label for r in comparison.axes.itertuples()],
            "CNN": [cell(r, "cnn") for _, r in comparison.axes.iterrows()],
            "MLP": [cell(r, "mlp") for _, r in comparison.axes.iterrows()],
            "Better": [better(r) for _, r in comparison.axes.iterrows()],
        }
    )
    return table.to_markdown(index=False, colalign=("left", "right", "right", "left"))


def verdict(comparison: Comparison) -> str:
    """A plain-language paragraph generated from the numbers: accuracy first, then what it costs."""
    cnn, mlp = comparison.accuracy["cnn"], comparison.accuracy["mlp"]
    gap = abs(comparison.difference.difference) * 100
    winner = comparison.accuracy_winner
    axes = comparison.axes.set_index("label")
    if winner is None:
        accuracy = (
            f"On accuracy the two models are statistically indistinguishable: CNN {cnn.mean:.2%} vs MLP {mlp.mean:.2%} "
            f"(McNemar p = {comparison.mcnemar.p_value:.2g})."
        )
    else:
        leader, trailer = (MODEL_LABELS[winner], MODEL_LABELS["mlp" if winner == "cnn" else "cnn"])
        accuracy = (
            f"The {leader} is more accurate than the {trailer} by {gap:.2f} percentage points "
            f"(CNN {cnn.mean:.2%} vs MLP {mlp.mean:.2%}, McNemar p = {comparison.mcnemar.p_value:.2g})."
        )
    params = axes.loc["Parameters"]
    flops = axes.loc["Forward FLOPs / image"]
    train = axes.loc["Training throughput"]
    largest = [label for label in axes.index if label.startswith("Inference @ batch")][-1]
    infer = axes.loc[largest]
    size = "the same parameter budget" if params["winner"] == "tie" else f"{params['cnn'] / params['mlp']:.2f}x the MLP's parameters"
    return " ".join(
        [
            accuracy,
            f"With {size}, the CNN spends {flops['cnn'] / flops['mlp']:.2f}x the MLP's FLOPs per image;",
            f"it trains at {train['cnn'] / train['mlp']:.2f}x the MLP's speed and runs inference at "
            f"{infer['cnn'] / infer['mlp']:.2f}x its speed ({largest.removeprefix('Inference @ ').lower()}).",
            _trade_off(winner, train),
        ]
    )


def _trade_off(winner: str | None, train: pd.Series) -> str:
    slower = "CNN" if train["cnn"] < train["mlp"] else "MLP"
    if winner is None:
        return "Without an accuracy difference, the faster model is the better buy here."
    if MODEL_LABELS[winner] == slower:
        return f"So the {MODEL_LABELS[winner]}'s accuracy is bought with compute, not with parameters."
    return f"The {MODEL_LABELS[winner]} is both more accurate and faster to train here."


def plot_learning_curves(curves: pd.DataFrame, target: Path) -> Path:
    """Validation accuracy and training loss per epoch: each seed faint, the mean over seeds bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for model, frame in curves.groupby("model", sort=False):
        color = COLORS.get(str(model), None)
        label = MODEL_LABELS.get(str(model), str(model))
        for _seed, run in frame.groupby("seed"):
            acc_ax.plot(run["epoch"], run["val_accuracy"], color=color, alpha=0.25, linewidth=1)
            loss_ax.plot(run["epoch"], run["train_loss"], color=color, alpha=0.25, linewidth=1)
        mean = frame.groupby("epoch")[["val_accuracy", "train_loss"]].mean()
        acc_ax.plot(mean.index, mean["val_accuracy"], color=color, linewidth=2.5, label=label)
        loss_ax.plot(mean.index, mean["train_loss"], color=color, linewidth=2.5, label=label)
    acc_ax.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy")
    loss_ax.set(title="Training loss", xlabel="epoch", ylabel="cross-entropy", yscale="log")
    for axis in (acc_ax, loss_ax):
        axis.grid(alpha=0.3)
        axis.legend()
    atomic.write_with(target, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)
    return target


def render_markdown(params: Params, comparison: Comparison, manifest: dict, metrics: pd.DataFrame, figure: Path) -> str:
    """The whole comparison.md text."""
    context = metrics.iloc[0]["context"]
    figure_link = figure.relative_to(paths.REPORTS_DIR).as_posix()
    return "\n".join(
        [
            f"# convbench: CNN vs size-matched MLP on `{params.data.name}`",
            "",
            f"Dataset `{params.data.name}`: {manifest['sizes']['train']:,} train / {manifest['sizes']['val']:,} val / "
            f"{manifest['sizes']['test']:,} test images of shape {'x'.join(map(str, manifest['input_shape']))}, "
            f"{len(manifest['classes'])} classes (sha256 `{manifest['sha256'][:12]}`). "
            f"Recipe: AdamW, {params.train.schedule} schedule, lr {params.train.lr}, {params.train.epochs} epochs, "
            f"batch {params.train.batch_size}, seeds {params.train.seeds}. Device `{context['device']}` "
            f"({context['device_name']}, {context['threads']} threads, {context['dtype']}, torch {context['torch']}), "
            f"git commit `{tracking.git_commit()}`.",
            "",
            "## Verdict",
            "",
            verdict(comparison),
            "",
            "## Accuracy",
            "",
            accuracy_table(comparison),
            "",
            paired_sentence(comparison),
            "",
            "## Cost and speed",
            "",
            axes_table(comparison),
            "",
            "Values are means over seeds ± their standard deviation; a speed or memory axis names a better model only "
            f"when Welch's t-test over seeds gives p < {comparison.alpha:.2f}. FLOPs are counted by "
            "`torch.utils.flop_counter` (a multiply-add is 2 FLOPs; the optimizer update is not counted). Throughput and "
            "latency come from `torch.utils.benchmark`; latency samples single calls. MFU is achieved FLOP/s over the "
            f"FLOP/s of a square matmul timed in the same process ({metrics['matmul_flops_per_second'].mean() / 1e9:,.1f} "
            "GFLOP/s here). CPU peak memory is resident-set growth (a lower bound).",
            "",
            "## Learning curves",
            "",
            f"![Learning curves]({figure_link})",
            "",
        ]
    )


def report(params: Params, markdown_path: Path, figures_dir: Path) -> ReportResult:
    """Build the comparison from every (model, seed) cell and log it to MLflow as a comparison run."""
    seeds = list(params.train.seeds)
    metrics = load_metrics(MODEL_NAMES, seeds, params.data.name)
    curves = load_curves(MODEL_NAMES, seeds)
    correctness = load_correctness(MODEL_NAMES, seeds)
    manifest_path = paths.prepared_manifest(params.data.name)
    if not manifest_path.is_file():
        raise ConvbenchError(f"{manifest_path} is missing; run `convbench prepare` first")
    manifest = json.loads(manifest_path.read_text())
    comparison = compare(metrics, correctness, params.report)
    figure = plot_learning_curves(curves, figures_dir / "learning_curves.png")
    atomic.write_text(markdown_path, render_markdown(params, comparison, manifest, metrics, figure))
    tags = {"convbench.kind": "comparison", "convbench.dataset": params.data.name, "convbench.seeds": seeds}
    with tracking.run(params.tracking, params.data.name, "comparison", tags) as logger:
        logger.log_metrics(comparison_metrics(comparison))
        logger.log_artifact(markdown_path, "report")
        logger.log_artifact(figure, "report/figures")
    return ReportResult(markdown_path, [figure], comparison)


def comparison_metrics(comparison: Comparison) -> dict[str, float]:
    """The comparison's headline numbers as flat MLflow metrics."""
    values: dict[str, float] = {}
    for model, interval in comparison.accuracy.items():
        values |= {f"{model}_accuracy_mean": interval.mean, f"{model}_accuracy_std": interval.std,
                   f"{model}_accuracy_ci_low": interval.low, f"{model}_accuracy_ci_high": interval.high}
    values |= {"accuracy_difference": comparison.difference.difference, "accuracy_difference_ci_low": comparison.difference.low,
               "accuracy_difference_ci_high": comparison.difference.high, "mcnemar_p_value": comparison.mcnemar.p_value}
    for row in comparison.axes.itertuples():
        key = re.sub(r"[^a-z0-9]+", "_", row.label.lower()).strip("_")
        values |= {f"cnn_{key}": row.cnn, f"mlp_{key}": row.mlp}
    return {k: float(v) for k, v in values.items() if not math.isnan(float(v))}
