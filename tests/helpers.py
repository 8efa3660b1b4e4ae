"""Shared test helpers: the project's own params with small overrides, and running the real CLI."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCREENSHOTS = ROOT / "tests" / "artifacts"  # what the browser tests saw, kept for people and CI to look at
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]
NO_CHROMIUM = "Chromium is not installed (.ci/run installs Debian's chromium package)"


def chromium() -> str | None:
    """Debian's chromium, which Playwright drives through executable_path (no browser download)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def default_params() -> dict[str, Any]:
    """The project's params.yaml as a plain dict."""
    return yaml.safe_load((ROOT / "params.yaml").read_text())


# A closed local port as HTTP(S) proxy: urllib (and so torchvision) fails at once, as offline.
OFFLINE = {
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "no_proxy": "",
}


def params_with(overrides: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """`base` (default: the project's params) with dotted-key overrides, e.g. {'train.epochs': 1}."""
    params = copy.deepcopy(base if base is not None else default_params())
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        node = params
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}  # a section or model params.yaml leaves at its defaults
            node = node[key]
        node[last] = value
    return params


def write_params(path: Path, overrides: dict[str, Any], edit_existing: bool = False) -> Path:
    """Write default params (or, with edit_existing, the file's own) plus overrides to `path`."""
    base = yaml.safe_load(path.read_text()) if edit_existing else None
    path.write_text(yaml.safe_dump(params_with(overrides, base), sort_keys=False))
    return path


def env(**extra: str) -> dict[str, str]:
    """The environment with this venv's bin first on PATH (so `convbench` and `dvc` resolve)."""
    result = dict(os.environ)
    result["PATH"] = f"{BIN}{os.pathsep}{result.get('PATH', '')}"
    result["MPLBACKEND"] = "Agg"
    result.update(extra)
    return result


def run(args: list[str], cwd: Path, timeout: float = 600, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run a real command (convbench, dvc, git) and capture its output."""
    return subprocess.run(args, cwd=cwd, env=env(**extra_env), capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mlflow_rest(uri: str, path: str, body: dict | None = None) -> dict:
    """Call a tracking server's REST API directly (GET, or POST with a JSON body)."""
    request = urllib.request.Request(
        f"{uri}/api/2.0/mlflow/{path}",
        data=json.dumps(body).encode() if body else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


# One epoch, one seed, short timings, few probe settings: the slow parts of a run, cut down for tests.
QUICK = {
    "train.epochs": 1,
    "train.seeds": [0],
    "evaluate.min_run_time": 0.02,
    "evaluate.rounds": 3,
    "evaluate.throughput_batch_sizes": [32],
    "evaluate.shifts": [0, 2],
    "evaluate.noise_std": [0.0, 0.3],
    "report.bootstrap_resamples": 1000,
    "tracking.log_model": False,
}
PROJECT_FILES = ("dvc.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore", ".gitignore")


def copy_project(target: Path, **overrides: Any) -> Path:
    """The project's pipeline files in a fresh git repository, with tiny params (plus dotted `overrides`)."""
    for name in PROJECT_FILES:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target / name)
    shutil.copytree(ROOT / "pipeline", target / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    names = overrides.get("data.name")
    if isinstance(names, str):  # DVC fans its stages out over a list, so a project's params.yaml spells one
        overrides = {**overrides, "data.name": [names]}
    write_params(target / "params.yaml", {**QUICK, **overrides})
    for args in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
    ):
        assert run(args, target).returncode == 0
    return target


def wait_for_start(
    process: subprocess.Popen, ready: Callable[[], bool], log: Path, what: str, seconds: float = 300
) -> None:
    """Wait until `ready()`; if `process` exits or `seconds` pass (a loaded 2-core machine is slow), kill its
    process group and fail with the end of its log (a file: a server's children would hold a pipe open)."""
    import pytest

    deadline = time.monotonic() + seconds
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"{what} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.5)


def answers(url: str) -> bool:
    """Whether an HTTP GET of `url` gets any answer within 2 seconds."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never goes through a proxy
    try:
        with direct.open(url, timeout=2):
            return True
    except OSError:
        return False


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
