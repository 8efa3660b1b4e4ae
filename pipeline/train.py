"""Train stage: (model, seed) cells, the same recipe for every architecture, all in one process.

The loop itself lives in pipeline/runtime.py; this stage opens each cell's MLflow run, resumes an
interrupted cell, and writes the checkpoint, the curves and the logged model. `dvc repro` runs it over
every cell: a cell whose checkpoint was trained from exactly what params.yaml now says is kept, so
adding a seed trains only the new cells and changing one model's settings retrains only that model.
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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline import checkpoint as checkpoints
from pipeline import atomic, models, paths, recipes, tracking
from pipeline.code import source_sha256
from pipeline.bench import device_context, resolve_device
from pipeline.data import PreparedData
from pipeline.errors import ConvbenchError
from pipeline.params import Params
from pipeline.runtime import (
    EpochStats,
    device_splits,
    distributed_from_env,
    execution_plan,
    fit,
    place_model,
    seconds_to_final_accuracy,
    start_distributed,
)


@dataclass(frozen=True)
class TrainResult:
    """What one cell's training produced."""

    model: str
    seed: int
    checkpoint: Path
    curves: Path
    run_id: str | None
    history: list[EpochStats]
    train_images_per_second: float
    train_seconds: float
    seconds_to_final_accuracy: float


def recipe(params: Params) -> dict[str, Any]:
    """The training recipe a cell is trained with: params.train without the seed list."""
    return params.train.model_dump(mode="json", exclude={"seeds"})


def is_current(params: Params, model_name: str, seed: int, prepared: PreparedData) -> bool:
    """Whether the cell's checkpoint and curves exist and were trained by this code from the data, model and recipe
    params give now."""
    checkpoint_path = paths.checkpoint(model_name, seed)
    if not (checkpoint_path.is_file() and paths.curves(model_name, seed).is_file()):
        return False
    params = recipes.params_for(params, model_name, prepared.sha256)
    try:
        trained = checkpoints.load(checkpoint_path, model_name)
        config = models.resolve(params, prepared.input_shape, prepared.num_classes)[model_name]
        checkpoints.check_current(trained, checkpoint_path, config, prepared.name, prepared.sha256, recipe(params))
    except ConvbenchError:
        return False
    return trained.seed == seed and trained.code_sha256 == source_sha256("train")


def prune(cells: list[tuple[str, int]]) -> list[Path]:
    """Remove checkpoints and curves of cells params.yaml no longer lists, so the stage's outputs are its cells."""
    keep = {path for model, seed in cells
            for path in (paths.checkpoint(model, seed), paths.resume_state(model, seed), paths.curves(model, seed))}
    stale = [path for folder, pattern in ((paths.MODELS_DIR, "*.pt"), (paths.CURVES_DIR, "*.csv"))
             for path in sorted(folder.glob(pattern)) if path not in keep]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def train_cell(
    params: Params,
    model_name: str,
    seed: int,
    prepared: PreparedData,
    checkpoint_path: Path,
    curves_path: Path,
) -> TrainResult:
    """Train one (model, seed) cell; log it to MLflow; write its checkpoint and curves atomically."""
    params = recipes.params_for(params, model_name, prepared.sha256)  # its tuned recipe when tune.trials > 0
    dist = distributed_from_env()
    device = start_distributed(dist, resolve_device(params.train.device))
    config = models.resolve(params, prepared.input_shape, prepared.num_classes)[model_name]
    plan = execution_plan(params.train, device, prepared.input_shape)
    torch.manual_seed(seed)
    model = place_model(models.build(config), plan)
    data = device_splits(prepared, device)
    cell = paths.cell(model_name, seed)
    resume_path = paths.resume_state(model_name, seed)
    identity = {"config": config.to_dict(), "dataset_sha256": prepared.sha256, "seed": seed, "recipe": recipe(params)}
    resume = checkpoints.load_resume(resume_path, identity)
    tags = {
        "convbench.kind": "train",
        "convbench.model": model_name,
        "convbench.arch": config.arch,
        "convbench.seed": seed,
        "convbench.dataset": prepared.name,
        "convbench.dataset_sha256": prepared.sha256,
        "convbench.recipe": "tuned" if params.tune.trials else "shared",
        **{f"convbench.context.{key}": value for key, value in device_context(device, plan.dtype_name).items()},
    }
    resume_run = resume["mlflow_run_id"] if resume else None
    opened = (tracking.run(params.tracking, prepared.name, cell, tags, resume_run) if dist.is_main
              else contextlib.nullcontext(tracking.UntrackedLogger()))
    with opened as logger:
        if resume is None or logger.run_id != resume_run:
            logger.log_params(
                {
                    "model": model_name,
                    "seed": seed,
                    "params": models.count_params(model),
                    "architecture": config.to_dict(),
                    "train": recipe(params),
                    "data": params.data.model_dump(mode="json"),
                }
            )
            logger.log_dataset(prepared.name, prepared.sha256, str(paths.prepared_tensors(prepared.name)), "train")

        if resume is not None and dist.is_main:  # epochs queued but never written when the process was killed
            logged = logger.logged_steps("val_accuracy")
            for stats in resume["history"]:
                if stats["epoch"] not in logged:
                    logger.log_metrics({k: v for k, v in stats.items() if k != "epoch"}, step=stats["epoch"])

        def save_state(state: dict[str, Any]) -> None:
            checkpoints.save_resume(resume_path, state, identity, logger.run_id)

        progress = EpochProgress(cell, params.train.epochs, done=resume["epoch"] if resume else 0, quiet=not dist.is_main)
        with progress as advance:

            def on_epoch(stats: EpochStats) -> None:
                epoch_metrics = {k: v for k, v in dataclasses.asdict(stats).items() if k != "epoch"}
                logger.log_metrics(epoch_metrics, step=stats.epoch, synchronous=False)
                advance(stats)

            history, train_seconds = fit(model, data, params.train, seed, on_epoch, plan,
                                         save_state if dist.is_main else None, resume, dist)
        images_per_second = params.train.epochs * len(data.train) / train_seconds
        to_final = seconds_to_final_accuracy(history)
        logger.log_metrics(
            {"train_images_per_second": images_per_second, "train_seconds": train_seconds,
             "seconds_to_final_accuracy": to_final}
        )
        model = model.cpu().to(memory_format=torch.contiguous_format)
        info = checkpoints.TrainInfo(
            epochs=params.train.epochs, batch_size=params.train.batch_size, device=str(device),
            world_size=dist.world_size, dtype=plan.dtype_name, train_images_per_second=images_per_second,
            train_seconds=train_seconds, seconds_to_final_accuracy=to_final, final_val_accuracy=history[-1].val_accuracy,
        )
        trained = checkpoints.Checkpoint(config, model.state_dict(), prepared.name, prepared.sha256, seed,
                                         recipe(params), info, logger.run_id, source_sha256("train"))
        if not dist.is_main:  # only rank 0 writes files and logs
            return TrainResult(model_name, seed, checkpoint_path, curves_path, None, history, images_per_second,
                               train_seconds, to_final)
        # Curves and checkpoint are one set: both are written in full before either is renamed into place.
        with atomic.atomic_path(curves_path) as curves_tmp, atomic.atomic_path(checkpoint_path) as checkpoint_tmp:
            curves_tmp.write_text(pd.DataFrame([dataclasses.asdict(s) for s in history]).to_csv(index=False))
            checkpoints.save(checkpoint_tmp, trained)
        if params.tracking.log_model:
            logger.log_model(model, data.val.x[:2].cpu().numpy())
        logger.log_artifact(curves_path, "curves")
        logger.log_artifact(checkpoint_path, "checkpoint")
        run_id = logger.run_id
    resume_path.unlink(missing_ok=True)
    return TrainResult(
        model_name, seed, checkpoint_path, curves_path, run_id, history, images_per_second, train_seconds, to_final
    )


class EpochProgress:
    """A rich progress bar over epochs that shows the latest validation accuracy."""

    def __init__(self, cell: str, epochs: int, done: int = 0, quiet: bool = False) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            disable=quiet,
        )
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
