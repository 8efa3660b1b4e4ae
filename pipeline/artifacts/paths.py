"""Where each stage reads and writes; dvc.yaml declares the same paths (a test keeps them in sync)."""

from __future__ import annotations

from pathlib import Path

SOURCES_DIR = Path("data/raw")
PREPARED_DIR = Path("data/prepared")
MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")
CELLS_DIR = METRICS_DIR / "cells"
CURVES_DIR = METRICS_DIR / "curves"
PREDICTIONS_DIR = METRICS_DIR / "predictions"
PROBES_DIR = METRICS_DIR / "probes"
REPORTS_DIR = Path("reports")
TUNED_DIR = Path("tuned")


def raw_dir(root: Path, dataset: str) -> Path:
    """Folder holding one dataset's raw files (torchvision's `root` for torchvision sets)."""
    return Path(root) / dataset


def source_dir(dataset: str) -> Path:
    """The download stage's DVC output, always inside the project: the raw files themselves when they live there."""
    return SOURCES_DIR / dataset


def source_manifest(dataset: str) -> Path:
    """Every raw file of one dataset, wherever it lives, with its size and sha256 (what prepare's identity follows)."""
    return source_dir(dataset) / "source.json"


def prepared_tensors(dataset: str) -> Path:
    """The split uint8 tensors of one dataset."""
    return PREPARED_DIR / f"{dataset}.pt"


def prepared_manifest(dataset: str) -> Path:
    """Shapes, classes, normalisation statistics and sha256 of the prepared tensors."""
    return PREPARED_DIR / f"{dataset}.json"


def tuned_recipe(model: str) -> Path:
    """The best recipe `convbench tune` found for one model (or, with tune.trials 0, a note that it was not tuned)."""
    return TUNED_DIR / f"{model}.yaml"


def study_storage(model: str) -> Path:
    """One model's Optuna study (SQLite): every finished trial survives a killed `convbench tune`."""
    return TUNED_DIR / f"{model}.study.db"


def cell(model: str, seed: int) -> str:
    """Name of one (model, seed) cell of the train/evaluate matrix, e.g. 'cnn-s0'."""
    return f"{model}-s{seed}"


def checkpoint(model: str, seed: int) -> Path:
    """Trained weights plus resolved model config of one cell."""
    return MODELS_DIR / f"{cell(model, seed)}.pt"


def resume_state(model: str, seed: int) -> Path:
    """Where an unfinished training run keeps its last completed epoch (deleted when training ends)."""
    return MODELS_DIR / f"{cell(model, seed)}.resume.pt"


def curves(model: str, seed: int) -> Path:
    """Per-epoch train/val loss and accuracy of one cell, as CSV for `dvc plots`."""
    return CURVES_DIR / f"{cell(model, seed)}.csv"


def metrics(model: str, seed: int) -> Path:
    """Evaluation metrics of one cell, a DVC metrics file."""
    return CELLS_DIR / f"{cell(model, seed)}.json"


def predictions(model: str, seed: int) -> Path:
    """True and predicted class of every test image of one cell, as CSV (DVC's confusion plot, paired tests)."""
    return PREDICTIONS_DIR / f"{cell(model, seed)}.csv"


def bench() -> Path:
    """Every model's speed, timed side by side in one process (the bench stage)."""
    return METRICS_DIR / "bench.json"


def probe(name: str) -> Path:
    """Every (setting, model, seed) result of one retraining probe, as JSON."""
    return PROBES_DIR / f"{name}.json"


def report_markdown() -> Path:
    """The comparison report."""
    return REPORTS_DIR / "comparison.md"


def report_html() -> Path:
    """The same comparison as one self-contained HTML page."""
    return REPORTS_DIR / "comparison.html"


def figures_dir() -> Path:
    """Figures the report links to."""
    return REPORTS_DIR / "figures"
