"""Optuna studies shared through a storage, and the workers that run their trials: here, on processes of this
machine, or as Ray tasks.

What tuning *is* (the space, the objective, the summary) lives in stages/tune.py; this is how its trials get run:
the storage every worker opens (SQLite under tuned/ by default, so a killed run loses no finished trial), the
seeds that keep workers from drawing the same points, a killed run's leftovers, and one progress bar over them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from pipeline.artifacts import paths
from pipeline.core import recipes
from pipeline.core.data import PreparedData, tensors_sha256
from pipeline.errors import ConvbenchError
from pipeline.ops import fanout, progress, tracking
from pipeline.ops.cells import portable
from pipeline.ops.cluster import is_local_address
from pipeline.ops.uris import absolute_path, absolute_sqlite, sqlite_uri
from pipeline.params import Params

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
Echo = Callable[[str], None]


def default_storage(dataset: str, model: str) -> str:
    """SQLite under tuned/<dataset>/: every finished trial is committed before the next starts, so a kill loses none."""
    return sqlite_uri(paths.study_storage(dataset, model).resolve())


def study_storage(storage: str | None, dataset: str, model: str) -> str:
    """The storage URL every worker opens: a relative SQLite file made absolute (workers run elsewhere), its folder made."""
    url = absolute_sqlite(storage or default_storage(dataset, model), Path.cwd())
    database = tracking.sqlite_path(url)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    return url


def study_name(params: Params, model: str, prepared: PreparedData) -> str:
    """The study of exactly these settings and this train/val data (the test split is not part of its identity)."""
    seen = {
        f"{split}_{part}": getattr(getattr(prepared.splits, split), part) for split in ("train", "val") for part in "xy"
    }
    digest = hashlib.sha256((recipes.fingerprint(params, model) + tensors_sha256(seen)).encode()).hexdigest()
    return f"{model}-{digest[:16]}"


def sampler_seed(base: int, finished: int, worker: int) -> int:
    """tune.sampler_seed for an uninterrupted single worker; distinct derived seeds for other workers and resumed runs.

    A resumed run or a second worker with the very same seed would draw the same random startup points again.
    """
    if finished == 0 and worker == 0:
        return base
    return int(hashlib.sha256(f"{base}:{finished}:{worker}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def open_study(storage: str, name: str, params: Params, seed: int) -> optuna.Study:
    """Create or load the study with a seeded TPE sampler and the configured pruner."""
    tune = params.tune
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=tune.startup_trials)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials, n_warmup_steps=0)
        if tune.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    try:
        engine = {"connect_args": {"timeout": 60}} if storage.startswith("sqlite:") else None
        rdb = optuna.storages.RDBStorage(storage, engine_kwargs=engine)
        return optuna.create_study(
            storage=rdb, study_name=name, direction="maximize", sampler=sampler, pruner=pruner, load_if_exists=True
        )
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy and Optuna raise many kinds for a bad URL
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConvbenchError(
            f"cannot open the study storage '{tracking.redact(storage)}' ({tracking.redact(first)}); "
            f"pass --storage sqlite:///PATH or a database URL every worker can reach"
        ) from None


def quiet_optuna() -> None:
    """Optuna's per-trial log lines would drown the progress bar; warnings stay, but not its report of a failed
    trial: the trial's error (or interrupt) goes on to end the stage with convbench's one line, and Optuna's
    report of it is the trial's params and its Python traceback, printed before that line."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    reporter = logging.getLogger("optuna.study._optimize")  # where Optuna's _log_failed_trial logs
    if not any(isinstance(found, _NoFailedTrialReport) for found in reporter.filters):
        reporter.addFilter(_NoFailedTrialReport())


class _NoFailedTrialReport(logging.Filter):
    """Drop Optuna's 'Trial N failed with parameters: ... because of the following error' (with its traceback) and
    'Trial N failed with value ...' records."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not re.match(r"Trial \d+ failed with ", str(record.msg))


def resume(study: optuna.Study, model: str, trials: int, echo: Echo) -> tuple[bool, int]:
    """Fail the trials a killed run left RUNNING and count the finished ones, so a resumed run repeats none of them."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:  # left RUNNING by a killed run: they did not finish, so they do not count
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    if stale:
        echo(f"tune: {model}: {len(stale)} trial(s) a killed run left unfinished marked FAIL (not counted)")
    if finished:
        echo(
            f"tune: {model}: resuming study {study.study_name}: {min(finished, trials)} of "
            f"{trials} trials already finished"
        )
    return bool(stale), finished


@dataclass(frozen=True)
class WorkerSpec:
    """What one Optuna worker needs, as plain values, so it pickles to a spawned process or a Ray task on any node."""

    params: dict[str, Any]  # params with an absolute data.root and tracking URI; the worker re-validates them
    model: str
    tensors: str  # absolute paths of the prepared data
    manifest: str
    storage: str  # the study storage URL every worker opens
    tracking_uri: str  # the tracking store every worker logs to (absolute)
    study: str
    parent_run_id: str | None  # the tune-<model> run each trial's run nests under (None when tracking is off)
    project: str  # absolute: the worker works there, as user builders import from the project folder
    n_trials: int = 0
    threads: int = 1
    seed: int = 0  # the worker's own sampler seed

    @classmethod
    def of(
        cls, params: Params, model: str, prepared: PreparedData, storage: str, study: str, parent_run_id: str | None
    ) -> WorkerSpec:
        """The spec of this study, every path and URI made absolute from the project folder (the working directory)."""
        project = Path.cwd().resolve()
        portable_params = portable(params, project)
        return cls(
            portable_params,
            model,
            absolute_path(paths.prepared_tensors(prepared.name), project),
            absolute_path(paths.prepared_manifest(prepared.name), project),
            storage,
            portable_params["tracking"]["uri"],
            study,
            parent_run_id,
            str(project),
        )


def shares(remaining: int, workers: int) -> list[int]:
    """Split the remaining trials as evenly as possible over the workers (workers without a trial are not started)."""
    return [n for n in (remaining // workers + (1 if i < remaining % workers else 0) for i in range(workers)) if n]


@dataclass(frozen=True)
class Workers:
    """Where the trials after the enqueued ones run (here, in `count` processes on this machine, or as Ray tasks)
    and the study storage they share (None: a SQLite file under tuned/)."""

    count: int = 1
    address: str | None = None  # a Ray cluster's address; None: this machine
    cpus_each: float = 1.0  # what each Ray task reserves
    storage: str | None = None

    @property
    def parallel(self) -> bool:
        """Whether any trial runs outside this process."""
        return self.address is not None or self.count > 1


def run_workers(  # 6 parameters: the workers, where they run, and what shows progress
    specs: list[WorkerSpec],
    workers: Workers,
    run: Callable[[WorkerSpec], int],
    study: optuna.Study,
    bar: TrialProgress,
    echo: Echo,
) -> None:
    """`run(spec)` for every spec at once, on processes of this machine or as Ray tasks, sharing the study storage;
    each gets its share of threads (a process: this machine's cores over the workers; a task: what it reserves)."""
    if workers.address is None:
        threads = max(1, (os.cpu_count() or 1) // workers.count)
        jobs = [fanout.Job(f"worker {i}", run, replace(spec, threads=threads)) for i, spec in enumerate(specs)]
        done = fanout.on_processes(jobs, len(jobs), run.__module__, tick=lambda: bar.refresh(study), poll=1.0)
    else:
        if not is_local_address(workers.address):
            for what, url in (("study storage", specs[0].storage), ("tracking store", specs[0].tracking_uri)):
                if url.startswith("sqlite:"):
                    echo(
                        f"convbench: warning: workers on other Ray nodes cannot reach the {what} "
                        f"{tracking.redact(url)}; use a database or server URL every node reaches"
                    )
        threads = max(1, int(workers.cpus_each))
        jobs = [
            fanout.Job(f"worker {i}", run, replace(spec, threads=threads), workers.cpus_each)
            for i, spec in enumerate(specs)
        ]
        address = workers.address
        said = lambda: echo(  # noqa: E731 - one line
            f"tune: {specs[0].model}: {len(jobs)} Optuna worker(s) on Ray at {tracking.redact(address)}"
        )
        done = fanout.on_ray(jobs, address, said, lambda: bar.refresh(study))
    for each in done:
        if each.failure is not None:  # a worker's own error is raised by on_processes or on_ray with its message
            raise ConvbenchError(f"a tuning worker failed: {each.failure}; run `convbench tune` again to resume")


class TrialProgress:
    """A rich progress bar over one model's trials, with the best validation score so far (read from the storage)."""

    def __init__(self, model: str, trials: int, quiet: bool = False) -> None:
        self.trials = trials
        self.progress = progress.bar(quiet)
        self.task = self.progress.add_task(f"tune {model}", total=trials, status="")

    def __enter__(self) -> TrialProgress:
        self.progress.start()
        return self

    def refresh(self, study: optuna.Study) -> None:
        """Count the finished trials and show the best complete one."""
        finished = sorted(study.get_trials(deepcopy=False, states=FINISHED), key=lambda t: t.number)[: self.trials]
        complete = [t for t in finished if t.state == TrialState.COMPLETE]
        status = ""
        if complete:
            best = max(complete, key=lambda t: float("-inf") if t.value is None else t.value)
            status = f"best val_acc {best.value:.4f} (trial {finished.index(best)})"
        self.progress.update(self.task, completed=len(finished), status=status)

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
