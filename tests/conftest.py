"""Fixtures that build real, small workspaces: real data files, real training, real MLflow stores."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.params import Params, validate_params
from tests.helpers import BIN, OFFLINE, answers, env, free_port, listening, params_with, wait_for_start


@dataclass(frozen=True)
class Workspace:
    """A project folder where the real stages have run on `digits` (2 models x 2 seeds, 3 epochs, permutation probe)."""

    root: Path
    params: Params
    tracking_uri: str


def tiny_params(root: Path, **overrides: object) -> Params:
    """Validated params for fast runs: digits, 3 epochs, 2 seeds, short timings, a store under `root`."""
    values = {
        "data.name": ["digits"],
        "data.root": str(root / "data" / "raw"),
        "train.epochs": 3,
        "train.seeds": [0, 1],
        "train.device": "cpu",
        "evaluate.min_run_time": 0.05,
        "evaluate.rounds": 3,
        "tracking.uri": f"sqlite:///{root / 'mlflow.db'}",
        "probes.run": ["permutation"],
    }
    values.update(overrides)
    return validate_params(params_with(values))


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Run download, prepare, train, evaluate and report in-process on digits, once per session."""
    from pipeline.stages.bench import bench
    from pipeline.stages.download import download
    from pipeline.stages.evaluate import evaluate
    from pipeline.stages.prepare import prepare
    from pipeline.stages.probe import probe
    from pipeline.stages.report import report
    from pipeline.stages.train import train

    root = tmp_path_factory.mktemp("workspace")
    params = tiny_params(root)
    with contextlib.chdir(root):
        download(params)
        prepare(params)
        train(params)
        evaluate(params)
        bench(params)
        for name in params.probes.run:
            probe(params, name)
        report(params)
    return Workspace(root=root, params=params, tracking_uri=params.tracking.uri or "")


@pytest.fixture
def ray_head() -> Iterator[str]:
    """A real single-node Ray cluster on 127.0.0.1 (`ray start --head --block`), killed with its process group."""
    pytest.importorskip(
        "ray", reason="ray is not installed; `pip install 'convbench[ray]'` to run the Ray backend test"
    )
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 107 characters
    log = Path(temp_dir) / "head.log"  # a file, not a pipe: Ray's daemons would hold a pipe open after a failure
    with open(log, "w") as handle:
        head = subprocess.Popen(
            [
                str(BIN / "ray"),
                "start",
                "--head",
                "--block",
                "--node-ip-address",
                "127.0.0.1",
                "--port",
                str(port),
                "--num-cpus",
                "2",
                "--include-dashboard",
                "false",
                "--disable-usage-stats",
                "--temp-dir",
                temp_dir,
            ],
            env=env(**{**OFFLINE, "no_proxy": "127.0.0.1,localhost"}),
            stdout=subprocess.DEVNULL,
            stderr=handle,
            start_new_session=True,
        )
    wait_for_start(head, lambda: listening(port), log, "ray head")
    try:
        yield f"127.0.0.1:{port}"
    finally:  # every Ray process is in the head's process group; SIGTERM makes `ray start` wait a minute
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real `mlflow server` (SQLite backend, local artifact store) on a free 127.0.0.1 port."""
    port = free_port()
    log = tmp_path / "mlflow-server.log"  # a file, not a pipe: the server's children outlive it and keep pipes open
    with open(log, "w") as handle:
        server = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{tmp_path / 'server.db'}",
                "--artifacts-destination",
                str(tmp_path / "artifacts"),
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=tmp_path,
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=handle,
            start_new_session=True,
        )
    uri = f"http://127.0.0.1:{port}"
    wait_for_start(server, lambda: answers(f"{uri}/health"), log, "mlflow server")
    try:
        yield uri, server
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


SLOWEST_FIRST = (
    "test_pipeline.py",
    "test_sweep.py",
    "test_train.py",
    "test_tracking.py",
    "test_cli.py",
    "test_bad_inputs.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the slowest files first, so that `make test`'s workers (one file at a time each) finish together."""
    rank = {name: index for index, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a file is kept
