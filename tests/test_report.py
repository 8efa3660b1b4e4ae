"""Report stage: the table follows the metrics files, the verdict follows the numbers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import contextlib

from pipeline import paths
from pipeline.errors import ConvbenchError
from pipeline.params import ReportParams
from pipeline.report import axes_frame, compare, load_metrics, paired_sentence, verdict
from pipeline.stats import t_interval
from tests.conftest import Workspace

SETTINGS = ReportParams(confidence=0.95, bootstrap_resamples=1000, bootstrap_seed=0)


def test_tables_show_intervals_paired_test_and_every_axis(workspace: Workspace) -> None:
    text = (workspace.root / paths.report_markdown()).read_text()
    for model, label in (("cnn", "CNN"), ("mlp", "MLP")):
        accuracies = [json.loads((workspace.root / paths.metrics(model, s)).read_text())["test_accuracy"] for s in (0, 1)]
        interval = t_interval(accuracies, 0.95)
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} "))
        assert f"{interval.mean:.4f} ± {interval.std:.4f}" in row and f"[{interval.low:.4f}, {interval.high:.4f}]" in row
    assert "Exact McNemar test" in text and "paired-bootstrap CI" in text
    for axis in ("Forward FLOPs / image (MFLOP)", "Inference @ batch 1 (img/s)", "Inference @ batch 256 (img/s)",
                 "Latency @ batch 1, p95 (ms)", "MFU, training (%)", "Peak memory, training step (MiB)"):
        assert f"| {axis}" in text
    assert "| Parameters " in text and "tie (within 1%)" in text
    for figure in ("learning_curves", "confusion_matrices", "accuracy_vs_cost", "throughput_vs_batch", "cnn_filters",
                   "misclassified", "architectures"):
        assert f"](figures/{figure}.png)" in text
        assert (workspace.root / paths.figures_dir() / f"{figure}.png").read_bytes()[:4] == b"\x89PNG"
    assert "```mermaid\ngraph TD" in text and "| Linear(5408->128)" not in text  # digits are 8x8: 32*3*3 features
    assert "| Linear(288->128)" in text
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
    assert {"report/comparison.md", "report/comparison.html"} <= artifacts
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "report/figures")}
    assert "report/figures/confusion_matrices.png" in figures and "report/figures/cnn_filters.png" in figures
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert sorted(child.info.run_name for child in children) == ["cnn-s0", "cnn-s1", "mlp-s0", "mlp-s1"]
    assert run.data.metrics["cnn_parameters"] == json.loads((workspace.root / paths.metrics("cnn", 0)).read_text())["params"]
    assert 0 <= run.data.metrics["mcnemar_p_value"] <= 1
    assert run.data.metrics["accuracy_difference_ci_low"] <= run.data.metrics["accuracy_difference"]


def _metrics(cnn_accuracy: float, mlp_accuracy: float, cnn_speed: float = 1000.0) -> pd.DataFrame:
    rows = []
    for model, accuracy, speed in (("cnn", cnn_accuracy, cnn_speed), ("mlp", mlp_accuracy, 4000.0)):
        for seed, jitter in ((0, -0.001), (1, 0.001), (2, 0.0)):
            rows.append({
                "model": model, "seed": seed, "test_accuracy": accuracy + jitter, "params": 1000,
                "flops_forward_per_image": 3e6 if model == "cnn" else 1e6, "flops_train_step_per_image": 9e6,
                "inference.batch_1.images_per_second": speed / 10 * (1 + jitter),
                "inference.batch_256.images_per_second": speed * (1 + jitter),
                "train_images_per_second": speed / 4 * (1 + jitter), "seconds_to_final_accuracy": 10.0 + seed,
                "latency.median_ms": 1.0, "latency.p95_ms": 1.5, "peak_memory_mb.train_step": 10.0 + seed,
                "peak_memory_mb.inference": 5.0, "mfu.train": 0.1, "mfu.inference": 0.2,
            })
    return pd.DataFrame(rows)


def _correctness(cnn_right: int, mlp_right: int, items: int = 1000) -> dict[str, np.ndarray]:
    """Three seeds; the models agree on most items, the first `right` items are the ones each gets right."""
    index = np.arange(items)
    return {"cnn": np.stack([index < cnn_right] * 3), "mlp": np.stack([index < mlp_right] * 3)}


def test_verdict_follows_the_numbers() -> None:
    cnn_ahead = verdict(compare(_metrics(0.97, 0.95), _correctness(970, 950), SETTINGS))
    mlp_ahead = verdict(compare(_metrics(0.95, 0.97), _correctness(950, 970), SETTINGS))
    assert cnn_ahead.startswith("The CNN is more accurate than the MLP by 2.00 percentage points")
    assert mlp_ahead.startswith("The MLP is more accurate than the CNN by 2.00 percentage points")
    assert "the same parameter budget" in cnn_ahead and "3.00x the MLP's FLOPs per image" in cnn_ahead
    assert "runs inference at 0.25x its speed (batch 256)" in cnn_ahead
    assert "bought with compute" in cnn_ahead and "both more accurate and faster" in mlp_ahead


def test_verdict_says_when_accuracy_is_indistinguishable() -> None:
    tied = compare(_metrics(0.951, 0.950), _correctness(951, 950), SETTINGS)
    assert tied.accuracy_winner is None and tied.mcnemar.p_value == pytest.approx(0.25)  # 3 discordant, all one way
    assert verdict(tied).startswith("On accuracy the two models are statistically indistinguishable")
    assert "**not significant**" in paired_sentence(tied)


def test_axes_name_the_better_model_only_when_significant() -> None:
    rows = compare(_metrics(0.97, 0.95, cnn_speed=1000.0), _correctness(970, 950), SETTINGS).axes.set_index("label")
    assert rows.loc["Parameters", "winner"] == "tie"
    assert rows.loc["Forward FLOPs / image", "winner"] == "mlp" and rows.loc["Forward FLOPs / image", "ratio"] == 3.0
    assert rows.loc["Inference @ batch 256", "winner"] == "mlp"  # 4x faster, tiny spread
    assert rows.loc["Training-step FLOPs / image", "winner"] == "tie"
    assert rows.loc["Time to final accuracy", "winner"] == "not significant"  # identical per-seed values
    assert rows.loc["Latency @ batch 1, median", "p_value"] == 1.0
    close = compare(_metrics(0.97, 0.95, cnn_speed=4001.0), _correctness(970, 950), SETTINGS).axes.set_index("label")
    assert close.loc["Inference @ batch 256", "winner"] == "not significant"
    better = axes_frame(compare(_metrics(0.97, 0.95, 4001.0), _correctness(970, 950), SETTINGS)).set_index("Axis")["Better"]
    assert better["Inference @ batch 256 (img/s)"].startswith("neither (not significant")
    assert better["Parameters"] == "tie (within 1%)" and better["Forward FLOPs / image (MFLOP)"] == "**MLP** (3.00x lower)"


def test_metrics_of_another_dataset_are_refused(workspace: Workspace) -> None:
    with contextlib.chdir(workspace.root), pytest.raises(ConvbenchError) as caught:
        load_metrics(("cnn", "mlp"), [0, 1], "mnist5k")
    assert "metrics of cnn-s0 (digits), cnn-s1 (digits)" in str(caught.value)
    assert str(caught.value).endswith("are not for data.name 'mnist5k'; run `dvc repro` (or train and evaluate)")


def test_missing_cell_names_the_command_to_run(workspace: Workspace) -> None:
    with contextlib.chdir(workspace.root), pytest.raises(ConvbenchError, match=r"metrics/cnn-s7.json is missing; run `convbench evaluate --model cnn --seed 7` first"):
        load_metrics(("cnn",), [7], "digits")
