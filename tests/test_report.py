"""Report stage: the table follows the metrics files, the verdict follows the numbers."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import contextlib

from pipeline import paths
from pipeline.errors import ConvbenchError
from pipeline.report import load_metrics, summarize, verdict
from tests.conftest import Workspace


def test_table_shows_mean_and_std_over_seeds(workspace: Workspace) -> None:
    text = (workspace.root / paths.report_markdown()).read_text()
    for model, label in (("cnn", "CNN"), ("mlp", "MLP")):
        accuracies = pd.Series(
            [json.loads((workspace.root / paths.metrics(model, s)).read_text())["test_accuracy"] for s in (0, 1)]
        )
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} "))
        assert f"{accuracies.mean():.4f} ± {accuracies.std(ddof=1):.4f} (n=2)" in row
    assert "![Learning curves](figures/learning_curves.png)" in text
    assert "`digits`" in text


def test_learning_curve_figure_is_a_png(workspace: Workspace) -> None:
    figure = workspace.root / paths.figures_dir() / "learning_curves.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure.stat().st_size > 10_000


def test_comparison_run_carries_the_report(workspace: Workspace) -> None:
    client = MlflowClient(workspace.tracking_uri)
    experiment = client.get_experiment_by_name("convbench-digits")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`convbench.kind` = 'comparison'")
    assert run.info.run_name == "comparison" and run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert "report/comparison.md" in artifacts
    assert run.data.metrics["cnn_params"] == json.loads((workspace.root / paths.metrics("cnn", 0)).read_text())["params"]


def _metrics(cnn_accuracy: float, mlp_accuracy: float) -> pd.DataFrame:
    rows = []
    for model, accuracy, speed in (("cnn", cnn_accuracy, 1000.0), ("mlp", mlp_accuracy, 4000.0)):
        for seed, jitter in ((0, -0.001), (1, 0.001)):
            rows.append({"model": model, "seed": seed, "test_accuracy": accuracy + jitter, "params": 1000,
                         "inference_images_per_second": speed, "inference_batch_size": 256,
                         "train_images_per_second": speed / 4})
    return pd.DataFrame(rows)


def test_verdict_follows_the_numbers() -> None:
    cnn_ahead = verdict(summarize(_metrics(0.97, 0.95)))
    mlp_ahead = verdict(summarize(_metrics(0.95, 0.97)))
    assert cnn_ahead.startswith("The CNN is 2.00 percentage points more accurate than the MLP")
    assert mlp_ahead.startswith("The MLP is 2.00 percentage points more accurate than the CNN")
    assert "inference at 0.25x the MLP's speed" in cnn_ahead


def test_summary_std_is_sample_std() -> None:
    summary = summarize(_metrics(0.97, 0.95))
    assert summary.loc["cnn", "accuracy_std"] == pytest.approx(pd.Series([0.969, 0.971]).std(ddof=1))


def test_metrics_of_another_dataset_are_refused(workspace: Workspace) -> None:
    with contextlib.chdir(workspace.root), pytest.raises(ConvbenchError) as caught:
        load_metrics(("cnn", "mlp"), [0, 1], "mnist5k")
    assert "metrics of cnn-s0 (digits), cnn-s1 (digits)" in str(caught.value)
    assert str(caught.value).endswith("are not for data.name 'mnist5k'; run `dvc repro` (or train and evaluate)")


def test_missing_cell_names_the_command_to_run(workspace: Workspace) -> None:
    with contextlib.chdir(workspace.root), pytest.raises(ConvbenchError, match=r"metrics/cnn-s7.json is missing; run `convbench evaluate --model cnn --seed 7` first"):
        load_metrics(("cnn",), [7], "digits")
