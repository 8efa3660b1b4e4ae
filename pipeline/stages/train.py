"""Train stage: every (model, seed) cell with its own recipe, one after another or in parallel (train.workers).

The loop itself lives in core/runtime.py and what a cell is in core/cell.py; this stage opens each cell's
MLflow run, resumes an interrupted cell, and writes the checkpoint, the curves and the logged model. A cell
whose checkpoint was trained by this code from exactly what params.yaml now says is kept, so adding a seed
trains only the new cells and changing one model's settings retrains only that model.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from pipeline.artifacts import atomic, paths
from pipeline.artifacts import checkpoint as checkpoints
from pipeline.artifacts.code import source_sha256
from pipeline.artifacts.records import TrainSpeed
from pipeline.core import models
from pipeline.core.cell import Cell
from pipeline.core.data import PreparedData, SourceManifest, Splits
from pipeline.core.measure import device_context
from pipeline.core.runtime import (
    Distributed,
    EpochStats,
    ExecutionPlan,
    TrainState,
    device_splits,
    distributed_from_env,
    fit,
    place_model,
    seconds_to_final_accuracy,
    start_distributed,
    with_threads,
)
from pipeline.errors import ConvbenchError
from pipeline.ops import progress, tracking
from pipeline.ops.cells import CellStage, Runner, cell_lock, each_cell
from pipeline.params import Params


@dataclass(frozen=True)
class TrainResult:
    """What one cell's training produced."""

    cell: Cell
    checkpoint: Path
    curves: Path
    run_id: str | None
    history: list[EpochStats]
    speed: TrainSpeed
    resumed_after: int = 0  # the epochs an interrupted run had finished, resumed from its saved state (0: a fresh run)


def train(
    params: Params,
    model: str | None = None,
    seed: int | None = None,
    say: Callable[[str], None] = print,
    ray_address: str | None = None,
) -> None:
    """Train the selected cells (in parallel with train.workers > 1 or train.backend ray); without --model/--seed,
    keep the current ones and remove cells no longer listed."""
    each_cell(STAGE, params, model, seed, say, Runner.of(params.train, ray_address))


def train_one(cell: Cell, prepared: PreparedData) -> str:
    """Train one cell under its lock (here, or in a worker process or a Ray task); its line for the terminal."""
    with cell_lock(cell.dataset, cell.model, cell.seed):
        result = train_cell(cell, prepared)
    resumed = f"resumed after epoch {result.resumed_after} of {len(result.history)}, " if result.resumed_after else ""
    return (
        f"train: {cell.name} val_accuracy {result.history[-1].val_accuracy:.4f} "
        f"({resumed}{result.speed.train_images_per_second:,.0f} img/s) -> {result.checkpoint}"
    )


def is_current(cell: Cell, prepared: PreparedData) -> bool:
    """Whether the cell's checkpoint and curves exist and were trained by this code from the data, model and recipe
    params give now."""
    if not (cell.checkpoint_path.is_file() and paths.curves(cell.dataset, cell.model, cell.seed).is_file()):
        return False
    try:
        trained = cell.trained(prepared)
    except ConvbenchError:
        return False
    current = trained.seed == cell.seed and trained.code_sha256 == source_sha256("train")
    if current:  # an interrupted forced retrain (--model/--seed) of a current cell left a state nothing will resume
        with contextlib.suppress(ConvbenchError), cell_lock(cell.dataset, cell.model, cell.seed):
            paths.resume_state(cell.dataset, cell.model, cell.seed).unlink(missing_ok=True)
    return current


def _tags(cell: Cell, prepared: PreparedData, device: torch.device, plan: ExecutionPlan) -> dict[str, Any]:
    """What the cell's MLflow run is found by."""
    return {
        "convbench.kind": "train",
        "convbench.model": cell.model,
        "convbench.arch": cell.config.arch,
        "convbench.seed": cell.seed,
        "convbench.dataset": prepared.name,
        "convbench.dataset_sha256": prepared.sha256,
        "convbench.recipe": "tuned" if cell.params.tune.trials else "shared",
        **{f"convbench.context.{key}": value for key, value in _context(device, plan).items()},
    }


def _context(device: torch.device, plan: ExecutionPlan) -> dict[str, str | int]:
    """The device context of the cell's training, with the threads it trains with and why."""
    threads = plan.threads
    if threads is None:
        return device_context(device, plan.dtype_name)
    return device_context(device, plan.dtype_name, threads.count, threads.reason)


def _replay_queued_epochs(logger: tracking.RunLogger, resume: checkpoints.Resume) -> None:
    """Epochs a killed process had queued for MLflow but never sent, logged from the resume state."""
    logged = logger.logged_steps("val_accuracy")
    for stats in resume.state.history:
        if stats.epoch not in logged:
            logger.log_metrics(_epoch_metrics(stats), step=stats.epoch)


def _epoch_metrics(stats: EpochStats) -> dict[str, float]:
    """One epoch's numbers as MLflow metrics (the epoch is the step)."""
    return {k: v for k, v in dataclasses.asdict(stats).items() if k != "epoch"}


def train_cell(cell: Cell, prepared: PreparedData) -> TrainResult:
    """Train one (model, seed) cell; log it to MLflow; write its checkpoint and curves atomically."""
    dist = distributed_from_env()
    device = start_distributed(dist, cell.device())
    plan = cell.plan(device, prepared.input_shape)
    torch.manual_seed(cell.seed)
    model = place_model(models.build(cell.config), plan)
    data = normalized_splits(prepared, device)
    plan = with_threads(plan, model, data.train, cell.params.train)
    resume_path = paths.resume_state(cell.dataset, cell.model, cell.seed)
    identity = {
        "config": cell.config.to_dict(),
        "dataset_sha256": prepared.sha256,
        "seed": cell.seed,
        "recipe": cell.recipe,
    }
    resume = checkpoints.load_resume(resume_path, identity)
    with _cell_run(cell, prepared, device, plan, dist, resume) as logger:
        if resume is None or logger.run_id != resume.mlflow_run_id:
            _log_start(logger, cell, prepared, model)
        if resume is not None and dist.is_main:
            _replay_queued_epochs(logger, resume)

        def save_state(state: TrainState) -> None:
            checkpoints.save_resume(resume_path, state, identity, logger.run_id)

        result = _fit_with_progress(cell, model, data, plan, dist, logger, save_state if dist.is_main else None, resume)
        if not dist.is_main:  # only rank 0 writes files and logs
            return result
        model = model.cpu().to(memory_format=torch.contiguous_format)
        _write_cell(cell, prepared, model, result, dist, plan.dtype_name, str(device), logger.run_id)
        if cell.params.tracking.log_model:
            logger.log_model(model, data.val.x[:2].cpu().numpy())
        logger.log_artifact(result.curves, "curves")
        logger.log_artifact(result.checkpoint, "checkpoint")
        result = dataclasses.replace(result, run_id=logger.run_id)
    resume_path.unlink(missing_ok=True)
    return result


_SPLITS: dict[tuple[str, str], Splits] = {}


def normalized_splits(prepared: PreparedData, device: torch.device) -> Splits:
    """The train and val splits normalised on `device`, made once per process: every cell of a dataset reads the same
    ones (training only indexes them), and normalising 50,000 32x32 colour images takes a fifth of a second."""
    key = (prepared.sha256, str(device))
    if key not in _SPLITS:
        _SPLITS.clear()  # one dataset's splits at a time
        _SPLITS[key] = device_splits(prepared, device)
    return _SPLITS[key]


def _cell_run(
    cell: Cell,
    prepared: PreparedData,
    device: torch.device,
    plan: ExecutionPlan,
    dist: Distributed,
    resume: checkpoints.Resume | None,
) -> contextlib.AbstractContextManager[tracking.RunLogger]:
    """The cell's MLflow run (the interrupted one when resuming); other torchrun ranks log nothing."""
    if not dist.is_main:
        return contextlib.nullcontext(tracking.UntrackedLogger())
    return tracking.run(
        cell.params.tracking,
        prepared.name,
        cell.name,
        _tags(cell, prepared, device, plan),
        resume.mlflow_run_id if resume else None,
    )


def _log_start(logger: tracking.RunLogger, cell: Cell, prepared: PreparedData, model: torch.nn.Module) -> None:
    """What the run trains: the cell, its size, architecture, recipe, data settings and the dataset input."""
    logger.log_params(
        {
            "model": cell.model,
            "seed": cell.seed,
            "params": models.count_params(model),
            "architecture": cell.config.to_dict(),
            "train": cell.recipe,
            "data": cell.params.data.model_dump(mode="json"),
        }
    )
    logger.log_dataset(prepared.name, prepared.sha256, _source(prepared.name), "train")


def _source(dataset: str) -> str:
    """Where the raw data lives, as the download stage listed it (absolute); else the prepared tensors' path."""
    listed = paths.source_manifest(dataset)
    if not listed.is_file():
        return str(paths.prepared_tensors(dataset))
    return str(Path(SourceManifest.model_validate_json(listed.read_text()).source).resolve())


def _fit_with_progress(  # 8 parameters: a cell's loop with its logger and checkpoint-and-resume hooks
    cell: Cell,
    model: torch.nn.Module,
    data: Splits,
    plan: ExecutionPlan,
    dist: Distributed,
    logger: tracking.RunLogger,
    save_state: Callable[[TrainState], None] | None,
    resume: checkpoints.Resume | None,
) -> TrainResult:
    """The training loop with a progress bar, each epoch logged as it ends; the cell's speed logged at the end."""
    recipe = cell.params.train
    done = resume.state.epoch if resume else 0
    with EpochProgress(cell.name, recipe.epochs, done=done, quiet=not dist.is_main) as advance:

        def on_epoch(stats: EpochStats) -> None:
            logger.log_metrics(_epoch_metrics(stats), step=stats.epoch, synchronous=False)
            advance(stats)

        history, seconds = fit(
            model, data, recipe, cell.seed, on_epoch, plan, save_state, resume.state if resume else None, dist
        )
    result = TrainResult(
        cell,
        cell.checkpoint_path,
        paths.curves(cell.dataset, cell.model, cell.seed),
        None,
        history,
        TrainSpeed(
            train_images_per_second=recipe.epochs * len(data.train) / seconds,
            train_seconds=seconds,
            seconds_to_final_accuracy=seconds_to_final_accuracy(history),
        ),
        done,
    )
    logger.log_metrics(result.speed.model_dump())
    return result


def _write_cell(  # 8 parameters: a trained cell's every record: result, device, dtype and run
    cell: Cell,
    prepared: PreparedData,
    model: torch.nn.Module,
    result: TrainResult,
    dist: Distributed,
    dtype: str,
    device: str,
    run_id: str | None,
) -> None:
    """Curves and checkpoint as one set: both are written in full before either is renamed into place."""
    recipe = cell.params.train
    info = checkpoints.TrainInfo(
        **result.speed.model_dump(),
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        device=device,
        world_size=dist.world_size,
        dtype=dtype,
        final_val_accuracy=result.history[-1].val_accuracy,
    )
    trained = checkpoints.Checkpoint(
        cell.config,
        model.state_dict(),
        prepared.name,
        prepared.sha256,
        cell.seed,
        cell.recipe,
        info,
        run_id,
        source_sha256("train"),
    )
    with atomic.atomic_path(result.curves) as curves_tmp, atomic.atomic_path(result.checkpoint) as checkpoint_tmp:
        curves_tmp.write_text(pd.DataFrame([dataclasses.asdict(s) for s in result.history]).to_csv(index=False))
        checkpoints.save(checkpoint_tmp, trained)


class EpochProgress:
    """A rich progress bar over epochs that shows the latest validation accuracy."""

    def __init__(self, cell: str, epochs: int, done: int = 0, quiet: bool = False) -> None:
        self.progress = progress.bar(quiet)
        status = f"resumed after epoch {done}" if done else ""
        self.task = self.progress.add_task(f"train {cell}", total=epochs, completed=done, status=status)

    def __enter__(self) -> Callable[[EpochStats], None]:
        self.progress.start()

        def advance(stats: EpochStats) -> None:
            status = f"loss {stats.train_loss:.3f} val_acc {stats.val_accuracy:.4f}"
            self.progress.update(self.task, advance=1, status=status)

        return advance

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


STAGE = CellStage(
    "train",
    lambda dataset, model, seed: [
        paths.checkpoint(dataset, model, seed),
        paths.resume_state(dataset, model, seed),
        paths.curves(dataset, model, seed),
    ],
    lambda dataset: [(paths.models_dir(dataset), "*.pt"), (paths.curves_dir(dataset), "*.csv")],
    is_current,
    train_one,
)
