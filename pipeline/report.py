"""Report stage: CNN vs MLP over seeds as a Markdown table and a learning-curve figure."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline import atomic, paths, tracking
from pipeline.errors import ConvbenchError
from pipeline.models import MODEL_NAMES
from pipeline.params import Params

MODEL_LABELS = {"cnn": "CNN", "mlp": "MLP"}
COLORS = {"cnn": "tab:blue", "mlp": "tab:orange"}


@dataclass(frozen=True)
class ReportResult:
    """Files the report stage wrote and the summary table behind them."""

    markdown: Path
    figures: list[Path]
    summary: pd.DataFrame


def _cell_files(models: tuple[str, ...], seeds: list[int], where: Callable[[str, int], Path], stage: str) -> list[tuple[str, int, Path]]:
    """Every expected per-cell file; a missing one names the command that makes it."""
    cells = [(model, seed, where(model, seed)) for model in models for seed in seeds]
    for model, seed, path in cells:
        if not path.is_file():
            raise ConvbenchError(f"{path} is missing; run `convbench {stage} --model {model} --seed {seed}` first")
    return cells


def load_metrics(models: tuple[str, ...], seeds: list[int], dataset: str) -> pd.DataFrame:
    """One row per (model, seed) from metrics/<model>-s<seed>.json, all of them for `dataset`."""
    rows = [json.loads(path.read_text()) for _m, _s, path in _cell_files(models, seeds, paths.metrics, "evaluate")]
    stale = [f"{row['model']}-s{row['seed']} ({row['dataset']})" for row in rows if row["dataset"] != dataset]
    if stale:
        raise ConvbenchError(
            f"metrics of {', '.join(stale)} are not for data.name '{dataset}'; run `dvc repro` (or train and evaluate)"
        )
    return pd.DataFrame(rows)


def load_curves(models: tuple[str, ...], seeds: list[int]) -> pd.DataFrame:
    """Per-epoch curves of every cell, with model and seed columns."""
    cells = _cell_files(models, seeds, paths.curves, "train")
    return pd.concat([pd.read_csv(path).assign(model=m, seed=s) for m, s, path in cells], ignore_index=True)


def summarize(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample standard deviation over seeds of each model's headline numbers."""
    grouped = metrics.groupby("model", sort=False)
    return pd.DataFrame(
        {
            "seeds": grouped["seed"].count(),
            "accuracy_mean": grouped["test_accuracy"].mean(),
            "accuracy_std": grouped["test_accuracy"].std(ddof=1).fillna(0.0),
            "params": grouped["params"].first(),
            "inference_images_per_second": grouped["inference_images_per_second"].mean(),
            "inference_batch_size": grouped["inference_batch_size"].first(),
            "train_images_per_second": grouped["train_images_per_second"].mean(),
        }
    )


def summary_table(summary: pd.DataFrame) -> str:
    """The summary as a GitHub Markdown table."""
    table = pd.DataFrame(
        {
            "Model": [MODEL_LABELS.get(m, m) for m in summary.index],
            "Test accuracy (mean ± std)": [
                f"{row.accuracy_mean:.4f} ± {row.accuracy_std:.4f} (n={row.seeds})" for row in summary.itertuples()
            ],
            "Parameters": [f"{int(p):,}" for p in summary["params"]],
            "Inference (img/s)": [
                f"{row.inference_images_per_second:,.0f} @ batch {int(row.inference_batch_size)}"
                for row in summary.itertuples()
            ],
            "Training (img/s)": [f"{v:,.0f}" for v in summary["train_images_per_second"]],
        }
    )
    return table.to_markdown(index=False)


def verdict(summary: pd.DataFrame) -> str:
    """One factual sentence comparing the CNN with the MLP, generated from the numbers."""
    cnn, mlp = summary.loc["cnn"], summary.loc["mlp"]
    gap = (cnn.accuracy_mean - mlp.accuracy_mean) * 100
    leader, trailer = ("CNN", "MLP") if gap >= 0 else ("MLP", "CNN")
    size = cnn.params / mlp.params
    speed = cnn.inference_images_per_second / mlp.inference_images_per_second
    return (
        f"The {leader} is {abs(gap):.2f} percentage points more accurate than the {trailer} "
        f"at {size:.3f}x the MLP's parameter count; the CNN runs inference at {speed:.2f}x the MLP's speed "
        f"and trains at {cnn.train_images_per_second / mlp.train_images_per_second:.2f}x its speed."
    )


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


def render_markdown(params: Params, summary: pd.DataFrame, manifest: dict, metrics: pd.DataFrame, figure: Path) -> str:
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
            f"({context['device_name']}, {context['threads']} threads, torch {context['torch']}), "
            f"git commit `{tracking.git_commit()}`.",
            "",
            "## Results",
            "",
            summary_table(summary),
            "",
            verdict(summary),
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
    manifest_path = paths.prepared_manifest(params.data.name)
    if not manifest_path.is_file():
        raise ConvbenchError(f"{manifest_path} is missing; run `convbench prepare` first")
    manifest = json.loads(manifest_path.read_text())
    summary = summarize(metrics)
    figure = plot_learning_curves(curves, figures_dir / "learning_curves.png")
    atomic.write_text(markdown_path, render_markdown(params, summary, manifest, metrics, figure))
    tags = {"convbench.kind": "comparison", "convbench.dataset": params.data.name, "convbench.seeds": seeds}
    with tracking.run(params.tracking, params.data.name, "comparison", tags) as logger:
        logger.log_metrics(
            {f"{model}_{column}": float(value) for model, row in summary.iterrows() for column, value in row.items()}
        )
        logger.log_artifact(markdown_path, "report")
        logger.log_artifact(figure, "report/figures")
    return ReportResult(markdown_path, [figure], summary)
