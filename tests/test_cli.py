"""The real `convbench` command: complete help, one-line errors with exit codes, one matrix cell."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.cli import INTERRUPTED
from tests.helpers import OFFLINE, QUICK, default_params, env, free_port, run, write_params

COMMANDS = ("download", "prepare", "tune", "train", "evaluate", "report")


def test_help_describes_every_stage_and_option(tmp_path: Path) -> None:
    from pipeline import cli

    result = run(["convbench", "--help"], tmp_path, COLUMNS="200")
    assert result.returncode == 0
    for command in COMMANDS:
        summary = getattr(cli, command).__doc__.split(";")[0].split("(")[0].strip()
        assert summary[:40] in result.stdout
        sub = run(["convbench", command, "--help"], tmp_path, COLUMNS="200")
        assert sub.returncode == 0 and "--params" in sub.stdout and summary[:40] in sub.stdout
    train_help = run(["convbench", "train", "--help"], tmp_path, COLUMNS="200").stdout
    assert "--model" in train_help and "--seed" in train_help and "one of `models` in params.yaml" in train_help


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda p: p["train"].update(epoch=3), "unknown key 'train.epoch'; allowed keys here: seeds, epochs"),
        (lambda p: p["train"].update(epochs=-1), "train.epochs: Input should be greater than 0 (got -1)"),
        (
            lambda p: p["data"].update(name="nope"),
            "data.name: unknown dataset 'nope'; built-in: mnist5k, digits, mnist1d, mnist",
        ),
    ],
)
@pytest.mark.parametrize("command", ["download", "train"])
def test_bad_params_exit_2_with_one_line(tmp_path: Path, edit, expected: str, command: str) -> None:
    params = default_params()
    edit(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run(["convbench", command], tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"convbench: error: params.yaml: {expected}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"], "bad params must write nothing"


def test_offline_torchvision_download_fails_clearly(tmp_path: Path) -> None:
    write_params(tmp_path / "params.yaml", {"data.name": "mnist"})
    result = run(["convbench", "download"], tmp_path, **OFFLINE)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("convbench: error: dataset 'mnist' could not be downloaded")
    assert "data/raw/mnist/MNIST/raw/train-images-idx3-ubyte" in lines[0] and "mnist5k or digits" in lines[0]


def test_missing_inputs_point_to_the_stage_to_run(tmp_path: Path) -> None:
    write_params(tmp_path / "params.yaml", {"data.name": "digits"})
    result = run(["convbench", "train"], tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "convbench: error: data/prepared/digits/splits.pt is missing; run `convbench prepare` (or `dvc repro`) first"
    )


def test_one_cell_trains_alone_like_dvc_would(tmp_path: Path) -> None:
    write_params(tmp_path / "params.yaml", {**QUICK, "data.name": "digits", "train.epochs": 2, "train.seeds": [0, 1]})
    store = f"sqlite:///{tmp_path / 'store.db'}"
    for args in (
        ["download"],
        ["prepare"],
        ["train", "--model", "cnn", "--seed", "0"],
        ["evaluate", "-m", "cnn", "-s", "0"],
    ):
        result = run(["convbench", *args], tmp_path, MLFLOW_TRACKING_URI=store)
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "models" / "digits").iterdir()) == ["cnn-s0.pt"]
    assert sorted(p.name for p in (tmp_path / "results" / "digits" / "cells").glob("*.json")) == ["cnn-s0.json"]
    assert not (tmp_path / "mlflow.db").exists(), "MLFLOW_TRACKING_URI must win over the default store"
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("convbench-digits")
    (only,) = client.search_runs([experiment.experiment_id])
    assert only.info.run_name == "cnn-s0" and "test_accuracy" in only.data.metrics


def test_a_model_not_in_models_is_a_usage_error(tmp_path: Path) -> None:
    write_params(tmp_path / "params.yaml", {})
    result = run(["convbench", "train", "--model", "lcn"], tmp_path, COLUMNS="200")
    assert result.returncode == 2
    assert result.stderr == (
        "convbench: error: --model lcn: not in models ['cnn', 'mlp'] of params.yaml; pick one of them or add it\n"
    )


def _wait_for(condition, seconds: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the process exited ({process.returncode}) before {what}: {process.communicate()[1][-2000:]}")
        time.sleep(0.3)
    pytest.fail(f"timed out after {seconds}s waiting for {what}")


def _first_run(store: str):
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("convbench-digits")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    if runs and client.get_metric_history(runs[0].info.run_id, "val_accuracy"):
        return runs[0]
    return None


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_mid_training_marks_the_run_failed_and_leaves_no_lock_or_checkpoint(
    tmp_path: Path, stop: signal.Signals
) -> None:
    """SIGTERM (a kill, a scheduler) and SIGHUP (a closed terminal or SSH session) end the stage like Ctrl-C."""
    write_params(tmp_path / "params.yaml", {"data.name": "digits", "train.epochs": 5000})
    store = f"sqlite:///{tmp_path / 'store.db'}"
    for args in (["download"], ["prepare"]):
        assert run(["convbench", *args], tmp_path).returncode == 0
    # This test's own client creates the schema now, not while the trainer creates it (MLflow's SQL migration
    # is not safe against a second process outside convbench's store lock; the trainer would log nothing).
    MlflowClient(store).search_experiments()
    process = subprocess.Popen(
        ["convbench", "train", "-m", "cnn", "-s", "0"],
        cwd=tmp_path,
        env=env(MLFLOW_TRACKING_URI=store),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: _first_run(store), 120, "the first logged epoch", process)
        process.send_signal(stop)
        _stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1] == f"convbench: interrupted; {INTERRUPTED['train']}"
    run_info = MlflowClient(store).search_runs(
        [MlflowClient(store).get_experiment_by_name("convbench-digits").experiment_id]
    )[0]
    assert run_info.info.status == "FAILED"
    assert len(MlflowClient(store).get_metric_history(run_info.info.run_id, "val_accuracy")) >= 1
    folder = tmp_path / "models" / "digits"
    left = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert left in ([], ["cnn-s0.resume.pt"]), "no checkpoint; at most the state to resume from"
    assert list(tmp_path.rglob("*.tmp")) == []


def test_ui_serves_the_project_store_on_loopback(tmp_path: Path) -> None:
    from pipeline.ops import tracking
    from pipeline.params import validate_params
    from tests.helpers import params_with

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracking.run(validate_params(params_with({"tracking.uri": store})).tracking, "digits", "cnn-s0", {}) as logger:
        logger.log_metrics({"val_accuracy": 0.5}, step=1)
    write_params(tmp_path / "params.yaml", {"data.name": "digits"})
    port = free_port()
    log = open(tmp_path / "ui.log", "w")  # a file, not a pipe nobody reads: a full pipe would block the server's writes
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "ui", "--port", str(port)],
        cwd=tmp_path,
        env=env(MLFLOW_TRACKING_URI=""),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=convbench-digits"

    def fetch():
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.loads(response.read())
        except OSError:
            return None

    try:
        found = _wait_for(fetch, 300, "the MLflow UI to answer", server)
        assert found["experiment"]["name"] == "convbench-digits"
        with pytest.raises(OSError):  # bound to 127.0.0.1 only, not 0.0.0.0: 127.0.0.2 is refused
            socket.create_connection(("127.0.0.2", port), timeout=2).close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_an_unknown_probe_is_one_plain_line(tmp_path: Path) -> None:
    """Not Typer's 'Invalid value for NAME:{...}': the probes by name, exit 2, nothing written."""
    from pipeline.core.probes import PROBES

    write_params(tmp_path / "params.yaml", {})
    result = run(["convbench", "probe", "nope"], tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"convbench: error: unknown probe 'nope'; the probes are {', '.join(PROBES)}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
