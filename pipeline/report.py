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
import torch
import yaml

from pipeline import atomic, models, paths, tracking
from pipeline.errors import ConvbenchError
from pipeline.models import MODEL_NAMES
from pipeline.params import Params, ReportParams
from pipeline.probe_report import advantage_by_setting, load_probes, probe_section, robustness_points
from pipeline.render import Code, Document, Figure, Paragraph, Section, Table, to_html, to_markdown
from pipeline.stats import Interval, McNemar, PairedDifference, mcnemar, paired_bootstrap, t_interval, welch_p_value

MODEL_LABELS = {"cnn": "CNN", "mlp": "MLP"}


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


def accuracy_frame(comparison: Comparison) -> pd.DataFrame:
    """Test accuracy per model: mean, std and t-interval over seeds."""
    level = f"{comparison.confidence:.0%}"
    table = pd.DataFrame(
        {
            "Model": [MODEL_LABELS.get(m, m) for m in comparison.accuracy],
            "Test accuracy (mean ± std)": [f"{i.mean:.4f} ± {i.std:.4f}" for i in comparison.accuracy.values()],
            f"{level} CI (t, over seeds)": [
                f"[{i.low:.4f}, {i.high:.4f}]" if i.n > 1 else "n/a (1 seed)" for i in comparison.accuracy.values()
            ],
            "Seeds": [str(i.n) for i in comparison.accuracy.values()],
        }
    )
    return table


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


def axes_frame(comparison: Comparison) -> pd.DataFrame:
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
    return table


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


def build_document(params: Params, comparison: Comparison, manifest: dict, metrics: pd.DataFrame,
                   architectures: dict[str, dict], figures: dict[str, Path],
                   probes: dict[str, pd.DataFrame] | None = None) -> Document:
    """Everything the report says, in order, for both the Markdown and the HTML renderer."""
    context = metrics.iloc[0]["context"]
    sizes = manifest["sizes"]
    header = Paragraph(
        f"convbench trained the textbook CNN and an MLP whose width is solved to match its parameter count, with "
        f"the same recipe (AdamW, {params.train.schedule} schedule, lr {params.train.lr}, {params.train.epochs} epochs, "
        f"batch {params.train.batch_size}, label smoothing {params.train.label_smoothing}) over seeds "
        f"{list(params.train.seeds)}, on `{params.data.name}`: {sizes['train']:,} train / {sizes['val']:,} val / "
        f"{sizes['test']:,} test images of shape {'x'.join(map(str, manifest['input_shape']))}, "
        f"{len(manifest['classes'])} classes (data sha256 `{manifest['sha256'][:12]}`). Device `{context['device']}` "
        f"({context['device_name']}, {context['threads']} threads, {context['dtype']}, torch {context['torch']}); "
        f"git commit `{tracking.git_commit()}`."
    )
    params_text = yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False)
    sections = [
        Section("", [header, Code("yaml", params_text, collapsed="params.yaml used for this report")]),
        Section("Verdict", [Paragraph(verdict(comparison))]),
        Section("Accuracy", [Table(accuracy_frame(comparison), ("left", "right", "right", "right")),
                             Paragraph(paired_sentence(comparison)),
                             Figure(figures["learning_curves"], "Learning curves: each seed faint, the mean over seeds bold."),
                             Figure(figures["confusion"], "Confusion matrices on the test split, summed over seeds."),
                             Figure(figures["misclassified"], "Test images each model gets wrong (seed 0).")]),
        Section("Cost and speed", [
            Table(axes_frame(comparison), ("left", "right", "right", "left")),
            Paragraph(
                "Values are means over seeds ± their standard deviation; a speed or memory axis names a better model "
                f"only when Welch's t-test over seeds gives p < {comparison.alpha:.2f}. FLOPs are counted by "
                "`torch.utils.flop_counter` (a multiply-add is 2 FLOPs; the optimizer update is not counted). "
                "Throughput and latency come from `torch.utils.benchmark`; latency samples single calls. MFU is "
                "achieved FLOP/s over the FLOP/s of a square matmul timed in the same process "
                f"({metrics['matmul_flops_per_second'].mean() / 1e9:,.1f} GFLOP/s here). Peak memory is the most tensor "
                "memory alive at once (CUDA's max_memory_allocated; on CPU, torch.profiler's allocation events)."
            ),
            Figure(figures["accuracy_vs_cost"], "Test accuracy against parameters and FLOPs (error bars: CI over seeds)."),
            Figure(figures["throughput"], "Inference throughput against batch size (band: min to max over seeds)."),
        ]),
        probe_section(metrics, probes or {}, params.report.confidence, figures),
        Section("What the CNN learned", [
            Figure(figures["filters"], "The CNN's first-layer filters and the feature maps they produce for one test image "
                                       "(same grid position, same filter): each filter slides over the input to make one map."),
        ]),
        Section("Architectures", _architecture_blocks(architectures, figures["architecture"])),
    ]
    return Document(f"convbench: CNN vs size-matched MLP on `{params.data.name}`", sections)


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
    names = [chr(ord("A") + i) for i in range(len(labels))]
    nodes = [f'    {name}["{label.replace(chr(34), chr(39))}"]' for name, label in zip(names, labels)]
    edges = [f"    {a} --> {b}" for a, b in zip(names, names[1:])]
    return "\n".join(["graph TD", *nodes, *edges])


def _architecture_blocks(architectures: dict[str, dict], diagram: Path) -> list:
    blocks: list = [Paragraph(
        "The default CNN is the explainer's Keras model (below) at this dataset's input size; convbench runs each "
        "MaxPool before its ReLU, which gives identical outputs and gradients and is faster. The MLP's hidden width "
        "is solved so its parameter count matches the CNN's."
    ), Code("python", KERAS_REFERENCE, collapsed="The reference Keras model")]
    for model, config in architectures.items():
        rows = models.describe(config)
        table = pd.DataFrame({"Layer": [r["layer"] for r in rows], "Output shape": [r["output_shape"] for r in rows],
                              "Parameters": [f"{r['params']:,}" for r in rows]})
        total = sum(r["params"] for r in rows)
        blocks += [Paragraph(f"**{MODEL_LABELS.get(model, model)}** ({total:,} parameters)"),
                   Table(table, ("left", "right", "right")),
                   Code("mermaid", mermaid(models.flow_labels(config)))]
    blocks.append(Figure(diagram, "Both architectures as flowcharts (the Mermaid diagrams above render on GitHub)."))
    return blocks


def draw_figures(
    params: Params, metrics: pd.DataFrame, curves: pd.DataFrame, comparison: Comparison, manifest: dict,
    architectures: dict[str, dict], probes: dict[str, pd.DataFrame], figures_dir: Path,
) -> dict[str, Path]:
    """Every figure of the report, written under `figures_dir`."""
    from pipeline import figures as draw
    from pipeline.evaluate import first_conv_maps, load_checkpoint, restore_model
    from pipeline.prepare import load_prepared
    from pipeline.train import normalize

    seeds = list(params.train.seeds)
    classes = [str(c) for c in manifest["classes"]]
    out = {"learning_curves": draw.learning_curves(curves, figures_dir / "learning_curves.png")}
    points = pd.DataFrame([
        {"model": m, "params": metrics.loc[metrics["model"] == m, "params"].iloc[0],
         "flops": metrics.loc[metrics["model"] == m, "flops_forward_per_image"].iloc[0],
         "accuracy": i.mean, "ci_low": i.low, "ci_high": i.high}
        for m, i in comparison.accuracy.items()
    ])
    if "size" in probes:
        sized = advantage_by_setting(probes["size"], params.report.confidence)
        points = pd.concat([points, pd.DataFrame(
            [{"model": m, "params": row[f"params_{m}"], "flops": np.nan, "accuracy": row[m].mean, "ci_low": row[m].low,
              "ci_high": row[m].high} for _, row in sized.iterrows() for m in ("cnn", "mlp")]
        )], ignore_index=True).drop_duplicates(subset=["model", "params"])
    out["accuracy_vs_cost"] = draw.accuracy_vs_cost(points, figures_dir / "accuracy_vs_cost.png")
    confidence = params.report.confidence
    shifts, noise = robustness_points(metrics, "shift", confidence), robustness_points(metrics, "noise", confidence)
    if len(shifts) and len(noise):
        out["robustness"] = draw.robustness(shifts, noise, figures_dir / "robustness.png")
    if "fraction" in probes:
        table = advantage_by_setting(probes["fraction"], confidence)
        fraction_points = pd.DataFrame([{"model": m, "level": row["value"], "mean": row[m].mean, "low": row[m].low,
                                         "high": row[m].high} for _, row in table.iterrows() for m in ("cnn", "mlp")])
        out["fraction"] = draw.fraction_curve(fraction_points, figures_dir / "data_efficiency.png")
    throughput = pd.DataFrame([
        {"model": row["model"], "batch_size": int(column.split(".")[1].removeprefix("batch_")), "images_per_second": row[column]}
        for _, row in metrics.iterrows() for column in metrics.columns
        if column.startswith("inference.") and column.endswith(".images_per_second")
    ])
    out["throughput"] = draw.throughput_vs_batch(throughput, figures_dir / "throughput_vs_batch.png")
    matrices = {m: np.sum([np.asarray(c) for c in metrics.loc[metrics["model"] == m, "confusion_matrix"]], axis=0)
                for m in MODEL_NAMES}
    out["confusion"] = draw.confusion_matrices(matrices, classes, figures_dir / "confusion_matrices.png")
    prepared = load_prepared(paths.prepared_tensors(params.data.name), paths.prepared_manifest(params.data.name))
    test_x = normalize(prepared.tensors["test_x"], prepared.mean, prepared.std, torch.device("cpu"))
    predictions = {m: pd.read_csv(paths.predictions(m, seeds[0])) for m in MODEL_NAMES}
    labels = predictions[MODEL_NAMES[0]]["label"].astype(str).tolist()
    out["misclassified"] = draw.misclassified(
        test_x.numpy(), labels, {m: p["prediction"].astype(str).tolist() for m, p in predictions.items()},
        figures_dir / "misclassified.png",
    )
    cnn_path = paths.checkpoint("cnn", seeds[0])
    weights, maps = first_conv_maps(restore_model(load_checkpoint(cnn_path, "cnn"), cnn_path).eval(), test_x[0])
    out["filters"] = draw.filters_and_feature_maps(weights.numpy(), test_x[0].numpy(), maps.numpy(),
                                                   figures_dir / "cnn_filters.png")
    out["architecture"] = draw.architecture_diagram(
        {m: models.flow_labels(c) for m, c in architectures.items()}, figures_dir / "architectures.png"
    )
    return out


def report(params: Params, markdown_path: Path, figures_dir: Path, html_path: Path | None = None) -> ReportResult:
    """Build the comparison from every (model, seed) cell: Markdown, HTML, figures, and a parent MLflow run."""
    from pipeline.evaluate import load_checkpoint

    seeds = list(params.train.seeds)
    metrics = load_metrics(MODEL_NAMES, seeds, params.data.name)
    curves = load_curves(MODEL_NAMES, seeds)
    correctness = load_correctness(MODEL_NAMES, seeds)
    manifest_path = paths.prepared_manifest(params.data.name)
    if not manifest_path.is_file():
        raise ConvbenchError(f"{manifest_path} is missing; run `convbench prepare` first")
    manifest = json.loads(manifest_path.read_text())
    checkpoints = {(m, s): load_checkpoint(paths.checkpoint(m, s), m) for m in MODEL_NAMES for s in seeds}
    architectures = {m: checkpoints[(m, seeds[0])]["config"] for m in MODEL_NAMES}
    comparison = compare(metrics, correctness, params.report)
    probes = load_probes(params, manifest["sha256"])
    figures = draw_figures(params, metrics, curves, comparison, manifest, architectures, probes, figures_dir)
    document = build_document(params, comparison, manifest, metrics, architectures, figures, probes)
    html_path = html_path or markdown_path.with_suffix(".html")
    atomic.write_text(markdown_path, to_markdown(document, markdown_path.parent))
    atomic.write_text(html_path, to_html(document))
    tags = {"convbench.kind": "comparison", "convbench.dataset": params.data.name, "convbench.seeds": seeds}
    with tracking.run(params.tracking, params.data.name, "comparison", tags) as logger:
        logger.log_metrics(comparison_metrics(comparison))
        logger.log_artifact(markdown_path, "report")
        logger.log_artifact(html_path, "report")
        for figure in figures.values():
            logger.log_artifact(figure, "report/figures")
        children = [c["mlflow_run_id"] for c in checkpoints.values() if c.get("mlflow_run_id")]
        logger.adopt(children)
    return ReportResult(markdown_path, list(figures.values()), comparison)


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
