"""Train stage on real digits: checkpoints, curves, MLflow histories, and CPU determinism."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline import models, paths
from pipeline.prepare import load_prepared
from pipeline.train import EpochStats, execution_plan, fit, normalize, seconds_to_final_accuracy
from pipeline.errors import ConvbenchError
from tests.conftest import Workspace, tiny_params
from tests.helpers import BIN, env, run, write_params


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


def _train_process(project: Path, store: str) -> subprocess.Popen:
    return subprocess.Popen(["convbench", "train", "-m", "cnn", "-s", "0"], cwd=project,
                            env=env(MLFLOW_TRACKING_URI=store), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _project(root: Path, epochs: int = 25) -> tuple[Path, str]:
    root.mkdir()
    write_params(root / "params.yaml", {"data.name": "digits", "train.epochs": epochs, "train.seeds": [0],
                                        "tracking.log_model": False})
    for args in (["download"], ["prepare"]):
        assert run(["convbench", *args], root).returncode == 0
    return root, f"sqlite:///{root / 'store.db'}"


def test_training_killed_mid_way_resumes_and_ends_identical(tmp_path: Path) -> None:
    reference, reference_store = _project(tmp_path / "uninterrupted")
    assert _train_process(reference, reference_store).wait(timeout=300) == 0

    project, store = _project(tmp_path / "killed")
    process = _train_process(project, store)
    resume = project / paths.resume_state("cnn", 0)
    deadline = time.monotonic() + 120
    while not resume.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "killed before it could finish"
    assert not (project / paths.checkpoint("cnn", 0)).exists() and resume.is_file()
    killed_after = torch.load(resume, weights_only=True)["epoch"]
    assert 1 <= killed_after < 25
    assert list(project.rglob("*.tmp")) == [], "every write is temp-file-then-rename"

    restarted = _train_process(project, store)
    stdout, stderr = restarted.communicate(timeout=300)
    assert restarted.returncode == 0, stderr
    assert not resume.exists(), "the resume state is removed once training ends"
    final, expected = (torch.load(p / paths.checkpoint("cnn", 0), weights_only=True) for p in (project, reference))
    assert all(torch.equal(final["state_dict"][k], expected["state_dict"][k]) for k in expected["state_dict"])
    timing = ["seconds", "elapsed_seconds"]
    curves, expected_curves = (pd.read_csv(p / paths.curves("cnn", 0)).drop(columns=timing) for p in (project, reference))
    pd.testing.assert_frame_equal(curves, expected_curves)
    client = MlflowClient(store)
    (continued,) = client.search_runs([client.get_experiment_by_name("convbench-digits").experiment_id])
    assert continued.info.status == "FINISHED", "the killed run was continued, not duplicated"
    steps = [m.step for m in client.get_metric_history(continued.info.run_id, "val_accuracy")]
    assert sorted(steps) == list(range(1, 26))


def test_non_finite_loss_stops_with_the_epoch_and_a_fix(workspace: Workspace) -> None:
    prepared = load_prepared(workspace.root / paths.prepared_tensors("digits"), workspace.root / paths.prepared_manifest("digits"))
    device = torch.device("cpu")
    data = {k: normalize(v, prepared.mean, prepared.std, device) if k.endswith("_x") else v for k, v in prepared.tensors.items()}
    data["train_x"][0, 0, 0, 0] = float("nan")
    config = models.resolve(workspace.params.model, prepared.input_shape, prepared.num_classes)["mlp"]
    seen: list[int] = []
    with pytest.raises(ConvbenchError) as caught:
        fit(models.build(config), data, workspace.params.train, 0, lambda stats: seen.append(stats.epoch))
    assert str(caught.value) == (
        f"training diverged: the training loss became nan in epoch 1; lower train.lr (now {workspace.params.train.lr}) "
        "and run `convbench train` again"
    )
    assert seen == []


def test_torchrun_ddp_on_cpu_saves_one_checkpoint_and_logs_one_run(tmp_path: Path) -> None:
    single, single_store = _project(tmp_path / "single", epochs=6)
    assert run(["convbench", "train", "-m", "mlp", "-s", "0"], single, MLFLOW_TRACKING_URI=single_store).returncode == 0
    project, store = _project(tmp_path / "ddp", epochs=6)
    command = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "pipeline", "train", "-m", "mlp", "-s", "0"]
    result = run(command, project, MLFLOW_TRACKING_URI=store, OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (project / "models").iterdir()) == ["mlp-s0.pt"], "rank 0 alone writes"
    checkpoint = torch.load(project / paths.checkpoint("mlp", 0), weights_only=True)
    reference = torch.load(single / paths.checkpoint("mlp", 0), weights_only=True)
    assert checkpoint["train"]["world_size"] == 2 and reference["train"]["world_size"] == 1
    assert abs(checkpoint["train"]["final_val_accuracy"] - reference["train"]["final_val_accuracy"]) < 0.05
    client = MlflowClient(store)
    (logged,) = client.search_runs([client.get_experiment_by_name("convbench-digits").experiment_id])
    assert logged.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(logged.info.run_id, "val_accuracy")] == [1, 2, 3, 4, 5, 6]
