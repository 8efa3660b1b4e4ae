"""Report stage: every model over seeds on one dataset, compared with the reference, as Markdown, HTML, figures,
DVC's summary metrics and plots, and an MLflow run.

The stage loads and checks the artifacts (typed records, current checkpoints), computes the comparison
(reporting/comparison.py) and hands both to the sections (reporting/sections.py), which draw the figures and
write the document; it renders that, writes the summary DVC shows (metrics/<dataset>/summary.json, mean learning
curves and confusion data for `dvc plots`), logs it to MLflow and replaces the previous set in one step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.artifacts import atomic, paths, records
from pipeline.artifacts.bench_record import BenchResult
from pipeline.artifacts.records import CellMetrics, Summary
from pipeline.core import cell as cells
from pipeline.core import models
from pipeline.core.data import load_prepared
from pipeline.errors import ConvbenchError
from pipeline.ops import comparison_run, tracking
from pipeline.params import Params
from pipeline.reporting import tuning
from pipeline.reporting.comparison import Comparison, compare, comparison_metrics, speed_cases
from pipeline.reporting.inputs import ReportInputs
from pipeline.reporting.probes import load_probes
from pipeline.reporting.render import to_html, to_markdown
from pipeline.reporting.sections import build_document, figures_of


@dataclass(frozen=True)
class ReportResult:
    """Files the report stage wrote and the comparison behind them."""

    markdown: Path
    html: Path
    summary: Path
    figures: list[Path]
    comparison: Comparison


def _cell_files(
    dataset: str, names: list[str], seeds: list[int], where: Callable[[str, str, int], Path], stage: str
) -> list[tuple[str, int, Path]]:
    """Every expected per-cell file; a missing one names the command that makes it."""
    found = [(model, seed, where(dataset, model, seed)) for model in names for seed in seeds]
    for model, seed, path in found:
        if not path.is_file():
            raise ConvbenchError(
                f"{path} is missing; run `convbench {stage} --dataset {dataset} --model {model} --seed {seed}` first"
            )
    return found


def load_metrics(names: list[str], seeds: list[int], dataset: str) -> list[CellMetrics]:
    """Every cell's metrics record, models in order, each checked as it is read (so the first bad one is named)."""
    metrics = []
    for model in names:
        for seed in seeds:
            ((_, _, path),) = _cell_files(dataset, [model], [seed], paths.metrics, "evaluate")
            redo = f"run `convbench evaluate --dataset {dataset} --model {model} --seed {seed}` to write it again"
            metrics.append(records.load_json(CellMetrics, path, redo))
    stale = [f"{m.model}-s{m.seed} ({m.dataset})" for m in metrics if m.dataset != dataset]
    if stale:
        raise ConvbenchError(
            f"metrics of {', '.join(stale)} are not for dataset '{dataset}'; run `dvc repro` (or train and evaluate)"
        )
    return metrics


CURVE_FILE_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "seconds",
    "elapsed_seconds",
)  # what the train stage writes, one row per epoch


def _read_csv(path: Path, redo: str) -> pd.DataFrame:
    """A CSV convbench wrote, every field read as the text it is: a class named None, NA or 01 stays that name
    (pandas' defaults would turn them into NaN or the number 1). A file that is not such a CSV is one line."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:  # UnicodeDecodeError is a ValueError
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConvbenchError(f"{path} is not a readable CSV file ({reason}); {redo}") from None


def _damaged(path: Path, problem: str, redo: str) -> ConvbenchError:
    return ConvbenchError(f"{path} {problem}, so it is damaged or was not written by this convbench; {redo}")


def load_curves(
    dataset: str, names: list[str], seeds: list[int], epochs: dict[tuple[str, int], int] | None = None
) -> pd.DataFrame:
    """Per-epoch curves of every cell, with model and seed columns, each checked as it is read: the train stage's
    columns, all numbers, and one row per epoch 1..N (N from the cell's metrics, where `epochs` gives it)."""
    found = _cell_files(dataset, names, seeds, paths.curves, "train")
    frames = []
    for model, seed, path in found:
        redo = f"run `convbench train --dataset {dataset} --model {model} --seed {seed}` to write it again"
        text = _read_csv(path, redo)
        missing = [c for c in CURVE_FILE_COLUMNS if c not in text.columns]
        if missing:
            raise _damaged(path, f"lacks the column(s) {', '.join(missing)}", redo)
        numbers = text[list(CURVE_FILE_COLUMNS)].apply(pd.to_numeric, errors="coerce")
        bad = numbers.isna() | ~np.isfinite(numbers.to_numpy(dtype=float))
        if bad.to_numpy().any():
            row, column = next((r, c) for r, c in zip(*np.nonzero(bad.to_numpy())))
            value = text[CURVE_FILE_COLUMNS[column]].iloc[row]
            raise _damaged(
                path, f"has {value!r} as {CURVE_FILE_COLUMNS[column]} in row {row + 1} where a number belongs", redo
            )
        expected = (epochs or {}).get((model, seed), len(numbers))
        if numbers["epoch"].tolist() != list(range(1, expected + 1)):
            raise _damaged(
                path,
                f"has {len(numbers)} row(s) with epochs {_epochs_text(numbers['epoch'].tolist())}, not one row for "
                f"each of the {expected} epochs the cell was trained",
                redo,
            )
        frames.append(numbers.astype({"epoch": "int64"}).assign(model=model, seed=seed))
    return pd.concat(frames, ignore_index=True)


def _epochs_text(values: list[float]) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:6])
    return f"{shown}, ..." if len(values) > 6 else shown or "none"


def load_predictions(
    dataset: str,
    names: list[str],
    seeds: list[int],
    classes: tuple[str, ...] | None = None,
    test_size: int | None = None,
) -> dict[tuple[str, int], pd.DataFrame]:
    """Every cell's test predictions (label, prediction) as class names, each checked as it is read: one row per test
    image (`test_size`), and every label and prediction one of the dataset's `classes`; then refused unless all cells
    scored the same test images."""
    found = _cell_files(dataset, names, seeds, paths.predictions, "evaluate")
    frames = {(m, s): _predictions(path, dataset, m, s, classes, test_size) for m, s, path in found}
    reference = frames[(names[0], seeds[0])]
    for (model, seed), frame in frames.items():
        if len(frame) != len(reference) or not frame["label"].equals(reference["label"]):
            raise ConvbenchError(
                f"{paths.predictions(dataset, model, seed)} scores other test images than "
                f"{paths.predictions(dataset, names[0], seeds[0])}; run `dvc repro` so every cell is evaluated on "
                f"the same split"
            )
    return frames


def _predictions(
    path: Path, dataset: str, model: str, seed: int, classes: tuple[str, ...] | None, test_size: int | None
) -> pd.DataFrame:
    """One cell's predictions CSV, checked against the prepared test split."""
    redo = f"run `convbench evaluate --dataset {dataset} --model {model} --seed {seed}` to write it again"
    frame = _read_csv(path, redo)
    missing = [c for c in ("index", "label", "prediction") if c not in frame.columns]
    if missing:
        raise _damaged(path, f"lacks the column(s) {', '.join(missing)}", redo)
    if test_size is not None and len(frame) != test_size:
        raise _damaged(path, f"has {len(frame):,} row(s) for the {test_size:,} test images", redo)
    if frame["index"].tolist() != [str(i) for i in range(len(frame))]:
        raise _damaged(path, "does not number its rows 0, 1, 2, ... (rows are missing or out of order)", redo)
    if classes is not None:
        known = set(classes)
        for column in ("label", "prediction"):
            unknown = [v for v in frame[column] if v not in known]
            if unknown:
                raise _damaged(
                    path, f"has {column} {unknown[0]!r}, which is not one of the dataset's {len(known)} classes", redo
                )
    return frame[["label", "prediction"]]


def correctness(
    predictions: dict[tuple[str, int], pd.DataFrame], names: list[str], seeds: list[int]
) -> dict[str, np.ndarray]:
    """Per model, a (seeds, test images) boolean array of which test images each seed got right."""
    return {
        m: np.stack([(predictions[(m, s)]["label"] == predictions[(m, s)]["prediction"]).to_numpy() for s in seeds])
        for m in names
    }


def load_bench(names: list[str], dataset: str) -> BenchResult:
    """results/<dataset>/bench.json, refused when it timed other models or another dataset."""
    path = paths.bench(dataset)
    redo = f"run `convbench bench --dataset {dataset}`"
    if not path.is_file():
        raise ConvbenchError(f"{path} is missing; {redo} (or `dvc repro`)")
    bench = records.load_json(BenchResult, path, f"{redo} again")
    if sorted(bench.models) != sorted(names) or bench.dataset != dataset:
        raise ConvbenchError(f"{path} timed {bench.models} on '{bench.dataset}', not {names} on '{dataset}'; {redo}")
    return bench


def gather(params: Params, figures_dir: Path) -> ReportInputs:
    """Every artifact the report reads, each checked current, and the comparison computed from them."""
    seeds, names, dataset = list(params.train.seeds), list(params.models), params.data.name
    metrics = load_metrics(names, seeds, dataset)
    curves = load_curves(dataset, names, seeds, {(m.model, m.seed): m.epochs for m in metrics})
    prepared = load_prepared(paths.prepared_tensors(dataset), paths.prepared_manifest(dataset))
    predictions = load_predictions(dataset, names, seeds, prepared.classes, len(prepared.splits.test))
    right = correctness(predictions, names, seeds)
    resolved = cells.resolve(params, prepared, names, seeds)
    trained = {c.name: c.trained(prepared) for c in resolved}
    configs = {c.model: c.config for c in resolved}
    bench = load_bench(names, params.data.name)
    comparison = compare(
        metrics,
        right,
        params.report,
        names,
        params.reference_model,
        {m: c.label for m, c in configs.items()},
        speed_cases(bench),
        models.ladder(configs),
        {m: c.role for m, c in configs.items()},
    )
    return ReportInputs(
        params=params,
        comparison=comparison,
        metrics=metrics,
        curves=curves,
        predictions={m: predictions[(m, seeds[0])] for m in names},
        bench=bench,
        probes=load_probes(params, prepared.sha256),
        tuned=tuning.load(params, prepared.sha256),
        cells=resolved,
        checkpoints=trained,
        prepared=prepared,
        commit=tracking.git_commit(),
        figures_dir=figures_dir,
    )


def report(params: Params) -> ReportResult:
    """Build the comparison of one dataset from every (model, seed) cell: Markdown, HTML, figures, DVC's summary
    and plots, and a parent MLflow run."""
    dataset = params.data.name
    markdown_path, html_path, figures_dir = (
        paths.report_markdown(dataset),
        paths.report_html(dataset),
        paths.figures_dir(dataset),
    )
    inputs = gather(params, figures_dir)
    # Everything is drawn and rendered in a staging folder and logged to MLflow from there; only when all of
    # that worked do the files replace the previous set, so a failure leaves the previous set as it was.
    with atomic.staged_folder(markdown_path.parent) as stage:
        staged_figures = stage / figures_dir.relative_to(markdown_path.parent)
        document = build_document(dataclasses.replace(inputs, figures_dir=staged_figures))
        staged_markdown, staged_html = stage / markdown_path.name, stage / html_path.name
        atomic.write_text(staged_markdown, to_markdown(document, stage))
        atomic.write_text(staged_html, to_html(document))
        figures = figures_of(document)
        staged_summary = summarize(inputs.comparison).save(stage / "summary.json")
        staged_curves = write_learning_curves(inputs.curves, stage / "learning_curves")
        staged_confusion = write_confusion(inputs.predictions, stage / "confusion")
        _log(inputs, [staged_markdown, staged_html], figures)
        atomic.replace_set(
            {
                staged_markdown: markdown_path,
                staged_html: html_path,
                staged_figures: figures_dir,
                staged_summary: paths.summary(dataset),
                staged_curves: paths.learning_curves_plot(dataset),
                staged_confusion: paths.confusion_plot(dataset),
            }
        )
    return ReportResult(
        markdown_path,
        html_path,
        paths.summary(dataset),
        [figures_dir / path.name for path in figures],
        inputs.comparison,
    )


def summarize(comparison: Comparison) -> Summary:
    """The numbers `dvc exp show` lists for this dataset, rounded to what the seeds can tell apart."""
    models = comparison.models
    size, flops = comparison.axis("parameters"), comparison.axis("forward_flops_image")
    step = comparison.throughput("training_step")
    pairs = comparison.pairs
    return Summary(
        accuracy={m: round(comparison.accuracy[m].mean, 4) for m in models},
        accuracy_ci={m: round(i.half_width, 4) for m, i in comparison.accuracy.items() if i.n > 1},
        lead={m: round(pairs[m].difference.difference, 4) for m in pairs},
        lead_low={m: round(pairs[m].difference.low, 4) for m in pairs},
        lead_high={m: round(pairs[m].difference.high, 4) for m in pairs},
        params={m: round(size.means[m]) for m in models},
        mflops={m: float(f"{flops.means[m] * 1e-6:.4g}") for m in models},
        train_img_s={m: float(round(step.values[m])) for m in models} if step is not None else {},
    )


CURVE_COLUMNS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")  # not timings: they differ per run


def write_learning_curves(curves: pd.DataFrame, folder: Path) -> Path:
    """One CSV per model: each epoch's numbers averaged over seeds (`dvc plots show` draws one line per model)."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = [c for c in CURVE_COLUMNS if c in curves.columns]
    means = curves.groupby(["model", "epoch"], sort=False)[columns].mean().round(4).reset_index()
    for model, rows in means.groupby("model", sort=False):
        atomic.write_text(folder / f"{model}.csv", rows.drop(columns=["model"]).to_csv(index=False))
    return folder


def write_confusion(predictions: dict[str, pd.DataFrame], folder: Path) -> Path:
    """One CSV per model: the first seed's label and prediction of every test image (DVC's confusion template)."""
    folder.mkdir(parents=True, exist_ok=True)
    for model, frame in predictions.items():
        atomic.write_text(folder / f"{model}.csv", frame[["label", "prediction"]].to_csv(index=False))
    return folder


def _log(inputs: ReportInputs, documents: list[Path], figures: list[Path]) -> None:
    """The comparison MLflow run: its params, the verdict as its description, headline metrics (rounded), the
    report files, and every cell's run nested under it."""
    params = inputs.params
    tags = {
        "convbench.kind": "comparison",
        "convbench.dataset": params.data.name,
        "convbench.seeds": inputs.seeds,
        "convbench.models": list(params.models),
    }
    with tracking.run(params.tracking, params.data.name, "comparison", tags) as logger:
        comparison_run.record(logger, inputs, comparison_metrics(inputs.comparison))
        for document in documents:
            logger.log_artifact(document, "report")
        for figure in figures:
            logger.log_artifact(figure, "report/figures")
        logger.adopt([c.mlflow_run_id for c in inputs.checkpoints.values() if c.mlflow_run_id])
