"""Faults of the machinery around the stages, each through the real `convbench` CLI: killed workers, signals
while a sweep queues or an upload runs, a busy UI port, odd characters in the project's path, failing Optuna
trials and a small address-space limit. Each ends with one line (or the interrupt status) in bounded time."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.artifacts import paths
from pipeline.cli import INTERRUPTED
from tests.helpers import QUICK, copy_project, env, run, write_params
from tests.test_bad_inputs import assert_one_error_line


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits downloaded and prepared once by the real CLI (1 epoch, 1 seed, no logged model)."""
    root = tmp_path_factory.mktemp("prepared")
    write_params(root / "params.yaml", {**QUICK, "data.name": ["digits"], "train.device": "cpu"})
    for args in (["convbench", "download"], ["convbench", "prepare"]):
        result = run(args, root, timeout=300)
        assert result.returncode == 0, result.stderr
    return root


def project(prepared: Path, target: Path, **overrides: object) -> Path:
    """A copy of the prepared project at `target` with more params; MLflow's store is the default one."""
    shutil.copytree(prepared, target)
    if overrides:
        write_params(target / "params.yaml", overrides, edit_existing=True)
    return target


def _wait(condition, seconds: float, what: str, process: subprocess.Popen | None = None):
    """Poll `condition` until it holds (returning its value); fail after `seconds` or when `process` exits first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the process exited ({process.returncode}) before {what}: {(out or '')[-1500:]}{err[-2000:]}")
        time.sleep(0.1)
    pytest.fail(f"timed out after {seconds}s waiting for {what}")


# --- odd characters in the project's path ------------------------------------------------------------------------


def test_a_project_path_with_uri_characters_keeps_its_stores_inside(prepared: Path, tmp_path: Path) -> None:
    """'?' cut the default sqlite:///<project>/mlflow.db (and the study storage) short; '%41' was decoded to 'A'."""
    parent = tmp_path / "odd"
    parent.mkdir()
    tune = {"models": ["cnn"], "tune.trials": 1, "tune.seeds": [0], "tune.startup_trials": 1, "tune.space.epochs": [1]}
    root = project(prepared, parent / "p?q#r%41s", **tune)
    for args in (["tune"], ["train"]):
        done = run(["convbench", *args], root, timeout=300, MLFLOW_TRACKING_URI="")
        assert done.returncode == 0, done.stderr[-2000:]
    # (MLflow's default artifact folder of a new experiment is a plain path its own file store percent-decodes, so
    # with '%41' the artifacts still land in 'p?q#rAs'; no database or lock may land beside the project)
    beside = [p.name for p in parent.rglob("*") if root not in (p, *p.parents) and p.is_file() and ".db" in p.name]
    assert beside == [] and not (parent / "p").exists(), "no store is opened beside the project"
    assert (root / "mlflow.db").is_file() and (root / paths.study_storage("digits", "cnn")).is_file()
    client = MlflowClient(f"sqlite:///{(root / 'mlflow.db').as_posix().replace('%', '%25').replace('?', '%3F')}")
    runs = client.search_runs([client.get_experiment_by_name("convbench-digits").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["cnn-s0", "tune-cnn", "tune-cnn-t0"]


# --- the UI ------------------------------------------------------------------------------------------------------


def test_ui_on_a_port_in_use_is_one_line_naming_the_port(prepared: Path, tmp_path: Path) -> None:
    """MLflow's server only logged that it could not bind, and `convbench ui` exited 0."""
    root = project(prepared, tmp_path / "p")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(["convbench", "ui", "--port", str(port)], root, timeout=120, MLFLOW_TRACKING_URI="")
    assert_one_error_line(result, 1, (f"port {port} on 127.0.0.1 is already in use", "--port"))


# --- a failing Optuna trial --------------------------------------------------------------------------------------

RAISING = """
from torch import nn


class Raising(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        if self.training:
            raise RuntimeError("this model cannot train")
        return self.head(x.flatten(1))
"""


def test_a_trial_whose_training_raises_prints_only_convbench_line(prepared: Path, tmp_path: Path) -> None:
    """Optuna logged 'Trial 0 failed with parameters: ...' and the trial's traceback before convbench's line."""
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "raising_zoo.py").write_text(RAISING)
    root = project(
        prepared,
        tmp_path / "p",
        **{
            "models": ["cnn", "raising"],
            "model.raising": {"builder": "raising_zoo:Raising"},
            "tune.trials": 1,
            "tune.seeds": [0],
            "tune.startup_trials": 1,
            "tune.space.epochs": [1],
        },
    )
    logs = tmp_path / "logs"
    path = os.pathsep.join([str(zoo), *filter(None, [os.environ.get("PYTHONPATH")])])
    result = run(
        ["convbench", "tune", "-m", "raising"], root, timeout=300, PYTHONPATH=path, CONVBENCH_LOG_DIR=str(logs)
    )
    assert "Trial 0 failed" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("convbench: error: unexpected RuntimeError: this model cannot train"), result.stderr
    assert "Traceback" not in result.stderr and result.returncode == 1


# --- a worker killed mid-cell ------------------------------------------------------------------------------------


def _lock_holders(root: Path) -> dict[str, int]:
    """Cell -> pid of the process holding its lock now (the lock file says 'pid N')."""
    found = {}
    for lock in (root / paths.models_dir("digits")).glob("*.lock"):
        try:
            found[lock.stem] = int(lock.read_text().removeprefix("pid "))
        except (OSError, ValueError):
            continue
    return found


def _started(args: list[str], root: Path) -> subprocess.Popen[str]:
    """A real command in its own process group (so a test can kill all of it), output captured."""
    return subprocess.Popen(
        args,
        cwd=root,
        env=env(MLFLOW_TRACKING_URI=""),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_a_worker_killed_mid_cell_fails_that_cell_and_the_others_finish(prepared: Path, tmp_path: Path) -> None:
    """multiprocessing.Pool loses the task of a worker that dies: the stage waited for its cell forever."""
    root = project(prepared, tmp_path / "p", **{"models": ["cnn", "mlp"], "train.epochs": 60, "train.workers": 2})
    parent = _started(["convbench", "train"], root)
    try:
        held = _wait(
            lambda: {
                cell: pid
                for cell, pid in _lock_holders(root).items()
                if pid != parent.pid and (root / paths.models_dir("digits") / f"{cell}.resume.pt").exists()
            },
            240,
            "the worker's cell to save its first epoch",
            parent,
        )
        ((cell, worker),) = held.items()
        os.kill(worker, signal.SIGKILL)  # the out-of-memory killer's way
        _out, err = parent.communicate(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
    other = "mlp-s0" if cell == "cnn-s0" else "cnn-s0"
    assert parent.returncode == 1 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        f"convbench: error: train: 1 of 2 cell(s) failed (1 finished): {cell}: worker pid {worker} was killed by "
        f"signal 9 (SIGKILL, the out-of-memory killer's way? see `dmesg`) while running train for {cell}; its "
        f"resume state is kept: run the command again to resume it"
    )
    assert (root / paths.models_dir("digits") / f"{other}.pt").is_file(), "the other cell finished"
    assert (root / paths.models_dir("digits") / f"{cell}.resume.pt").is_file(), "the killed cell can resume"
    again = run(["convbench", "train"], root, timeout=400, MLFLOW_TRACKING_URI="")
    assert again.returncode == 0, again.stderr[-2000:]
    assert (root / paths.models_dir("digits") / f"{cell}.pt").is_file()


def _spawned_children(parent: int) -> list[int]:
    """The pool workers `parent` spawned (not multiprocessing's resource tracker)."""
    listed = subprocess.run(
        ["ps", "-ww", "--ppid", str(parent), "-o", "pid=,args="], capture_output=True, text=True
    ).stdout
    return [int(line.split()[0]) for line in listed.splitlines() if "spawn_main" in line]


def _running_trials(root: Path) -> int:
    """Trials after the shared recipe (trial 0, run in the stage's own process) that a worker is running now."""
    storage = root / paths.study_storage("digits", "mlp")
    if not storage.is_file():
        return 0
    with contextlib.closing(sqlite3.connect(storage, timeout=10)) as db:
        with contextlib.suppress(sqlite3.OperationalError):  # the tables are not made yet
            return db.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING' AND number >= 1").fetchone()[0]
    return 0


def test_a_tuning_worker_killed_mid_study_ends_tune_with_one_line(prepared: Path, tmp_path: Path) -> None:
    """A killed tuning worker was the catch-all BrokenProcessPool line; it is a worker like a cell's now."""
    overrides = {
        "models": ["mlp"],
        "reference": None,
        "tune.trials": 3,
        "train.epochs": 600,
        "tune.space.epochs": [600],
    }
    root = project(prepared, tmp_path / "t", **overrides)
    parent = _started(["convbench", "tune", "--workers", "2"], root)
    try:
        _wait(lambda: _running_trials(root) >= 2, 240, "both workers inside a trial", parent)
        worker = _spawned_children(parent.pid)[0]
        os.kill(worker, signal.SIGKILL)  # the out-of-memory killer's way
        _out, err = parent.communicate(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
    assert parent.returncode == 1 and "Traceback" not in err, err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"convbench: error: a tuning worker failed: worker pid {worker} was killed by signal 9 (SIGKILL")
    ), err[-1500:]
    assert err.strip().endswith("run `convbench tune` again to resume")


# --- a stopped DVC-queue sweep -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop", "marker"),
    [(signal.SIGINT, "sweep: queued stop-0"), (signal.SIGTERM, "DVC queue worker(s)")],
    ids=["ctrl-c-while-queueing", "sigterm-while-waiting"],
)
def test_a_stopped_sweep_leaves_nothing_in_dvc_queue_and_no_worker(
    tmp_path: Path, stop: signal.Signals, marker: str
) -> None:
    """Ctrl-C while queueing left the queued cells to run at the next `dvc queue start`; SIGTERM while waiting left
    the queue worker running (and the cells with it)."""
    root = copy_project(tmp_path / "p", **{"data.name": "digits", "train.epochs": 200})
    log = tmp_path / "sweep.log"
    with log.open("w") as out:
        sweep = subprocess.Popen(
            ["convbench", "sweep", "-S", "train.lr=0.001,0.002,0.003", "--name", "stop"],
            cwd=root,
            env=env(MLFLOW_TRACKING_URI=""),
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        _wait(lambda: marker in log.read_text(), 300, f"'{marker}'", sweep)
        sweep.send_signal(stop)
        _out, err = sweep.communicate(timeout=180)
        status = run(["dvc", "queue", "status"], root, timeout=120).stdout
        deadline = time.monotonic() + 60  # `dvc queue stop` is asynchronous: a worker ends in a moment
        while _queue_workers(root) and time.monotonic() < deadline:
            time.sleep(0.5)
        workers = _queue_workers(root)
    finally:
        sweep.kill()
        run(["dvc", "queue", "stop", "--kill"], root, timeout=120)  # whatever the outcome, no worker outlives the test
    assert sweep.returncode == 130, err
    assert "stop-" not in status, status
    assert workers == [], "no DVC queue worker is left running"
    assert err.strip().splitlines()[-1] == f"convbench: interrupted; {INTERRUPTED['sweep']}", err


def _queue_workers(root: Path) -> list[int]:
    """Live `dvc exp queue-worker` processes (and `dvc queue start`, their parent) of the project at `root`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes()
            if proc.name.isdigit() and b"queue" in command and Path(os.readlink(proc / "cwd")) == root:
                found.append(int(proc.name))
        except OSError:
            continue
    return found


# --- a signal that a library turns into a store error ------------------------------------------------------------

# `convbench` itself, with one MLflow call hit by SIGTERM mid-way the way MLflow's SQL store reports that: an
# interrupt landing inside SQLite comes out of sqlite3 as OperationalError, and MLflow makes it an MlflowException.
INTERRUPTED_STORE_CALL = """
import os, signal, sys
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

name = sys.argv.pop(1)
original = getattr(MlflowClient, name)


def interrupted(self, *args, **kwargs):
    setattr(MlflowClient, name, original)  # once
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)
    except KeyboardInterrupt as exc:
        raise MlflowException("(sqlite3.OperationalError) interrupted") from exc


setattr(MlflowClient, name, interrupted)
sys.argv[0] = "convbench"
from pipeline.cli import main

main()
"""


def test_a_signal_during_the_final_upload_or_lookup_ends_with_the_interrupt_status(
    prepared: Path, tmp_path: Path
) -> None:
    """A SIGTERM during evaluate's artifact upload ended it as a tracking failure, and one during report's
    comparison-link lookup ended report with exit 0: a signal must always end a command with 130."""
    root = project(prepared, tmp_path / "p")
    for stage in ("train", "evaluate", "bench"):
        done = run(["convbench", stage], root, timeout=300, MLFLOW_TRACKING_URI="")
        assert done.returncode == 0, done.stderr[-2000:]
    script = tmp_path / "interrupted_store_call.py"
    script.write_text(INTERRUPTED_STORE_CALL)
    scored = [root / paths.metrics("digits", "cnn", 0), root / paths.predictions("digits", "cnn", 0)]
    for path in scored:  # cnn-s0 is scored anew below, as a cell evaluated for the first time
        path.unlink()
    for call, args, stage in (
        ("log_artifact", ["evaluate", "-m", "cnn", "-s", "0"], "evaluate"),
        ("log_artifact", ["bench"], ""),
        ("search_runs", ["report"], ""),
    ):
        result = run([sys.executable, str(script), call, *args], root, timeout=300, MLFLOW_TRACKING_URI="")
        assert result.returncode == 130, (call, result.returncode, result.stderr[-2000:])
        assert result.stderr.strip().splitlines()[-1] == f"convbench: interrupted; {INTERRUPTED[stage]}"
        if stage == "evaluate":
            assert not any(path.exists() for path in scored), "no metrics that look current beside a FAILED run"
            again = run(["convbench", "evaluate"], root, timeout=300, MLFLOW_TRACKING_URI="")
            assert again.returncode == 0 and "evaluate: cnn-s0 test_accuracy" in again.stdout, again.stderr[-2000:]
            client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
            (cell,) = client.search_runs(
                [client.get_experiment_by_name("convbench-digits").experiment_id], "attributes.run_name = 'cnn-s0'"
            )
            assert cell.info.status == "FINISHED", "the next evaluate scores it again and finishes its run"


# --- a small address-space limit (`ulimit -v`) --------------------------------------------------------------------


def test_a_small_address_space_limit_is_one_line_naming_memory_and_the_limit(prepared: Path, tmp_path: Path) -> None:
    """Under `ulimit -v`, importing torch fails with 'failed to map segment from shared object': that was the
    catch-all 'unexpected ImportError' line."""
    root = project(prepared, tmp_path / "p")
    result = run(
        ["bash", "-c", "ulimit -v 1000000 && exec convbench train -m cnn -s 0"],
        root,
        timeout=300,
        MLFLOW_TRACKING_URI="",
        CONVBENCH_LOG_DIR=str(tmp_path / "logs"),
    )
    assert_one_error_line(
        result,
        1,
        ("out of memory (", "this process may use only 1.0 GiB of address space (`ulimit -v` 1000000)", "ulimit -v"),
    )
    assert not (tmp_path / "logs").exists(), "no 'unexpected' log"
    assert not (root / paths.models_dir("digits")).exists()


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
            "allocate 4294967296 bytes. Error code 12 (Cannot allocate memory)"
        ),
        RuntimeError("std::bad_alloc"),
        OSError(errno.ENOMEM, "Cannot allocate memory"),
        ImportError("libtorch_cpu.so: failed to map segment from shared object"),
        ImportError("libgomp.so.1: cannot allocate memory in static TLS block"),
        RuntimeError("can't start new thread"),
    ],
    ids=["MemoryError", "torch-cpu-allocator", "bad_alloc", "ENOMEM", "map-segment", "static-TLS", "no-thread"],
)
def test_every_form_of_a_failed_allocation_under_rlimit_as_names_memory(
    error: BaseException, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import errors

    monkeypatch.setattr(errors, "address_space_limit", lambda: 2 * 2**30)
    line = errors.out_of_memory_line(error)
    assert line is not None and line.startswith("out of memory (") and "(`ulimit -v` 2097152)" in line
    wrapped = RuntimeError("MLflow could not log the batch")
    wrapped.__cause__ = error
    assert errors.out_of_memory_line(wrapped) == line, "a cause counts too"
    monkeypatch.setattr(errors, "address_space_limit", lambda: None)
    if "thread" not in str(error):  # without an address-space limit a thread may fail for other reasons
        assert "more memory" in (errors.out_of_memory_line(error) or "")
