"""Evaluate stage: accuracy, per-class accuracy, confusion matrix, size and speed of one trained cell."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline import atomic, models, paths, tracking
from pipeline.bench import inference_throughput, resolve_device
from pipeline.errors import ConvbenchError
from pipeline.params import Params
from pipeline.prepare import PreparedData
from pipeline.train import CHECKPOINT_FORMAT, normalize, predict_logits


@dataclass(frozen=True)
class EvaluateResult:
    """The metrics one cell scored and where they were written."""

    metrics_path: Path
    metrics: dict[str, Any]


def load_checkpoint(path: Path, model_name: str | None = None) -> dict[str, Any]:
    """Load a checkpoint with weights_only=True and check it is a convbench checkpoint of `model_name`."""
    if not Path(path).is_file():
        raise ConvbenchError(f"{path} is missing; run `convbench train` first")
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise ConvbenchError(f"{path} is not a loadable checkpoint ({type(exc).__name__}); run `convbench train` again") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ConvbenchError(f"{path} is not a convbench checkpoint (format {CHECKPOINT_FORMAT}); run `convbench train` again")
    name = checkpoint["config"].get("name")
    if model_name is not None and name != model_name:
        raise ConvbenchError(f"{path} holds a '{name}' model, not '{model_name}'; run `convbench train --model {model_name}`")
    return checkpoint


def restore_model(checkpoint: dict[str, Any], path: Path) -> torch.nn.Module:
    """Rebuild the module from the checkpoint's config and load its weights strictly."""
    model = models.build(checkpoint["config"])
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise ConvbenchError(
            f"{path} does not fit the architecture in its own config ({first}); run `convbench train` again"
        ) from None
    return model


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts[true, predicted] as a (K, K) int64 tensor."""
    flat = labels * num_classes + predictions
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def evaluate_cell(
    params: Params,
    model_name: str,
    seed: int,
    prepared: PreparedData,
    checkpoint_path: Path,
    metrics_path: Path,
) -> EvaluateResult:
    """Score one trained cell on the test split, time its inference, write metrics JSON, log to MLflow."""
    checkpoint = load_checkpoint(checkpoint_path, model_name)
    if checkpoint["dataset_sha256"] != prepared.sha256:
        raise ConvbenchError(
            f"{checkpoint_path} was trained on other data ({checkpoint['dataset']}, sha256 "
            f"{checkpoint['dataset_sha256'][:12]}...) than the prepared '{prepared.name}'; re-run `convbench train`"
        )
    device = resolve_device(params.train.device)
    model = restore_model(checkpoint, checkpoint_path).to(device)
    test_x = normalize(prepared.tensors["test_x"], prepared.mean, prepared.std, device)
    test_y = prepared.tensors["test_y"].to(device)
    logits = predict_logits(model, test_x, params.evaluate.batch_size)
    predictions = logits.argmax(1)
    confusion = confusion_matrix(test_y, predictions, prepared.num_classes).cpu()
    per_class = (confusion.diag().double() / confusion.sum(1).clamp_min(1).double()).tolist()
    batch = _timing_batch(test_x, params.evaluate.throughput_batch_size)
    speed = inference_throughput(model, batch, params.evaluate.min_run_time)
    train_info = checkpoint["train"]
    metrics: dict[str, Any] = {
        "model": model_name,
        "seed": seed,
        "dataset": prepared.name,
        "test_accuracy": (predictions == test_y).double().mean().item(),
        "test_loss": torch.nn.functional.cross_entropy(logits, test_y).item(),
        "test_size": int(len(test_y)),
        "params": models.count_params(model),
        "final_val_accuracy": train_info["final_val_accuracy"],
        "inference_images_per_second": speed.images_per_second,
        "inference_batch_size": speed.batch_size,
        "inference_median_ms": speed.median_seconds * 1e3,
        "inference_iqr_ms": speed.iqr_seconds * 1e3,
        "train_images_per_second": train_info["train_images_per_second"],
        "train_seconds": train_info["train_seconds"],
        "epochs": train_info["epochs"],
        "per_class_accuracy": dict(zip(prepared.classes, per_class)),
        "confusion_matrix": confusion.tolist(),
        "context": {
            "device": str(device),
            "device_name": _device_name(device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "dtype": "float32",
        },
    }
    tags = {"convbench.kind": "train", "convbench.model": model_name, "convbench.seed": seed, "convbench.dataset": prepared.name}
    with tracking.run(params.tracking, prepared.name, paths.cell(model_name, seed), tags, checkpoint["mlflow_run_id"]) as logger:
        scalar = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "seed"}
        logger.log_metrics(scalar | {f"test_accuracy_class_{c}": a for c, a in metrics["per_class_accuracy"].items()})
        atomic.write_json(metrics_path, metrics)
        logger.log_artifact(metrics_path, "evaluation")
    return EvaluateResult(metrics_path, metrics)


def _timing_batch(x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A batch of exactly `batch_size` test images (repeated if the test split is smaller)."""
    repeats = -(-batch_size // len(x))
    return x.repeat((repeats,) + (1,) * (x.dim() - 1))[:batch_size].contiguous()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()
