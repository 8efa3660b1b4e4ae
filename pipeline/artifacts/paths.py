"""Where each stage reads and writes; dvc.yaml declares the same paths (a test keeps them in sync).

Everything a dataset produces lives under its name, so a project holds several datasets' results side by side
and asking a second question never deletes the first one's answer:

    data/raw/<dataset>/              download: the raw files (or, for data outside the project, their list)
    data/prepared/<dataset>/         prepare: split uint8 tensors and their manifest
    tuned/<dataset>/                 tune: each model's recipe (and Optuna study)
    models/<dataset>/                train: each cell's checkpoint
    results/<dataset>/               train, evaluate, bench, probe: per-cell curves, metrics and predictions, the
                                     bench record, probe results (everything the report reads; not DVC metrics)
    metrics/<dataset>/               report: summary.json (the few numbers `dvc exp show` lists) and the plots
    reports/<dataset>/               report: comparison.md, comparison.html and their figures
    reports/index.md|html            overview: every dataset's verdict, and whether the lead held across datasets
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import DataError

SOURCES_DIR = Path("data/raw")
PREPARED_DIR = Path("data/prepared")
TUNED_DIR = Path("tuned")
MODELS_DIR = Path("models")
RESULTS_DIR = Path("results")
METRICS_DIR = Path("metrics")
REPORTS_DIR = Path("reports")


def raw_dir(root: Path, dataset: str) -> Path:
    """Folder holding one dataset's raw files (torchvision's `root` for torchvision sets)."""
    return Path(root) / dataset


def source_dir(dataset: str) -> Path:
    """The download stage's DVC output, always inside the project: the raw files themselves when they live there."""
    return SOURCES_DIR / dataset


def source_manifest(dataset: str) -> Path:
    """Every raw file of one dataset, wherever it lives, with its size and sha256 (what prepare's identity follows)."""
    return source_dir(dataset) / "source.json"


def prepared_dir(dataset: str) -> Path:
    """The prepare stage's output: the split tensors and their manifest."""
    return PREPARED_DIR / dataset


def prepared_tensors(dataset: str) -> Path:
    """The split uint8 tensors of one dataset."""
    return prepared_dir(dataset) / "splits.pt"


def prepared_manifest(dataset: str) -> Path:
    """Shapes, classes, normalisation statistics and sha256 of the prepared tensors."""
    return prepared_dir(dataset) / "manifest.json"


def tuned_dir(dataset: str) -> Path:
    """The tune stage's output on one dataset."""
    return TUNED_DIR / dataset


def tuned_recipe(dataset: str, model: str) -> Path:
    """The best recipe `convbench tune` found for one model (or, with tune.trials 0, a note that it was not tuned)."""
    return tuned_dir(dataset) / f"{model}.yaml"


def study_storage(dataset: str, model: str) -> Path:
    """One model's Optuna study (SQLite): every finished trial survives a killed `convbench tune`."""
    return tuned_dir(dataset) / f"{model}.study.db"


def cell(model: str, seed: int) -> str:
    """Name of one (model, seed) cell of the train/evaluate matrix, e.g. 'cnn-s0'."""
    return f"{model}-s{seed}"


def models_dir(dataset: str) -> Path:
    """The train stage's checkpoints on one dataset."""
    return MODELS_DIR / dataset


def checkpoint(dataset: str, model: str, seed: int) -> Path:
    """Trained weights plus resolved model config of one cell."""
    return models_dir(dataset) / f"{cell(model, seed)}.pt"


def resume_state(dataset: str, model: str, seed: int) -> Path:
    """Where an unfinished training run keeps its last completed epoch (deleted when training ends)."""
    return models_dir(dataset) / f"{cell(model, seed)}.resume.pt"


def results_dir(dataset: str) -> Path:
    """Everything per cell the report reads on one dataset (what the report stage depends on)."""
    return RESULTS_DIR / dataset


def curves_dir(dataset: str) -> Path:
    """The train stage's per-epoch curves on one dataset."""
    return results_dir(dataset) / "curves"


def cells_dir(dataset: str) -> Path:
    """The evaluate stage's per-cell metrics on one dataset."""
    return results_dir(dataset) / "cells"


def predictions_dir(dataset: str) -> Path:
    """The evaluate stage's per-cell test predictions on one dataset."""
    return results_dir(dataset) / "predictions"


def probes_dir(dataset: str) -> Path:
    """The probe stages' results on one dataset."""
    return results_dir(dataset) / "probes"


def curves(dataset: str, model: str, seed: int) -> Path:
    """Per-epoch train/val loss and accuracy of one cell, as CSV."""
    return curves_dir(dataset) / f"{cell(model, seed)}.csv"


def metrics(dataset: str, model: str, seed: int) -> Path:
    """Evaluation metrics of one cell (accuracy, cost, robustness, per class), as JSON."""
    return cells_dir(dataset) / f"{cell(model, seed)}.json"


def predictions(dataset: str, model: str, seed: int) -> Path:
    """True and predicted class of every test image of one cell, as CSV (the paired tests read it)."""
    return predictions_dir(dataset) / f"{cell(model, seed)}.csv"


def bench(dataset: str) -> Path:
    """Every model's speed, timed side by side in one process (the bench stage)."""
    return results_dir(dataset) / "bench.json"


def probe(dataset: str, name: str) -> Path:
    """Every (setting, model, seed) result of one retraining probe, as JSON."""
    return probes_dir(dataset) / f"{name}.json"


def summary_dir(dataset: str) -> Path:
    """What DVC shows of one dataset: the summary metrics and the plots (written by the report stage)."""
    return METRICS_DIR / dataset


def summary(dataset: str) -> Path:
    """The few numbers a reader compares, per model, flat: the DVC metrics file of one dataset."""
    return summary_dir(dataset) / "summary.json"


def learning_curves_plot(dataset: str) -> Path:
    """Per model, the mean over seeds of each epoch's curves (one CSV per model: `dvc plots show` draws a line each)."""
    return summary_dir(dataset) / "learning_curves"


def confusion_plot(dataset: str) -> Path:
    """Per model, every seed's test predictions (one CSV per model: DVC's confusion template counts them)."""
    return summary_dir(dataset) / "confusion"


def report_dir(dataset: str) -> Path:
    """One dataset's report, its HTML page and its figures."""
    return REPORTS_DIR / dataset


def report_markdown(dataset: str) -> Path:
    """The comparison report of one dataset."""
    return report_dir(dataset) / "comparison.md"


def report_html(dataset: str) -> Path:
    """The same comparison as one self-contained HTML page."""
    return report_dir(dataset) / "comparison.html"


def figures_dir(dataset: str) -> Path:
    """Figures the report links to."""
    return report_dir(dataset) / "figures"


def overview_markdown() -> Path:
    """Every dataset's verdict in one page, and whether the lead held across them: what to open first."""
    return REPORTS_DIR / "index.md"


def overview_html() -> Path:
    """The overview as one self-contained HTML page."""
    return REPORTS_DIR / "index.html"


LEGACY = (  # what the layout before per-dataset folders wrote, relative to the project
    "models/*.pt",
    "metrics/cells",
    "metrics/curves",
    "metrics/predictions",
    "metrics/probes",
    "metrics/bench.json",
    "tuned/*.yaml",
    "tuned/*.study.db",
    "data/prepared/*.pt",
    "data/prepared/*.json",
    "reports/comparison.md",
    "reports/comparison.html",
    "reports/figures",
)


def legacy_files(project: Path = Path(".")) -> list[Path]:
    """Files of the previous layout (one dataset at a time, no dataset folders) still in `project`."""
    return sorted(path for pattern in LEGACY for path in Path(project).glob(pattern) if path.exists())


def expand_user(path: str | Path, setting: str = "") -> Path:
    """`path` with a leading ~ or ~user read as a shell reads it: that home folder, never a folder named '~'.

    `setting` (data.root, dataset.<alias>.path, ...) is named when the home folder cannot be found.
    """
    given = Path(path)
    if not str(given).startswith("~"):
        return given
    try:
        return given.expanduser()
    except RuntimeError:  # no such user, or no HOME: a folder literally named '~' would be wrong
        where = f"{setting}: " if setting else ""
        raise DataError(
            f"{where}{path}: cannot expand {given.parts[0]!r} (no such user, or $HOME is not set); write the full "
            f"path instead"
        ) from None
