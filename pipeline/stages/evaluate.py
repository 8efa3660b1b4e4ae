"""Evaluate stage: accuracy, per-class accuracy, confusion matrix, size and robustness of trained cells.

`dvc repro` runs it over every cell in one process; a cell whose metrics were computed from its current
checkpoint with the current evaluate settings by this code is kept, so a new seed's cells are the only ones scored.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from pipeline.artifacts import atomic, paths, records
from pipeline.artifacts import checkpoint as checkpoints
from pipeline.artifacts.checkpoint import TrainInfo
from pipeline.artifacts.code import source_sha256
from pipeline.artifacts.records import CellCost, CellMetrics, PeakMemory, Robustness, Source, TrainSpeed
from pipeline.core import models
from pipeline.core.cell import Cell
from pipeline.core.data import PreparedData
from pipeline.core.measure import count_flops, device_context, first_conv_maps, peak_memory_bytes
from pipeline.core.runtime import (
    ExecutionPlan,
    inference_call,
    intra_op_threads,
    normalize,
    place_model,
    predict_logits,
    repeat_to,
    test_scorer,
    threads_for,
    train_step_call,
    zero_pixel,
)
from pipeline.core.transforms import shift_accuracies
from pipeline.errors import ConvbenchError
from pipeline.ops import tracking
from pipeline.ops.cells import CellStage, Runner, each_cell
from pipeline.params import EvaluateParams, Params


@dataclass(frozen=True)
class EvaluateResult:
    """The metrics one cell scored and where they were written."""

    metrics_path: Path
    metrics: CellMetrics


def evaluate(
    params: Params,
    model: str | None = None,
    seed: int | None = None,
    say: Callable[[str], None] = print,
    ray_address: str | None = None,
) -> None:
    """Score the selected cells (in parallel as train.workers and train.backend say); without --model/--seed, keep
    current metrics and remove cells no longer listed."""
    each_cell(STAGE, params, model, seed, say, Runner.of(params.train, ray_address))


def evaluate_one(cell: Cell, prepared: PreparedData) -> str:
    """Score one cell (here, or in a worker process or a Ray task); its line for the terminal."""
    m = evaluate_cell(cell, prepared).metrics
    return (
        f"evaluate: {cell.name} test_accuracy {m.test_accuracy:.4f} params {m.params:,} "
        f"forward {m.flops_forward_per_image / 1e6:.2f} MFLOP/image"
    )


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts[true, predicted] as a (K, K) int64 tensor."""
    flat = labels * num_classes + predictions
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def source(cell: Cell, prepared: PreparedData) -> Source:
    """What a cell's metrics are computed from: the checkpoint's bytes, the test data, this code and its settings."""
    settings = cell.params.evaluate.model_dump(mode="json", include=EVALUATE_KEYS)
    return Source(
        checkpoint_sha256=hashlib.sha256(cell.checkpoint_path.read_bytes()).hexdigest(),
        dataset_sha256=prepared.sha256,
        code_sha256=source_sha256("evaluate"),
        settings_sha256=hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest(),
    )


def is_current(cell: Cell, prepared: PreparedData) -> bool:
    """Whether the cell's metrics and predictions exist and were computed from exactly these inputs."""
    metrics_path = paths.metrics(cell.dataset, *cell.key)
    if not (
        metrics_path.is_file()
        and paths.predictions(cell.dataset, *cell.key).is_file()
        and cell.checkpoint_path.is_file()
    ):
        return False
    try:
        recorded = records.load_json(CellMetrics, metrics_path, "").source
    except ConvbenchError:
        return False
    return recorded == source(cell, prepared)


def evaluate_cell(cell: Cell, prepared: PreparedData) -> EvaluateResult:
    """Score one trained cell on the test split, measure its cost, write metrics JSON and predictions, log to MLflow."""
    checkpoint = cell.trained(prepared)
    device = cell.device()
    plan = cell.plan(device, prepared.input_shape)
    model = place_model(checkpoints.restore(checkpoint, cell.checkpoint_path), plan)
    test_x = normalize(prepared.splits.test.x, prepared.mean, prepared.std, device)
    test_y = prepared.splits.test.y.to(device)
    settings = cell.params.evaluate
    cost = measure_cost(
        model, plan, test_x, test_y, settings, checkpoint.train, json.dumps(checkpoint.config.to_dict(), sort_keys=True)
    )
    threads = threads_for(
        cost.flops_forward_per_image * settings.batch_size, "scoring batch", cell.params.train.threads
    )
    with intra_op_threads(threads.count if device.type == "cpu" else None):
        logits = predict_logits(model, test_x, settings.batch_size, plan)
        predictions = logits.argmax(1)
        test_accuracy = (predictions == test_y).double().mean().item()
        # on CPU the clean pass scored the very tensors the probes start from; elsewhere the device normalised them
        # (a CUDA division by a scalar can differ in the last bit), so the probes normalise their own on the CPU
        on_cpu = device.type == "cpu"
        robustness = measure_robustness(model, plan, prepared, settings, (test_x, test_accuracy) if on_cpu else None)
    confusion = confusion_matrix(test_y, predictions, prepared.num_classes).cpu()
    support = confusion.sum(1)
    per_class = (confusion.diag().double() / support.clamp_min(1).double()).tolist()
    metrics = CellMetrics(
        model=cell.model,
        seed=cell.seed,
        dataset=prepared.name,
        test_accuracy=test_accuracy,
        test_loss=torch.nn.functional.cross_entropy(logits, test_y).item(),
        test_size=int(len(test_y)),
        arch=checkpoint.config.arch,
        final_val_accuracy=checkpoint.train.final_val_accuracy,
        epochs=checkpoint.train.epochs,
        robustness=Robustness.model_validate(robustness),
        # a class with no test images has no accuracy (not 0): it is left out, and the report says so
        per_class_accuracy={c: a for c, a, n in zip(prepared.classes, per_class, support.tolist()) if n},
        confusion_matrix=confusion.tolist(),
        context=device_context(
            device, plan.dtype_name, *((threads.count, threads.reason) if device.type == "cpu" else ())
        ),
        units=UNITS,
        source=source(cell, prepared),
        **dict(cost),  # the cost fields, declared once in CellCost
    )
    table = pd.DataFrame(
        {
            "label": [prepared.classes[i] for i in test_y.tolist()],
            "prediction": [prepared.classes[i] for i in predictions.tolist()],
        }
    )
    _write_and_log(cell, prepared, metrics, table, checkpoint.mlflow_run_id, model, confusion, test_x[:1])
    return EvaluateResult(paths.metrics(cell.dataset, *cell.key), metrics)


def _write_and_log(  # 8 parameters: a scored cell's every output: metrics, predictions, figure sources
    cell: Cell,
    prepared: PreparedData,
    metrics: CellMetrics,
    table: pd.DataFrame,
    run_id: str | None,
    model: torch.nn.Module,
    confusion: torch.Tensor,
    image: torch.Tensor,
) -> None:
    """Metrics and predictions into the cell's training run (figures as run artifacts), then into its files.

    The files appear only once the run has everything: a stage stopped mid-upload leaves no metrics that look
    current beside a FAILED run, so the next evaluate scores the cell again and finishes its run.
    """
    metrics_path, predictions_path = paths.metrics(cell.dataset, *cell.key), paths.predictions(cell.dataset, *cell.key)
    tags = {
        "convbench.kind": "train",
        "convbench.model": cell.model,
        "convbench.seed": cell.seed,
        "convbench.dataset": prepared.name,
        **{f"convbench.context.{key}": value for key, value in metrics.context.items()},
    }
    with (
        tracking.run(cell.params.tracking, prepared.name, cell.name, tags, run_id) as logger,
        atomic.staged_folder(metrics_path.parent) as stage,
    ):
        logger.log_metrics(metrics.scalars())
        staged_predictions = atomic.write_text(stage / predictions_path.name, table.to_csv(index_label="index"))
        staged_metrics = records.save_json(stage / metrics_path.name, metrics)
        logger.log_artifact(staged_metrics, "evaluation")
        logger.log_artifact(staged_predictions, "evaluation")
        _log_figures(logger, model, confusion.numpy(), prepared.classes, image, cell.model)
        atomic.replace_set({staged_predictions: predictions_path, staged_metrics: metrics_path})


def _log_figures(
    logger: tracking.RunLogger,
    model: torch.nn.Module,
    confusion: Any,
    classes: tuple[str, ...],
    image: torch.Tensor,
    model_name: str,
) -> None:
    """The cell's confusion matrix (and, for convolutional models, its filters) as run artifacts."""
    from pipeline.reporting import figures  # matplotlib loads only when a cell is scored

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        logger.log_artifact(
            figures.confusion_matrices(
                {model_name: confusion}, [str(c) for c in classes], folder / "confusion_matrix.png"
            ),
            "evaluation",
        )
        first = first_conv_maps(model, image[0])
        if first is not None:
            weights, maps = first
            logger.log_artifact(
                figures.filters_and_feature_maps(
                    weights.numpy(), image[0].float().cpu().numpy(), maps.numpy(), folder / "filters.png"
                ),
                "evaluation",
            )


_ARCHITECTURE_COST: dict[tuple[str, str, int, int], tuple[Any, dict[str, float]]] = {}
EVALUATE_KEYS = {"batch_size", "throughput_batch_sizes", "shifts", "noise_std"}  # what scoring reads; not bench's keys
UNITS = {
    "test_accuracy": "fraction of test images",
    "test_loss": "cross-entropy (nats)",
    "params": "count",
    "trainable_params": "count",
    "flops_forward_per_image": "FLOP (multiply-add = 2)",
    "flops_train_step_per_image": "FLOP (forward + backward)",
    **TrainSpeed.UNITS,
    "peak_memory_mb.*": "MiB of tensor memory at the peak (CUDA max_memory_allocated; CPU: torch.profiler memory events)",
    "robustness.shift.<k>": "test accuracy with images shifted by k pixels (mean over directions)",
    "robustness.noise.<std>": "test accuracy with Gaussian noise of that std (pixel range = 1)",
}


def measure_robustness(
    model: torch.nn.Module,
    plan: ExecutionPlan,
    prepared: PreparedData,
    settings: EvaluateParams,
    scored: tuple[torch.Tensor, float] | None = None,
) -> dict[str, dict[str, float]]:
    """Test accuracy under the translation and noise probes. Shift 0 and noise 0 are the clean test images: `scored`,
    the CPU-normalised test images and their accuracy when the caller has them, else normalised and scored here once.

    Shifts move the images by k pixels, filling with a black pixel, averaged over every axis-aligned direction;
    noise adds Gaussian noise with std in units of the pixel range, from one fixed generator so every
    model and seed sees the same noisy images.
    """
    score = test_scorer(model, prepared, settings.batch_size, plan)
    if scored is None:
        clean = normalize(prepared.splits.test.x, prepared.mean, prepared.std, torch.device("cpu"))
        scored = clean, score(clean)
    clean, unmoved = scored
    shifts = shift_accuracies(score, clean, settings.shifts, unmoved, zero_pixel(prepared))
    std = torch.tensor(prepared.std).view((1, -1) + (1,) * (clean.dim() - 2))
    noise = test_noise(tuple(clean.shape))
    noisy = {f"{level:g}": score(clean + noise * (level / std)) if level else unmoved for level in settings.noise_std}
    return {"shift": shifts, "noise": noisy}


@functools.lru_cache(maxsize=1)
def test_noise(shape: tuple[int, ...]) -> torch.Tensor:
    """The noise probe's standard normal draws, from one fixed generator: the same for every cell, so drawn once."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def measure_cost(  # 7 parameters: the model, its test data and what training recorded
    model: torch.nn.Module,
    plan: ExecutionPlan,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    settings: EvaluateParams,
    train_info: TrainInfo,
    architecture: str = "",
) -> CellCost:
    """Size, FLOPs and peak memory of one model; what training measured. Speed is the bench stage's (side by side).

    `architecture` (the resolved config as JSON) lets the seeds of one model share one count; "" counts anew.
    """
    train_batch = train_info.batch_size
    largest = max(settings.throughput_batch_sizes)
    key = (architecture, str(plan), train_batch, largest)
    if not architecture or key not in _ARCHITECTURE_COST:  # FLOPs and peak memory depend on the architecture only
        flops = count_flops(model, repeat_to(test_x, 8), repeat_to(test_y, 8))
        memory = {
            "inference": peak_memory_bytes(
                lambda: inference_call(model, repeat_to(test_x, largest), plan)(), plan.device
            )
            / 2**20,
            "train_step": peak_memory_bytes(
                lambda: train_step_call(model, repeat_to(test_x, train_batch), repeat_to(test_y, train_batch), plan)(),
                plan.device,
            )
            / 2**20,
        }
        _ARCHITECTURE_COST[key] = (flops, memory)
    flops, memory = _ARCHITECTURE_COST[key]
    return CellCost(
        **train_info.speed().model_dump(),
        params=models.count_params(model),
        trainable_params=models.count_trainable(model),
        flops_forward_per_image=flops.forward,
        flops_train_step_per_image=flops.train_step,
        train_batch_size=train_batch,
        peak_memory_mb=PeakMemory.model_validate(memory),
    )


STAGE = CellStage(
    "evaluate",
    lambda dataset, model, seed: [paths.metrics(dataset, model, seed), paths.predictions(dataset, model, seed)],
    lambda dataset: [(paths.cells_dir(dataset), "*.json"), (paths.predictions_dir(dataset), "*.csv")],
    is_current,
    evaluate_one,
)
