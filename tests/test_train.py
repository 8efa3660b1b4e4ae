"""Train stage on real digits: checkpoints, curves, MLflow histories, and CPU determinism."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import torch
from mlflow.tracking import MlflowClient

from pipeline import models, paths
from pipeline.prepare import load_prepared
from pipeline.train import EpochStats, execution_plan, fit, normalize, seconds_to_final_accuracy
from tests.conftest import Workspace, tiny_params


def test_checkpoints_load_weights_only_and_rebuild(workspace: Workspace) -> None:
    for model in ("cnn", "mlp"):
        checkpoint = torch.load(workspace.root / paths.checkpoint(model, 0), weights_only=True)
        assert checkpoint["config"]["name"] == model and checkpoint["config"]["input_shape"] == [1, 8, 8]
        rebuilt = models.build(checkpoint["config"])
        rebuilt.load_state_dict(checkpoint["state_dict"])
        assert checkpoint["train"]["epochs"] == 3 and checkpoint["train"]["train_images_per_second"] > 0
        assert 0.0 <= checkpoint["train"]["final_val_accuracy"] <= 1.0


def test_curves_have_one_row_per_epoch(workspace: Workspace) -> None:
    curves = pd.read_csv(workspace.root / paths.curves("cnn", 1))
    assert curves["epoch"].tolist() == [1, 2, 3]
    assert set(curves.columns) >= {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"}
    assert curves["train_loss"].iloc[-1] < curves["train_loss"].iloc[0], "three epochs must lower the loss"


def test_each_cell_is_one_finished_mlflow_run_with_history(workspace: Workspace) -> None:
    client = MlflowClient(workspace.tracking_uri)
    experiment = client.get_experiment_by_name("convbench-digits")
    runs = client.search_runs([experiment.experiment_id], "tags.`convbench.kind` = 'train'")
    assert sorted(r.info.run_name for r in runs) == ["cnn-s0", "cnn-s1", "mlp-s0", "mlp-s1"]
    for run in runs:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == [1, 2, 3]
        assert run.data.tags["convbench.dataset_sha256"] == load_prepared(
            workspace.root / paths.prepared_tensors("digits"), workspace.root / paths.prepared_manifest("digits")
        ).sha256
        assert run.data.tags["convbench.git_commit"]
        assert int(run.data.params["params"]) > 0


def test_model_is_logged_with_signature(workspace: Workspace) -> None:
    import mlflow

    mlflow.set_tracking_uri(workspace.tracking_uri)
    experiment = MlflowClient(workspace.tracking_uri).get_experiment_by_name("convbench-digits")
    logged = mlflow.search_logged_models([experiment.experiment_id], output_format="list")
    assert len(logged) == 4
    info = mlflow.models.get_model_info(f"models:/{logged[0].model_id}")
    assert info.signature is not None and info.signature.inputs is not None


def test_same_seed_same_result_on_cpu(workspace: Workspace) -> None:
    prepared = load_prepared(workspace.root / paths.prepared_tensors("digits"), workspace.root / paths.prepared_manifest("digits"))
    device = torch.device("cpu")
    data = {k: normalize(v, prepared.mean, prepared.std, device) if k.endswith("_x") else v for k, v in prepared.tensors.items()}
    config = models.resolve(workspace.params.model, prepared.input_shape, prepared.num_classes)["cnn"]
    outcomes = []
    for _ in range(2):
        torch.manual_seed(7)
        model = models.build(config)
        history, _seconds = fit(model, data, workspace.params.train, 7, lambda stats: None)
        outcomes.append(([dataclasses.replace(s, seconds=0.0, elapsed_seconds=0.0) for s in history], model.state_dict()))
    (first_history, first_state), (second_history, second_state) = outcomes
    assert first_history == second_history
    assert all(torch.equal(first_state[k], second_state[k]) for k in first_state)


def test_outputs_are_written_with_no_temporary_leftovers(workspace: Workspace) -> None:
    """Atomic temp files and download staging folders are dot-named; none may survive a run."""
    leftovers = [p for p in Path(workspace.root).rglob("*.tmp")]
    assert leftovers == []
    hidden = [p for p in Path(workspace.root).rglob(".*")]
    assert hidden == []


def test_execution_plan_picks_the_fast_paths_per_device() -> None:
    recipe = tiny_params(Path("/tmp")).train
    cpu = execution_plan(recipe, torch.device("cpu"), (1, 28, 28))
    assert (cpu.autocast_dtype, cpu.channels_last, cpu.fused_optimizer, cpu.compile) == (None, True, True, False)
    assert cpu.dtype_name == "float32"
    assert not execution_plan(recipe, torch.device("cpu"), (1, 40)).channels_last  # 1-D signals: no 4-D layout
    cuda = execution_plan(recipe, torch.device("cuda"), (3, 32, 32))
    assert cuda.autocast_dtype == torch.bfloat16 and cuda.dtype_name == "bfloat16 autocast"
    fp32 = execution_plan(recipe.model_copy(update={"precision": "fp32"}), torch.device("cuda"), (3, 32, 32))
    assert fp32.autocast_dtype is None


def test_seconds_to_final_accuracy_is_the_first_epoch_reaching_it() -> None:
    def epoch(n: int, accuracy: float) -> EpochStats:
        return EpochStats(n, 0.0, 0.0, 0.0, accuracy, 0.0, 1.0, elapsed_seconds=2.0 * n)

    assert seconds_to_final_accuracy([epoch(1, 0.5), epoch(2, 0.9), epoch(3, 0.8), epoch(4, 0.9)]) == 4.0
    assert seconds_to_final_accuracy([epoch(1, 0.5), epoch(2, 0.6)]) == 4.0
