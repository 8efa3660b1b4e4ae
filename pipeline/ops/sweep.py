"""Run a grid of cells on an existing engine: DVC's experiment queue on one machine, or a Ray cluster.

Each cell is one complete pipeline run (download, prepare, train, evaluate, report) with its own
params, logging to the shared tracking server with `sweep` and `sweep_cell` tags. A failed cell is
reported and the others go on; the caller decides the exit status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.artifacts import paths
from pipeline.artifacts.atomic import write_bytes
from pipeline.artifacts.records import Summary
from pipeline.errors import ConvbenchError, redact
from pipeline.ops import fanout
from pipeline.ops.grid import CELL_TAG, SWEEP_TAG, SweepCell, format_value
from pipeline.ops.uris import absolute_data
from pipeline.params import dataset_names

DVC_DONE = {"Success": "success", "Failed": "failed"}
SWEEPS_DIR = Path("sweeps")


@dataclass(frozen=True)
class CellOutcome:
    """How one cell ended: 'success' or 'failed', with test accuracy per (model, seed) or the error line."""

    cell: str
    settings: str
    status: str
    detail: str
    accuracy: dict[str, float]


Echo = Callable[[str], None]


# --- DVC experiment queue -------------------------------------------------------------------------------------------


def run_on_dvc_queue(
    cells: list[SweepCell], project: Path, jobs: int, tracking_uri: str, echo: Echo, poll_seconds: float = 2.0
) -> list[CellOutcome]:
    """Queue one `dvc exp run` per cell, start `jobs` queue workers, and wait until every cell has ended.

    Queued experiments run in temporary copies of the project, so the tracking URI is passed as an
    absolute $MLFLOW_TRACKING_URI (a relative SQLite path would land inside the copy and vanish).
    """
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    queued: list[str] = []
    queueing = None  # the cell `dvc exp run --queue` is queueing now
    try:
        for cell in cells:
            sets = [f"{key}={format_value(value)}" for key, value in cell.settings.items()]
            sets += [
                f"++tracking.tags.{SWEEP_TAG}={cell.raw_params['tracking']['tags'][SWEEP_TAG]}",
                f"++tracking.tags.{CELL_TAG}={cell.name}",
            ]
            queueing = cell.name
            _dvc(
                ["exp", "run", "--queue", "--name", cell.name, *(arg for s in sets for arg in ("-S", s))], project, env
            )
            queued.append(cell.name)
            queueing = None
            echo(f"sweep: queued {cell.name}: {cell.describe()}")
    except BaseException as exc:
        # An error or an interrupt (Ctrl-C, SIGTERM): a half-queued grid would run later, unasked, at the next
        # `dvc queue start`. A `dvc exp run --queue` cut short by an interrupt may have queued its cell too.
        interrupted = [queueing] if queueing and not isinstance(exc, ConvbenchError) else []
        _withdraw(project, env, queued + interrupted, stop_workers=False)
        raise
    states: dict[str, str] = {}
    try:
        _start_queue_workers(project, env, jobs)
        echo(f"sweep: started {jobs} DVC queue worker(s); `dvc queue status` shows progress")
        while len(states) < len(cells):
            time.sleep(poll_seconds)
            listed = _queue_states(project, env)
            for cell in cells:
                if cell.name in states:
                    continue
                if cell.name not in listed:  # removed by hand (`dvc queue remove`) or lost with its worker
                    states[cell.name] = "failed"
                    echo(f"sweep: {cell.name} is no longer in `dvc queue status`; counted as failed")
                elif listed[cell.name] in DVC_DONE:
                    states[cell.name] = DVC_DONE[listed[cell.name]]
                    echo(f"sweep: {cell.name} {states[cell.name]}")
    except BaseException:  # stopped while the cells run: none may run on, or start later, unasked
        _withdraw(project, env, [c.name for c in cells if c.name not in states], stop_workers=True)
        raise
    shown = json.loads(_dvc(["exp", "show", "--json", "--no-fetch"], project, env) or "[]")
    return [_dvc_outcome(cell, states[cell.name], shown, project, env) for cell in cells]


def _withdraw(project: Path, env: dict[str, str], unfinished: list[str], stop_workers: bool) -> None:
    """Take a stopped sweep's unfinished cells out of DVC's queue (killing those running) and, with stop_workers,
    stop the queue workers it started. Further stop signals are ignored meanwhile, so a second Ctrl-C cannot leave
    the queue half cleaned; each step is bounded in time."""
    stops = [signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])]
    main = threading.current_thread() is threading.main_thread()
    previous = {stop: signal.signal(stop, signal.SIG_IGN) for stop in stops} if main else {}

    def dvc(*args: str) -> bool:
        try:
            done = subprocess.run(["dvc", *args], cwd=project, env=env, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
        listed.update(_parse_states(done.stdout) if args[:2] == ("queue", "status") else {})
        return done.returncode == 0

    listed: dict[str, str] = {}
    try:
        if stop_workers:
            dvc("queue", "stop")  # first: a worker then takes no further task (it ends after its current one)
        deadline = time.monotonic() + 90
        while unfinished and time.monotonic() < deadline:
            listed.clear()
            if not dvc("queue", "status"):
                break
            present = [name for name in unfinished if name in listed]
            if not present:
                break
            running = [name for name in present if listed[name] == "Running"]
            if running:
                dvc("queue", "kill", "--force", *running)
            rest = [name for name in present if name not in running]
            # DVC removes none of a list when one of them was just taken by a worker: then one by one
            if rest and not dvc("queue", "remove", *rest) and len(rest) > 1:
                for name in rest:
                    dvc("queue", "remove", name)
            if running:
                time.sleep(0.5)  # a killed task is listed as running for a moment
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)


def _dvc(args: list[str], project: Path, env: dict[str, str]) -> str:
    """`dvc <args>`'s stdout; a failure is one line with DVC's own last line, not a traceback."""
    done = subprocess.run(["dvc", *args], cwd=project, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise ConvbenchError(f"`dvc {' '.join(args[:3])}` failed: {_last_line(done.stderr or done.stdout)}")
    return done.stdout


def _start_queue_workers(project: Path, env: dict[str, str], jobs: int) -> None:
    """`dvc queue start`; its detached workers inherit our stdout/stderr, so those must not be pipes we wait on."""
    with tempfile.TemporaryFile("w+") as errors:
        code = subprocess.run(
            ["dvc", "queue", "start", "--jobs", str(jobs)],
            cwd=project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            stdin=subprocess.DEVNULL,
        ).returncode
        if code != 0:
            errors.seek(0)
            raise ConvbenchError(f"`dvc queue start` failed: {_last_line(errors.read())}")


def _queue_states(project: Path, env: dict[str, str]) -> dict[str, str]:
    """Experiment name -> 'Queued' | 'Running' | 'Success' | 'Failed', read from `dvc queue status`."""
    return _parse_states(_dvc(["queue", "status"], project, env))


def _parse_states(listing: str) -> dict[str, str]:
    """Experiment name -> state, from the table `dvc queue status` prints."""
    states = {}
    for line in listing.splitlines():
        tokens = line.split()
        if len(tokens) >= 3 and tokens[-1] in ("Queued", "Running", "Success", "Failed"):
            states[tokens[1]] = tokens[-1]
    return states


def _dvc_outcome(
    cell: SweepCell, status: str, shown: list[dict[str, Any]], project: Path, env: dict[str, str]
) -> CellOutcome:
    """A finished cell's outcome: its test accuracies, or the error line its queue log ends with."""
    if status == "failed":
        logs = subprocess.run(["dvc", "queue", "logs", cell.name], cwd=project, env=env, capture_output=True, text=True)
        return CellOutcome(cell.name, cell.describe(), status, _error_line(logs.stdout + logs.stderr), {})
    return CellOutcome(cell.name, cell.describe(), status, "", _accuracy_from_exp_show(shown, cell.name))


def _accuracy_from_exp_show(shown: list[dict[str, Any]], experiment: str) -> dict[str, float]:
    """Each model's mean test accuracy in one experiment, from the summaries `dvc exp show --json` returned
    ('digits/cnn' when the experiment compared several datasets)."""
    found: dict[str, float] = {}
    revs = [rev for row in shown for group in row.get("experiments") or [] for rev in group.get("revs", [])]
    for rev in revs:
        if rev.get("name") != experiment:
            continue
        listed = ((rev.get("data") or {}).get("metrics") or {}).items()
        summaries = {Path(path).parent.name: content.get("data") or {} for path, content in listed}
        for dataset, data in summaries.items():
            prefix = f"{dataset}/" if len(summaries) > 1 else ""
            try:
                accuracy = Summary.model_validate(data).accuracy
            except ValidationError:
                continue  # a metrics file that is not a summary (a user's own) says nothing about the sweep
            found |= {f"{prefix}{model}": value for model, value in accuracy.items()}
    return found


# --- Ray ------------------------------------------------------------------------------------------------------------


def run_on_ray(  # 7 parameters: the sweep's cells and what each Ray trial reserves
    cells: list[SweepCell],
    project: Path,
    address: str | None,
    cpus_per_trial: float,
    gpus_per_trial: float,
    echo: Echo,
    tracking_uri: str | None = None,
) -> list[CellOutcome]:
    """Run one Ray task (a trial) per cell on the cluster at `address` ($RAY_ADDRESS) and collect the outcomes.

    Trials run on whichever node Ray picks, so every path they get is absolute and every run logs to
    the tracking URI the cells carry.
    """
    address = fanout.ray_address(address)
    root = (project / SWEEPS_DIR).resolve()
    jobs = [
        fanout.Job(
            cell.name,
            _trial,
            (cell.raw_params, str(root / cell.name.rsplit("-", 1)[0] / cell.name), cpus_per_trial, tracking_uri),
            cpus_per_trial,
            gpus_per_trial,
        )
        for cell in cells
    ]
    by_name = {cell.name: cell for cell in cells}
    said = lambda: echo(f"sweep: submitted {len(cells)} trial(s) to Ray at {redact(address)}")  # noqa: E731 - one line
    outcomes: dict[str, CellOutcome] = {}
    for done in fanout.on_ray(jobs, address, said):
        cell = by_name[done.job.name]
        if done.failure is None:
            result = done.value
            outcome = CellOutcome(cell.name, cell.describe(), result["status"], result["detail"], result["accuracy"])
        else:
            outcome = CellOutcome(cell.name, cell.describe(), "failed", done.failure, {})
        outcomes[cell.name] = outcome
        echo(f"sweep: {cell.name} {outcome.status}")
    return [outcomes[cell.name] for cell in cells]


def _trial(args: tuple[dict[str, Any], str, float, str | None]) -> dict[str, Any]:
    """run_trial for a fan-out job, which passes one argument."""
    return run_trial(*args)


def run_trial(
    raw_params: dict[str, Any], workdir: str, threads: float, tracking_uri: str | None = None
) -> dict[str, Any]:
    """One cell, on a Ray worker: write its params.yaml in `workdir` and run `convbench run` (every stage) there.

    The stages run in a subprocess, so a crash in one trial cannot take the worker down; their
    output goes to `workdir/trial.log`. The tracking URI travels in the environment, never in the
    params file, so a password in it is not written to the worker's disk.
    """
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes(folder / "params.yaml", yaml.safe_dump(raw_params, sort_keys=False).encode())
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": str(max(1, int(threads)))}
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "run"], cwd=folder, env=env, capture_output=True, text=True
    )
    write_bytes(folder / "trial.log", redact(done.stdout + done.stderr).encode())  # DVC and MLflow may echo URLs
    if done.returncode != 0:
        return {"status": "failed", "detail": _error_line(done.stderr + done.stdout), "accuracy": {}}
    return {"status": "success", "detail": str(folder), "accuracy": trial_accuracy(raw_params, folder)}


def trial_accuracy(raw_params: dict[str, Any], folder: Path) -> dict[str, float]:
    """Each model's mean test accuracy from the summary of every dataset the trial ran ('digits/cnn' when several)."""
    names = dataset_names(raw_params)
    found: dict[str, float] = {}
    for dataset in names:
        summary = Summary.load(folder / paths.summary(dataset), dataset)
        prefix = f"{dataset}/" if len(names) > 1 else ""
        found |= {f"{prefix}{model}": value for model, value in summary.accuracy.items()}
    return found


# --- shared ---------------------------------------------------------------------------------------------------------


def trial_params(cell: SweepCell, project: Path) -> SweepCell:
    """The cell with absolute data paths and no tracking URI of its own (run_trial passes it in the environment)."""
    raw = absolute_data(json.loads(json.dumps(cell.raw_params, default=str)), project)
    raw["tracking"]["uri"] = None
    return SweepCell(cell.name, cell.settings, raw, cell.params)


def _error_line(output: str) -> str:
    """The 'convbench: error: ...' line of a stage's output, else its last line."""
    errors = [line for line in output.splitlines() if line.startswith("convbench: error:")]
    return redact(errors[-1].removeprefix("convbench: error: ") if errors else _last_line(output))


def _last_line(text: str) -> str:
    """The last non-blank line of a tool's output: the part that says what went wrong."""
    return redact(fanout.last_line(text))
