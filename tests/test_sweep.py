"""Grid sweeps on real engines: DVC's experiment queue, and a real local Ray head on 127.0.0.1; and the absolute
locations a cell carries to wherever it runs."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.artifacts import paths
from pipeline.ops.grid import expand
from pipeline.ops.sweep import run_trial, trial_params
from pipeline.ops.uris import absolute_path, absolute_sqlite
from tests.helpers import OFFLINE, QUICK, copy_project, mlflow_rest, params_with, run, write_params

FAST = {**QUICK, "data.name": "digits", "tracking.log_model": False}
FAILS_OFFLINE = "dataset 'cifar10' could not be downloaded"


def _runs_by_cell(runs: list[dict]) -> dict[str, dict[str, dict]]:
    """REST run records grouped as {sweep_cell: {run_name: run}}."""
    grouped: dict[str, dict[str, dict]] = {}
    for record in runs:
        tags = {tag["key"]: tag["value"] for tag in record["data"].get("tags", [])}
        grouped.setdefault(tags["sweep_cell"], {})[record["info"]["run_name"]] = record
    return grouped


def test_relative_sqlite_uris_and_paths_become_absolute_from_the_project_and_nothing_else_changes(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    assert absolute_sqlite("sqlite:///mlflow.db", project) == f"sqlite:///{(project / 'mlflow.db').resolve()}"
    assert (
        absolute_sqlite("sqlite:///runs/m.db?timeout=60", project)
        == f"sqlite:///{(project / 'runs' / 'm.db').resolve()}?timeout=60"
    ), "a query stays a query, not a file name"
    for unchanged in (
        "sqlite:////srv/m.db",
        "sqlite:///",
        "sqlite:///:memory:",
        "sqlite://",
        "http://host:5000",
        "postgresql://user:secret@db/optuna",
    ):
        assert absolute_sqlite(unchanged, project) == unchanged
    assert absolute_path("data/raw", project) == str((project / "data" / "raw").resolve())
    assert absolute_path(Path("/srv/data"), project) == "/srv/data"


def test_a_cell_for_another_node_carries_an_absolute_data_root_and_no_tracking_uri(tmp_path: Path) -> None:
    raw = params_with({**FAST, "data.root": "data/raw", "tracking.uri": "sqlite:///mlflow.db"})
    [cell] = expand(raw, {"train.lr": [0.001]}, "abs", "params.yaml")
    moved = trial_params(cell, tmp_path)
    assert moved.raw_params["data"]["root"] == str((tmp_path / "data" / "raw").resolve())
    assert moved.raw_params["tracking"]["uri"] is None, "the URI travels in the environment, never in a file"
    assert cell.raw_params["data"]["root"] == "data/raw", "the cell itself is left as it was"
    assert (moved.name, moved.settings, moved.raw_params["train"]["lr"]) == (cell.name, cell.settings, 0.001)


def test_ray_sweep_runs_one_trial_per_cell_logging_to_the_tracking_server(
    tmp_path: Path, mlflow_server: tuple[str, subprocess.Popen], ray_head: str
) -> None:
    uri, _server = mlflow_server
    project = tmp_path / "project"
    project.mkdir()
    write_params(project / "params.yaml", FAST)
    result = run(
        ["convbench", "sweep", "--backend", "ray", "-S", "train.lr=0.001,0.003", "--name", "raytest"],
        project,
        RAY_ADDRESS=ray_head,
        MLFLOW_TRACKING_URI=uri,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {
        line.split()[1]: line
        for line in result.stdout.splitlines()
        if line.startswith("sweep: raytest-") and "[" in line
    }

    experiment = mlflow_rest(uri, "experiments/get-by-name?experiment_name=convbench-digits")["experiment"]
    found = mlflow_rest(
        uri, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "filter": "tags.sweep = 'raytest'"}
    )["runs"]
    by_cell = _runs_by_cell(found)
    assert set(by_cell) == {"raytest-0", "raytest-1"}, "both cells logged to the tracking server"
    for cell, lr in (("raytest-0", "0.001"), ("raytest-1", "0.003")):
        assert set(by_cell[cell]) == {"cnn-s0", "mlp-s0", "bench", "comparison"}
        for record in by_cell[cell].values():
            assert record["info"]["status"] == "FINISHED"
        cnn = by_cell[cell]["cnn-s0"]
        assert {p["key"]: p["value"] for p in cnn["data"]["params"]}["train.lr"] == lr
        accuracy = {m["key"]: m["value"] for m in cnn["data"]["metrics"]}["test_accuracy"]
        assert f"cnn {accuracy:.4f}" in lines[cell], "the summary shows what the trial logged (one seed: its mean)"
    assert (project / "sweeps" / "raytest" / "raytest-0" / paths.report_html("digits")).is_file()


def test_a_failing_trial_returns_its_error_instead_of_raising(tmp_path: Path) -> None:
    raw = params_with(
        {
            **FAST,
            "data.name": "cifar10",
            "data.root": str(tmp_path / "raw"),
            "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        }
    )
    with pytest.MonkeyPatch.context() as patch:
        for key, value in OFFLINE.items():
            patch.setenv(key, value)
        outcome = run_trial(raw, str(tmp_path / "trial"), threads=1)
    assert outcome["status"] == "failed" and outcome["detail"].startswith(FAILS_OFFLINE), outcome
    assert FAILS_OFFLINE in (tmp_path / "trial" / "trial.log").read_text(), "the trial's full output is kept"


def test_dvc_queue_sweep_runs_cells_as_experiments_and_reports_the_failed_one(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project", **FAST)
    result = run(
        ["convbench", "sweep", "-S", "data.name=digits,cifar10", "--jobs", "2", "--name", "dvctest"],
        project,
        MLFLOW_TRACKING_URI="",
        **OFFLINE,
    )

    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == "convbench: error: 1 of 2 sweep cells failed: dvctest-1", (
        "the rest go on"
    )
    assert "sweep: dvctest-0 [data.name=[digits]] success: cnn 0." in result.stdout
    assert f"sweep: dvctest-1 [data.name=[cifar10]] failed: {FAILS_OFFLINE}" in result.stdout
    logs = run(["dvc", "queue", "logs", "dvctest-0"], project).stdout
    assert set(re.findall(r"Running stage '([^']+)'", logs)) >= {"train@digits", "evaluate@digits", "report@digits"}

    table = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    revs = {rev["name"]: rev for row in table for group in row.get("experiments") or [] for rev in group["revs"]}
    assert 0 < revs["dvctest-0"]["data"]["metrics"][str(paths.summary("digits"))]["data"]["accuracy"]["cnn"] <= 1, (
        "the cell is an ordinary DVC experiment, comparable with dvc exp show"
    )

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("convbench-digits").experiment_id], "tags.sweep_cell = 'dvctest-0'"
    )
    assert sorted(r.info.run_name for r in runs) == ["bench", "cnn-s0", "comparison", "mlp-s0"], (
        "logged to the project's store"
    )
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_a_dvc_remote_url_in_a_failed_trial_line_is_redacted() -> None:
    from pipeline.ops.sweep import _error_line

    output = (
        "ERROR: failed to push data to the cloud - https://alice:hunter2@dvc.example.com/store?token=abc unreachable"
    )
    line = _error_line(output)
    assert "hunter2" not in line and "abc unreachable" not in line and "alice:***@dvc.example.com" in line
    assert _error_line("convbench: error: no server at http://:pw@host/") == "no server at http://:***@host/"
