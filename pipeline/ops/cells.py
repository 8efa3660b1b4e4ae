"""Running a stage over its cells: which cells --model/--seed pick, keeping current ones, pruning old ones, the lock.

Nothing here changes a number, so none of it is in a cell's identity.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.artifacts import atomic, paths
from pipeline.core import cell as cells
from pipeline.core import models
from pipeline.core.measure import count_flops
from pipeline.core.runtime import intra_op_threads
from pipeline.errors import (
    ConvbenchError,
    ParamsError,
    note_stop,
    out_of_memory_line,
    redact,
    stop_requested,
    unexpected_line,
)
from pipeline.ops import fanout
from pipeline.ops import pool as pools
from pipeline.ops.uris import absolute_data, absolute_sqlite
from pipeline.params import validate_params

if TYPE_CHECKING:
    from pipeline.core.cell import Cell
    from pipeline.core.data import PreparedData
    from pipeline.params import Params, TrainParams


def select(params: Params, model: str | None, seed: int | None) -> tuple[list[str] | None, list[int] | None]:
    """The models and seeds --model and --seed pick (None: all of them); each must be one params.yaml lists."""
    if model is not None and model not in params.models:
        raise ParamsError(f"--model {model}: not in models {params.models} of params.yaml; pick one of them or add it")
    if seed is not None and seed not in params.train.seeds:
        raise ParamsError(
            f"--seed {seed}: not in train.seeds {params.train.seeds} of params.yaml; pick one of them "
            f"or add it there (a cell outside models x train.seeds would be removed by the next run)"
        )
    return ([model] if model is not None else None), ([seed] if seed is not None else None)


@dataclass(frozen=True)
class CellStage:
    """A stage computed cell by cell (train, evaluate): what it writes for a cell, where those files live, when a
    cell is current, and how to compute one (a module-level function: workers get it pickled by reference)."""

    name: str
    outputs: Callable[[str, str, int], list[Path]]  # (dataset, model, seed) -> every file it keeps for that cell
    folders: Callable[[str], list[tuple[Path, str]]]  # dataset -> (folder, glob) pairs its cells' files sit in
    is_current: Callable[[Cell, PreparedData], bool]
    compute: Callable[[Cell, PreparedData], str]


def each_cell(
    stage: CellStage, params: Params, model: str | None, seed: int | None, say: Callable[[str], None], runner: Runner
) -> None:
    """Compute the cells --model/--seed pick (default: every cell) with `runner`; unless some were picked by hand,
    keep the current ones and remove the files of cells no longer in models x train.seeds."""
    names, seeds = select(params, model, seed)
    prepared = cells.prepared_data(params)
    chosen = cells.resolve(params, prepared, names, seeds)
    picked = (names, seeds) != (None, None)
    todo = []
    for cell in chosen:
        if not picked and stage.is_current(cell, prepared):
            say(f"{stage.name}: {cell.name} is current (same inputs and code): kept")
        else:
            todo.append(cell)
    run_cells(stage.name, todo, prepared, stage.compute, runner, say)
    if not picked:
        for path in prune(stage, params.data.name, chosen):
            say(f"{stage.name}: removed {path} (its cell is no longer in models x train.seeds)")


def prune(stage: CellStage, dataset: str, kept: list[Cell]) -> list[Path]:
    """Remove this dataset's files of `stage` that belong to no kept cell, so the stage's outputs are its cells (another
    dataset's files are never touched)."""
    keep = {path for cell in kept for path in stage.outputs(dataset, cell.model, cell.seed)}
    stale = [
        path for folder, pattern in stage.folders(dataset) for path in sorted(folder.glob(pattern)) if path not in keep
    ]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


@dataclass(frozen=True)
class Runner:
    """Where a stage's cells run: one after another here, in `workers` processes here, or as Ray tasks."""

    workers: int = 1
    address: str | None = None  # a Ray cluster's address; None: this machine
    threads: int | None = None  # intra-op threads per cell (train.threads); None: chosen per cell from its share

    @classmethod
    def of(cls, train: TrainParams, address: str | None = None) -> Runner:
        """The runner train.workers, train.backend and train.threads ask for (backend ray needs `address`)."""
        if train.backend == "ray":
            return cls(train.workers, fanout.ray_address(address, "train.backend ray"), train.threads)
        return cls(train.workers, None, train.threads)

    @property
    def parallel(self) -> bool:
        """Whether cells run outside this process."""
        return self.address is not None or self.workers > 1


@dataclass(frozen=True)
class CellJob:
    """One cell for a worker process or a Ray task, as plain values, so it pickles to any process or node."""

    compute: Callable[[Cell, PreparedData], str]  # a stage's module-level function, pickled by reference
    params: dict[str, Any]  # params with absolute paths and tracking URI; the worker validates them again
    model: str
    seed: int
    dataset: str
    device: str  # train.device: whether the cell wants a GPU
    project: str  # absolute: the worker works there, as user builders import from the project folder
    threads: int  # the cores this cell may use (its intra-op threads are chosen within them)
    gpus: int = 0  # GPUs of this machine: with several, each worker process takes one (round robin)
    pooled: bool = False  # in a worker process on this machine (not a Ray task)

    @property
    def name(self) -> str:
        """'cnn-s0'."""
        return paths.cell(self.model, self.seed)


@dataclass(frozen=True)
class CellOutcome:
    """What a cell's worker gives back: the stage's line for it, or the one line saying why it failed."""

    cell: str
    line: str
    failed: bool


def portable(params: Params, project: Path) -> dict[str, Any]:
    """params as plain values another process re-validates, with data paths and the tracking URI made absolute."""
    from pipeline.ops import tracking  # MLflow loads only where cells leave this process

    raw = params.model_dump(mode="json")
    raw["tracking"]["uri"] = absolute_sqlite(tracking.tracking_uri(params.tracking, project), project)
    return absolute_data(raw, project)


def run_job(job: CellJob) -> CellOutcome:
    """One cell in a worker: the stage's line, or its failure as one line (an exception may not pickle back)."""
    pools.gpu(job.gpus)
    for stop in pools.STOPS:  # stop like the CLI: the cell's run ends FAILED, its lock goes
        signal.signal(stop, _raise_interrupt)
    import torch

    torch.set_num_threads(max(1, job.threads))
    try:
        os.chdir(job.project)
        params = validate_params(job.params, "params.yaml")
        prepared = cells.prepared_data(params)
        return CellOutcome(job.name, job.compute(cells.one(params, job.model, job.seed, prepared), prepared), False)
    except KeyboardInterrupt:
        return _stopped(job)
    except ConvbenchError as exc:
        return _stopped(job) if stop_requested() else CellOutcome(job.name, str(exc), True)
    except Exception as exc:  # noqa: BLE001 - one line per failed cell; the traceback is kept in a log
        if stop_requested():  # an interrupt a library turned into an error of its own
            return _stopped(job)
        return CellOutcome(job.name, out_of_memory_line(exc) or unexpected_line(exc), True)
    finally:
        if job.pooled:
            pools.idle()


def _stopped(job: CellJob) -> CellOutcome:
    """A cell stopped by a signal: a pooled worker leaves (its cell's run is closed FAILED) rather than wait for more."""
    if job.pooled:
        os._exit(130)
    return CellOutcome(job.name, "interrupted", True)


def _raise_interrupt(signum: int, frame: object) -> None:
    """The first stop unwinds the cell; later ones (Ctrl-C reaches the whole group, then the parent's SIGTERM)
    are ignored, so they cannot cut its cleanup short and leave a temporary file."""
    for stop in pools.STOPS:
        signal.signal(stop, signal.SIG_IGN)
    note_stop(signum)  # kept even if a library swallows the KeyboardInterrupt or turns it into an error
    raise KeyboardInterrupt


def run_cells(
    stage: str,
    todo: list[Cell],
    prepared: PreparedData,
    compute: Callable[[Cell, PreparedData], str],
    runner: Runner,
    say: Callable[[str], None],
) -> None:
    """Compute `todo` here one by one, or in parallel; in parallel every cell runs even when one fails, and the
    failures are reported together in one line."""
    if not runner.parallel or (len(todo) < 2 and runner.address is None):
        for cell in todo:
            say(compute(cell, prepared))
        return
    if not todo:
        return
    import torch

    costs = {c.model: _cost(c, prepared) for c in todo}  # a model's seeds cost alike: one count per model
    todo = sorted(todo, key=lambda c: costs[c.model], reverse=True)  # longest first: no long cell left alone last
    project = Path.cwd().resolve()
    share = max(1, torch.get_num_threads() // min(runner.workers, len(todo))) if runner.address is None else 1
    jobs = [
        CellJob(
            compute,
            portable(c.params, project),
            c.model,
            c.seed,
            c.params.data.name,
            c.params.train.device,
            str(project),
            runner.threads or share,
        )
        for c in todo
    ]
    if runner.address:
        outcomes = _on_ray(stage, jobs, runner.address, say)
    else:
        outcomes = _on_processes(stage, todo, jobs, prepared, runner, say)
    failed = [o for o in outcomes if o.failed]
    if failed:
        done = len(outcomes) - len(failed)
        raise ConvbenchError(
            f"{stage}: {len(failed)} of {len(outcomes)} cell(s) failed ({done} finished): "
            + "; ".join(f"{o.cell}: {o.line}" for o in failed)
        )


def _cost(cell: Cell, prepared: PreparedData) -> float:
    """A cell's training FLOPs (one forward+backward per image per epoch), to start the longest cells first."""
    sample = prepared.splits.train.x[:2].float()
    flops = count_flops(models.build(cell.config), sample, prepared.splits.train.y[:2]).train_step
    return flops * cell.params.train.epochs * len(prepared.splits.train)


def _on_processes(
    stage: str,
    todo: list[Cell],
    jobs: list[CellJob],
    prepared: PreparedData,
    runner: Runner,
    say: Callable[[str], None],
) -> list[CellOutcome]:
    """This process trains cells itself while `workers - 1` worker processes (started with the stage, see
    pool.warm) take the others; one cell per GPU when the machine has several."""
    import torch

    gpus = torch.cuda.device_count() if jobs[0].device in ("auto", "cuda") else 0
    cells_by_name = {cell.name: cell for cell in todo}

    def here(job: fanout.Job) -> CellOutcome:
        with intra_op_threads(job.arg.threads):
            return _here(cells_by_name[job.name], job.arg, prepared)

    running = fanout.on_processes(
        [fanout.Job(job.name, run_job, job) for job in jobs],
        min(runner.workers, len(jobs)) - 1,
        jobs[0].compute.__module__,
        here=here,
        on_worker=lambda job: replace(job, arg=replace(job.arg, gpus=gpus, pooled=True)),
    )
    return _collect(stage, running, say)


def _collect(stage: str, running: Iterator[fanout.Done], say: Callable[[str], None]) -> list[CellOutcome]:
    """Every cell's outcome as it finishes, its line said at once; a cell whose worker ended is a failed one."""
    keep = (
        "its resume state is kept: run the command again to resume it" if stage == "train" else "run the command again"
    )
    outcomes = []
    for done in running:
        outcome = done.value
        if done.failure is not None:
            ended = done.failure.startswith("worker pid ")
            line = f"{done.failure} while running {stage} for {done.job.name}; {keep}" if ended else done.failure
            outcome = CellOutcome(done.job.name, line, True)
        outcomes.append(outcome)
        if not outcome.failed:
            say(outcome.line)
    return outcomes


def _here(cell: Cell, job: CellJob, prepared: PreparedData) -> CellOutcome:
    """One cell in this process, its failure one line as in a worker (an interrupt stops everything)."""
    try:
        return CellOutcome(job.name, job.compute(cell, prepared), False)
    except ConvbenchError as exc:
        return CellOutcome(job.name, str(exc), True)
    except Exception as exc:  # noqa: BLE001 - one line per failed cell; the traceback is kept in a log
        return CellOutcome(job.name, out_of_memory_line(exc) or unexpected_line(exc), True)


def _on_ray(stage: str, jobs: list[CellJob], address: str, say: Callable[[str], None]) -> list[CellOutcome]:
    """Each cell as a Ray task reserving its threads' CPUs (and a GPU when train.device is cuda)."""
    tasks = [fanout.Job(job.name, run_job, job, job.threads, 1 if job.device == "cuda" else 0) for job in jobs]
    submitted = lambda: say(f"{stage}: {len(jobs)} cell(s) as Ray tasks at {redact(address)}")  # noqa: E731 - one line
    return _collect(stage, fanout.on_ray(tasks, address, submitted), say)


@contextmanager
def cell_lock(dataset: str, model: str, seed: int) -> Iterator[None]:
    """Only one process trains a cell at a time: a second one would share its resume state and MLflow run."""
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 owns the cell (it alone writes and logs)
        yield
        return
    checkpoint = paths.checkpoint(dataset, model, seed)
    lock = checkpoint.with_suffix(".lock")
    try:
        with atomic.exclusive(lock):
            yield
    except atomic.Busy as busy:
        raise ConvbenchError(
            f"{checkpoint}: cell {paths.cell(model, seed)} is being trained by another process "
            f"({busy.holder or 'lock ' + str(lock)}); wait for it to finish (or stop it), then run "
            f"`convbench train --dataset {dataset} --model {model} --seed {seed}` again if still needed"
        ) from None
