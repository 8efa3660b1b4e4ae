"""Report stage: every model over seeds, compared with the reference, as Markdown, HTML, figures and an MLflow run.

The stage loads and checks the artifacts (typed records, current checkpoints), computes the comparison
(reporting/comparison.py) and hands both to the sections (reporting/sections.py), which draw the figures and
write the document; it renders that, logs it to MLflow and replaces the previous report set in one step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.artifacts import atomic, paths, records
from pipeline.artifacts.records import BenchResult, CellMetrics
from pipeline.core import cell as cells
from pipeline.core import models
from pipeline.core.data import load_prepared
from pipeline.errors import ConvbenchError
from pipeline.ops import tracking
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
    figures: list[Path]
    comparison: Comparison


def _cell_files(
    names: list[str], seeds: list[int], where: Callable[[str, int], Path], stage: str
) -> list[tuple[str, int, Path]]:
    """Every expected per-cell file; a missing one names the command that makes it."""
    found = [(model, seed, where(model, seed)) for model in names for seed in seeds]
    for model, seed, path in found:
        if not path.is_file():
            raise ConvbenchError(f"{path} is missing; run `convbench {stage} --model {model} --seed {seed}` first")
    return found


def load_metrics(names: list[str], seeds: list[int], dataset: str) -> list[CellMetrics]:
    """Every cell's metrics record, models in order, each checked as it is read (so the first bad one is named)."""
    metrics = []
    for model in names:
        for seed in seeds:
            ((_, _, path),) = _cell_files([model], [seed], paths.metrics, "evaluate")
            redo = f"run `convbench evaluate --model {model} --seed {seed}` to write it again"
            metrics.append(records.load_json(CellMetrics, path, redo))
    stale = [f"{m.model}-s{m.seed} ({m.dataset})" for m in metrics if m.dataset != dataset]
    if stale:
        raise ConvbenchError(
            f"metrics of {', '.join(stale)} are not for data.name '{dataset}'; run `dvc repro` (or train and evaluate)"
        )
    return metrics


def load_curves(names: list[str], seeds: list[int]) -> pd.DataFrame:
    """Per-epoch curves of every cell, with model and seed columns."""
    found = _cell_files(names, seeds, paths.curves, "train")
    return pd.concat([pd.read_csv(path).assign(model=m, seed=s) for m, s, path in found], ignore_index=True)


def load_predictions(names: list[str], seeds: list[int]) -> dict[tuple[str, int], pd.DataFrame]:
    """Every cell's test predictions (label, prediction), refused unless all cells scored the same test images."""
    frames = {(m, s): pd.read_csv(path) for m, s, path in _cell_files(names, seeds, paths.predictions, "evaluate")}
    reference = frames[(names[0], seeds[0])]
    for (model, seed), frame in frames.items():
        if len(frame) != len(reference) or not frame["label"].equals(reference["label"]):
            raise ConvbenchError(
                f"{paths.predictions(model, seed)} scores other test images than "
                f"{paths.predictions(names[0], seeds[0])}; run `dvc repro` so every cell is evaluated on the same split"
            )
    return frames


def correctness(
    predictions: dict[tuple[str, int], pd.DataFrame], names: list[str], seeds: list[int]
) -> dict[str, np.ndarray]:
    """Per model, a (seeds, test images) boolean array of which test images each seed got right."""
    return {
        m: np.stack([(predictions[(m, s)]["label"] == predictions[(m, s)]["prediction"]).to_numpy() for s in seeds])
        for m in names
    }


def load_bench(names: list[str], dataset: str) -> BenchResult:
    """metrics/bench.json, refused when it timed other models or another dataset."""
    path = paths.bench()
    if not path.is_file():
        raise ConvbenchError(f"{path} is missing; run `convbench bench` (or `dvc repro`)")
    bench = records.load_json(BenchResult, path, "run `convbench bench` again")
    if sorted(bench.models) != sorted(names) or bench.dataset != dataset:
        raise ConvbenchError(
            f"{path} timed {bench.models} on '{bench.dataset}', not {names} on '{dataset}'; run `convbench bench`"
        )
    return bench


def gather(params: Params, figures_dir: Path) -> ReportInputs:
    """Every artifact the report reads, each checked current, and the comparison computed from them."""
    seeds, names = list(params.train.seeds), list(params.models)
    metrics = load_metrics(names, seeds, params.data.name)
    curves = load_curves(names, seeds)
    predictions = load_predictions(names, seeds)
    right = correctness(predictions, names, seeds)
    prepared = load_prepared(paths.prepared_tensors(params.data.name), paths.prepared_manifest(params.data.name))
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


def report(params: Params, markdown_path: Path, figures_dir: Path, html_path: Path | None = None) -> ReportResult:
    """Build the comparison from every (model, seed) cell: Markdown, HTML, figures, and a parent MLflow run."""
    inputs = gather(params, figures_dir)
    html_path = html_path or markdown_path.with_suffix(".html")
    # Everything is drawn and rendered in a staging folder and logged to MLflow from there; only when all of
    # that worked do the files replace the previous report, so a failure leaves the previous set as it was.
    with atomic.staged_folder(markdown_path.parent) as stage:
        staged_figures = stage / figures_dir.relative_to(markdown_path.parent)
        document = build_document(dataclasses.replace(inputs, figures_dir=staged_figures))
        staged_markdown, staged_html = stage / markdown_path.name, stage / html_path.name
        atomic.write_text(staged_markdown, to_markdown(document, stage))
        atomic.write_text(staged_html, to_html(document))
        figures = figures_of(document)
        _log(inputs, [staged_markdown, staged_html], figures)
        atomic.replace_set({staged_markdown: markdown_path, staged_html: html_path, staged_figures: figures_dir})
    return ReportResult(markdown_path, [figures_dir / path.name for path in figures], inputs.comparison)


def _log(inputs: ReportInputs, documents: list[Path], figures: list[Path]) -> None:
    """The comparison MLflow run: its params, the verdict as its description, headline metrics (rounded), the
    report files, and every cell's run nested under it."""
    from pipeline.ops import comparison_run

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
