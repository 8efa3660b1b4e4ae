"""Cells in parallel (ops/cells.py): worker processes and Ray tasks give the cells one process gives, each in MLflow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.artifacts import paths
from pipeline.cli import INTERRUPTED
from tests.helpers import copy_project, env, run, write_params

CELLS = [("cnn", 0), ("cnn", 1), ("mlp", 0), ("mlp", 1)]
SCORES = ("test_accuracy", "test_loss", "confusion_matrix", "per_class_accuracy", "robustness", "final_val_accuracy")


def _weights(project: Path) -> dict[tuple[str, int], dict[str, torch.Tensor]]:
    return {
        cell: torch.load(project / paths.checkpoint("digits", *cell), weights_only=True)["state_dict"] for cell in CELLS
    }


def _numbers(project: Path, cell: tuple[str, int]) -> dict[str, object]:
    metrics = json.loads((project / paths.metrics("digits", *cell)).read_text())
    return {key: metrics[key] for key in SCORES}


def _train_runs(store: str) -> list:
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("convbench-digits")
    return client.search_runs([experiment.experiment_id], "tags.`convbench.kind` = 'train'")


def test_dvc_repro_with_two_workers_gives_the_cells_of_one_worker(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "p", **{"data.name": "digits", "train.seeds": [0, 1], "train.workers": 2})
    result = run(["dvc", "repro"], project, MLFLOW_TRACKING_URI="")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    parallel = _weights(project)
    parallel_numbers = {cell: _numbers(project, cell) for cell in CELLS}
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("convbench-digits").experiment_id
    (comparison,) = client.search_runs([experiment_id], "tags.`convbench.kind` = 'comparison'")
    children = client.search_runs(
        [experiment_id],
        f"tags.`mlflow.parentRunId` = '{comparison.info.run_id}' and tags.`convbench.kind` = 'train'",
    )
    assert sorted((r.info.run_name, r.info.status) for r in children) == [
        (paths.cell(*cell), "FINISHED") for cell in CELLS
    ], "one finished run per cell under the comparison"
    assert {r.data.tags["convbench.context.threads"] for r in children} == {"1"}, "each worker has one of 2 cores"

    write_params(project / "params.yaml", {"train.workers": 1}, edit_existing=True)
    for model in ("cnn", "mlp"):  # picking a model trains (and scores) its cells again, current or not
        for stage in ("train", "evaluate"):
            again = run(["convbench", stage, "--model", model], project, MLFLOW_TRACKING_URI="")
            assert again.returncode == 0, again.stderr[-2000:]
    serial = _weights(project)
    for cell in CELLS:
        assert all(torch.equal(parallel[cell][k], serial[cell][k]) for k in serial[cell]), cell
        assert _numbers(project, cell) == parallel_numbers[cell], cell


def _prepared(root: Path, **overrides: object) -> Path:
    root.mkdir()
    write_params(
        root / "params.yaml",
        {
            "data.name": "digits",
            "train.seeds": [0, 1],
            "train.epochs": 4,
            "tracking.log_model": False,
            "tracking.uri": f"sqlite:///{root / 'mlflow.db'}",
            **overrides,
        },
    )
    for args in (["download"], ["prepare"]):
        assert run(["convbench", *args], root).returncode == 0
    return root


def test_train_on_a_real_ray_head_trains_and_logs_every_cell(tmp_path: Path, ray_head: str) -> None:
    root = _prepared(tmp_path / "p")
    result = run(["convbench", "train", "--backend", "ray", "--ray-address", ray_head], root, timeout=400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"train: 4 cell(s) as Ray tasks at {ray_head}" in result.stdout
    assert all((root / paths.checkpoint("digits", *cell)).is_file() for cell in CELLS)
    runs = _train_runs(f"sqlite:///{root / 'mlflow.db'}")
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [(paths.cell(*c), "FINISHED") for c in CELLS]


def test_a_killed_two_worker_train_resumes_every_unfinished_cell(tmp_path: Path) -> None:
    root = _prepared(tmp_path / "p", **{"train.epochs": 40, "train.workers": 2})
    store = f"sqlite:///{root / 'mlflow.db'}"
    parent = subprocess.Popen(
        ["convbench", "train"], cwd=root, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    resumes = [root / paths.resume_state("digits", *cell) for cell in CELLS]
    deadline = time.monotonic() + 180
    while sum(p.exists() for p in resumes) < 2 and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.05)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    assert sum(p.exists() for p in resumes) >= 2, "two cells were training at once when the parent was killed"
    deadline = time.monotonic() + 30
    while _workers_of(root) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _workers_of(root), "the workers die with their parent"
    interrupted = {p.name for p in resumes if p.exists()}

    again = run(["convbench", "train"], root, timeout=400)
    assert again.returncode == 0, again.stderr[-2000:]
    assert all((root / paths.checkpoint("digits", *cell)).is_file() for cell in CELLS)
    assert not any(p.exists() for p in resumes), "every resume state is used up"
    runs = _train_runs(store)
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [(paths.cell(*c), "FINISHED") for c in CELLS], (
        "each interrupted cell continued its own run; none was trained twice"
    )
    client = MlflowClient(store)
    for finished in runs:
        steps = sorted(m.step for m in client.get_metric_history(finished.info.run_id, "val_accuracy"))
        assert steps == list(range(1, 41)), (finished.info.run_name, interrupted)


def _workers_of(root: Path) -> list[int]:
    """Live processes working in `root` (the killed train's spawned workers)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if Path(os.readlink(proc / "cwd")) == root and b"multiprocessing" in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


BROKEN = """
import torch
from torch import nn


class Broken(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        out = self.head(x.flatten(1))
        return out * float("nan") if self.training else out  # its training loss is never finite
"""


def test_a_failed_cell_names_itself_and_the_others_finish(tmp_path: Path) -> None:
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "broken_zoo.py").write_text(BROKEN)
    root = _prepared(
        tmp_path / "p",
        **{"models": ["cnn", "broken"], "model.broken": {"builder": "broken_zoo:Broken"}, "train.workers": 2},
    )
    result = run(["convbench", "train"], root, timeout=400, PYTHONPATH=str(zoo))
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("convbench: error: train: 2 of 4 cell(s) failed (2 finished): broken-s0: "), line
    assert "broken-s1: " in line and "training diverged" in line and "Traceback" not in result.stderr
    assert all((root / paths.checkpoint("digits", "cnn", seed)).is_file() for seed in (0, 1))
    assert not (root / paths.checkpoint("digits", "broken", 0)).exists()
    runs = {r.info.run_name: r.info.status for r in _train_runs(f"sqlite:///{root / 'mlflow.db'}")}
    assert runs == {"cnn-s0": "FINISHED", "cnn-s1": "FINISHED", "broken-s0": "FAILED", "broken-s1": "FAILED"}


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_two_worker_train_ends_in_seconds_with_every_run_failed(tmp_path: Path, stop: signal.Signals) -> None:
    # cells long enough that two are always in flight once the worker has started (~7 s of imports): at 40 epochs a
    # fast machine trained the parent's cells to the end before the worker's first one began, and nothing was stopped
    root = _prepared(tmp_path / "p", **{"train.epochs": 400, "train.workers": 2})
    parent = subprocess.Popen(
        ["convbench", "train"], cwd=root, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    resumes = [root / paths.resume_state("digits", *cell) for cell in CELLS]
    deadline = time.monotonic() + 180
    while sum(p.exists() for p in resumes) < 2 and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.05)
    stopped = time.monotonic()
    parent.send_signal(stop)
    _, stderr = parent.communicate(timeout=60)
    assert time.monotonic() - stopped < 30
    assert parent.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == f"convbench: interrupted; {INTERRUPTED['train']}"
    assert not _workers_of(root)
    assert list((root / paths.models_dir("digits")).glob("*.lock")) == [] and list(root.rglob("*.tmp")) == []
    runs = {r.info.run_name: r.info.status for r in _train_runs(f"sqlite:///{root / 'mlflow.db'}")}
    assert "FAILED" in runs.values() and set(runs.values()) <= {"FAILED", "FINISHED"}, "none is left RUNNING"
    for name, status in runs.items():
        model, seed = name.rsplit("-s", 1)
        if status == "FINISHED":  # a FAILED one may have been stopped after its checkpoint, while logging it
            assert (root / paths.checkpoint("digits", model, int(seed))).is_file(), name


def test_a_ray_backend_without_a_cluster_is_one_line_and_no_secret(tmp_path: Path) -> None:
    root = _prepared(tmp_path / "p")
    missing = run(["convbench", "train", "--backend", "ray"], root, RAY_ADDRESS="")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines()[-1].startswith("convbench: error: train.backend ray needs a cluster")
    silent = run(["convbench", "train", "--backend", "ray", "--ray-address", "ray://admin:s3cret@127.0.0.1:9"], root)
    assert silent.returncode == 1 and "Traceback" not in silent.stderr
    line = silent.stderr.strip().splitlines()[-1]
    assert line.startswith("convbench: error: no Ray cluster answers at ray://admin:***@127.0.0.1:9"), line
    assert "s3cret" not in silent.stdout + silent.stderr
    assert not any((root / paths.checkpoint("digits", *cell)).exists() for cell in CELLS)
