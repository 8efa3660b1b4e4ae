"""Evaluate stage: metrics that agree with each other, and refusing mismatched checkpoints."""

from __future__ import annotations

import json
import re

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.artifacts import paths
from pipeline.core.runtime import FLOPS_PER_THREAD
from pipeline.stages.evaluate import confusion_matrix
from tests.conftest import Workspace


def read_metrics(workspace: Workspace, model: str, seed: int) -> dict:
    return json.loads((workspace.root / paths.metrics("digits", model, seed)).read_text())


def test_metrics_are_consistent(workspace: Workspace) -> None:
    for model in workspace.params.models:
        metrics = read_metrics(workspace, model, 0)
        confusion = torch.tensor(metrics["confusion_matrix"])
        assert confusion.sum().item() == metrics["test_size"] == 360
        assert metrics["test_accuracy"] == pytest.approx(confusion.trace().item() / confusion.sum().item())
        per_class = [confusion[i, i].item() / confusion[i].sum().item() for i in range(10)]
        assert list(metrics["per_class_accuracy"].values()) == pytest.approx(per_class)
        assert metrics["context"]["device"] == "cpu" and metrics["context"]["threads"] >= 1
        reason = metrics["context"]["threads_reason"]  # training's rule, for a scoring batch
        found = re.search(r"^auto: [\d,]+ MFLOP per scoring batch, (\d+) core\(s\) available$", reason)
        assert found, reason
        batch = metrics["flops_forward_per_image"] * workspace.params.evaluate.batch_size
        assert metrics["context"]["threads"] == max(1, min(int(found.group(1)), int(batch // FLOPS_PER_THREAD)))
        assert metrics["context"]["dtype"] == "float32" and metrics["context"]["torch"] == torch.__version__


def test_metrics_carry_every_cost_figure(workspace: Workspace) -> None:
    for model in workspace.params.models:
        metrics = read_metrics(workspace, model, 0)
        assert metrics["flops_train_step_per_image"] > metrics["flops_forward_per_image"] > 0
        # counted separately: all parameters, and those with requires_grad (every one, for convbench's models)
        assert (
            metrics["trainable_params"]
            == metrics["params"]
            == sum(
                t.numel()
                for t in torch.load(workspace.root / paths.checkpoint("digits", model, 0), weights_only=True)[
                    "state_dict"
                ].values()
            )
        )
        assert metrics["peak_memory_mb"]["train_step"] > 0 and metrics["peak_memory_mb"]["inference"] > 0
        assert 0 < metrics["seconds_to_final_accuracy"] and metrics["train_images_per_second"] > 0
        assert not {"inference", "latency", "mfu"} & set(metrics), "speed is timed side by side by the bench stage"
        for figure in ("flops_forward_per_image", "peak_memory_mb.*", "robustness.shift.<k>"):
            assert figure in metrics["units"]


def test_predictions_file_pairs_labels_with_predictions(workspace: Workspace) -> None:
    import pandas as pd

    metrics = read_metrics(workspace, "cnn", 0)
    table = pd.read_csv(workspace.root / paths.predictions("digits", "cnn", 0))
    assert list(table.columns) == ["index", "label", "prediction"] and len(table) == metrics["test_size"]
    assert (table["label"] == table["prediction"]).mean() == pytest.approx(metrics["test_accuracy"])


def test_matched_parameter_counts_reach_the_metrics(workspace: Workspace) -> None:
    cnn, mlp = read_metrics(workspace, "cnn", 1)["params"], read_metrics(workspace, "mlp", 1)["params"]
    assert abs(cnn - mlp) / cnn <= 0.01


def test_evaluation_lands_in_the_training_run(workspace: Workspace) -> None:
    checkpoint = torch.load(workspace.root / paths.checkpoint("digits", "mlp", 1), weights_only=True)
    client = MlflowClient(workspace.tracking_uri)
    run = client.get_run(checkpoint["mlflow_run_id"])
    assert run.info.run_name == "mlp-s1"
    metrics = read_metrics(workspace, "mlp", 1)
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert run.data.metrics["peak_memory_mb.train_step"] == pytest.approx(metrics["peak_memory_mb"]["train_step"])
    assert run.data.tags["convbench.context.threads"] == str(metrics["context"]["threads"])
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 3
    assert run.info.status == "FINISHED"


def test_confusion_matrix_counts_true_by_predicted() -> None:
    labels, predictions = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 1, 1, 2, 0])
    assert confusion_matrix(labels, predictions, 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
