"""Train stage on real digits: checkpoints, curves, MLflow histories, and CPU determinism."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import torch
from mlflow.tracking import MlflowClient

from pipeline.artifacts import paths
from pipeline.core.data import load_prepared
from tests.conftest import Workspace
from tests.helpers import BIN, env, run, write_params


def test_curves_have_one_row_per_epoch(workspace: Workspace) -> None:
    curves = pd.read_csv(workspace.root / paths.curves("digits", "cnn", 1))
    assert curves["epoch"].tolist() == [1, 2, 3]
    assert set(curves.columns) >= {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"}
    assert curves["train_loss"].iloc[-1] < curves["train_loss"].iloc[0], "three epochs must lower the loss"


def test_each_cell_is_one_finished_mlflow_run_with_history(workspace: Workspace) -> None:
    client = MlflowClient(workspace.tracking_uri)
    experiment = client.get_experiment_by_name("convbench-digits")
    runs = client.search_runs([experiment.experiment_id], "tags.`convbench.kind` = 'train'")
    assert sorted(r.info.run_name for r in runs) == ["cnn-s0", "cnn-s1", "mlp-s0", "mlp-s1"]
    for finished in runs:
        assert finished.info.status == "FINISHED"
        history = client.get_metric_history(finished.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == [1, 2, 3]
        assert (
            finished.data.tags["convbench.dataset_sha256"]
            == load_prepared(
                workspace.root / paths.prepared_tensors("digits"), workspace.root / paths.prepared_manifest("digits")
            ).sha256
        )
        assert finished.data.tags["convbench.git_commit"]
        assert int(finished.data.params["params"]) > 0


def test_model_is_logged_with_signature(workspace: Workspace) -> None:
    import mlflow

    mlflow.set_tracking_uri(workspace.tracking_uri)
    experiment = MlflowClient(workspace.tracking_uri).get_experiment_by_name("convbench-digits")
    logged = mlflow.search_logged_models([experiment.experiment_id], output_format="list")
    assert len(logged) == 4
    info = mlflow.models.get_model_info(f"models:/{logged[0].model_id}")
    assert info.signature is not None and info.signature.inputs is not None


def test_outputs_are_written_with_no_temporary_leftovers(workspace: Workspace) -> None:
    """Atomic temp files and download staging folders are dot-named; none may survive a run."""
    leftovers = [p for p in Path(workspace.root).rglob("*.tmp")]
    assert leftovers == []
    hidden = [p for p in Path(workspace.root).rglob(".*")]
    assert hidden == []


def _train_process(project: Path, store: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["convbench", "train", "-m", "cnn", "-s", "0"],
        cwd=project,
        env=env(MLFLOW_TRACKING_URI=store),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _project(root: Path, epochs: int = 25, **overrides: object) -> tuple[Path, str]:
    root.mkdir()
    write_params(
        root / "params.yaml",
        {"data.name": "digits", "train.epochs": epochs, "train.seeds": [0], "tracking.log_model": False, **overrides},
    )
    for args in (["download"], ["prepare"]):
        assert run(["convbench", *args], root).returncode == 0
    return root, f"sqlite:///{root / 'store.db'}"


def test_training_killed_mid_way_resumes_and_ends_identical(tmp_path: Path) -> None:
    reference, reference_store = _project(tmp_path / "uninterrupted")
    assert _train_process(reference, reference_store).wait(timeout=300) == 0

    project, store = _project(tmp_path / "killed")
    process = _train_process(project, store)
    resume = project / paths.resume_state("digits", "cnn", 0)
    deadline = time.monotonic() + 120
    while not resume.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "killed before it could finish"
    assert not (project / paths.checkpoint("digits", "cnn", 0)).exists() and resume.is_file()
    killed_after = torch.load(resume, weights_only=True)["epoch"]
    assert 1 <= killed_after < 25
    assert list(project.rglob("*.tmp")) == [], "every write is temp-file-then-rename"

    restarted = _train_process(project, store)
    stdout, stderr = restarted.communicate(timeout=300)
    assert restarted.returncode == 0, stderr
    assert "train: cnn-s0 val_accuracy " in stdout and f"(resumed after epoch {killed_after} of 25, " in stdout, (
        "the final line says the cell was resumed"
    )
    assert not resume.exists(), "the resume state is removed once training ends"
    final, expected = (
        torch.load(p / paths.checkpoint("digits", "cnn", 0), weights_only=True) for p in (project, reference)
    )
    assert all(torch.equal(final["state_dict"][k], expected["state_dict"][k]) for k in expected["state_dict"])
    timing = ["seconds", "elapsed_seconds"]
    curves, expected_curves = (
        pd.read_csv(p / paths.curves("digits", "cnn", 0)).drop(columns=timing) for p in (project, reference)
    )
    pd.testing.assert_frame_equal(curves, expected_curves)
    client = MlflowClient(store)
    (continued,) = client.search_runs([client.get_experiment_by_name("convbench-digits").experiment_id])
    assert continued.info.status == "FINISHED", "the killed run was continued, not duplicated"
    steps = [m.step for m in client.get_metric_history(continued.info.run_id, "val_accuracy")]
    assert sorted(steps) == list(range(1, 26))


def test_torchrun_ddp_on_cpu_saves_one_checkpoint_and_logs_one_run(tmp_path: Path) -> None:
    single, single_store = _project(tmp_path / "single", epochs=6)
    assert run(["convbench", "train", "-m", "mlp", "-s", "0"], single, MLFLOW_TRACKING_URI=single_store).returncode == 0
    project, store = _project(tmp_path / "ddp", epochs=6)
    command = [
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "pipeline",
        "train",
        "-m",
        "mlp",
        "-s",
        "0",
    ]
    result = run(command, project, MLFLOW_TRACKING_URI=store, OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (project / "models" / "digits").iterdir()) == ["mlp-s0.pt"], "rank 0 alone writes"
    checkpoint = torch.load(project / paths.checkpoint("digits", "mlp", 0), weights_only=True)
    reference = torch.load(single / paths.checkpoint("digits", "mlp", 0), weights_only=True)
    assert checkpoint["train"]["world_size"] == 2 and reference["train"]["world_size"] == 1
    assert abs(checkpoint["train"]["final_val_accuracy"] - reference["train"]["final_val_accuracy"]) < 0.05
    client = MlflowClient(store)
    (logged,) = client.search_runs([client.get_experiment_by_name("convbench-digits").experiment_id])
    assert logged.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(logged.info.run_id, "val_accuracy")] == [1, 2, 3, 4, 5, 6]


def test_an_interrupted_forced_retrain_of_a_current_cell_leaves_no_resume_state_behind(tmp_path: Path) -> None:
    """`train -m cnn -s 0` retrains a current cell; killed mid-way, its resume state would never be used: the next
    plain `convbench train` keeps the current checkpoint and removes the stray state."""
    project, store = _project(tmp_path / "p", models=["cnn"])  # one cell: the plain train below trains nothing
    assert _train_process(project, store).wait(timeout=300) == 0
    checkpoint = (project / paths.checkpoint("digits", "cnn", 0)).read_bytes()
    forced = _train_process(project, store)
    resume = project / paths.resume_state("digits", "cnn", 0)
    deadline = time.monotonic() + 120
    while not resume.exists() and time.monotonic() < deadline and forced.poll() is None:
        time.sleep(0.02)
    forced.send_signal(signal.SIGKILL)
    forced.wait(timeout=30)
    assert resume.is_file(), "the forced retrain was killed after saving an epoch"
    kept = run(["convbench", "train"], project, MLFLOW_TRACKING_URI=store)
    assert kept.returncode == 0, kept.stderr
    assert "train: cnn-s0 is current (same inputs and code): kept" in kept.stdout
    assert not resume.exists() and (project / paths.checkpoint("digits", "cnn", 0)).read_bytes() == checkpoint
