"""The one checkpoint format: typed save, load (weights_only) and restore, with identity checks.

A checkpoint says what it holds (model config, data sha256, seed, the recipe it was trained with), so
a later stage can refuse it when params.yaml or the data have moved on instead of describing a model
with settings it was not trained with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.artifacts import atomic
from pipeline.artifacts.records import TrainSpeed
from pipeline.core import models
from pipeline.core.models import ModelConfig
from pipeline.core.runtime import EpochStats, TrainState
from pipeline.errors import ConvbenchError

FORMAT = 2


class TrainInfo(TrainSpeed):
    """How training went: what the evaluate stage and the report quote about it (its speed, then the rest)."""

    epochs: int
    batch_size: int
    device: str
    world_size: int
    dtype: str
    final_val_accuracy: float


@dataclass(frozen=True)
class Checkpoint:
    """Trained weights and everything that identifies them."""

    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    dataset: str
    dataset_sha256: str
    seed: int
    recipe: dict[str, Any]  # params.train as trained (without seeds)
    train: TrainInfo
    mlflow_run_id: str | None
    code_sha256: str = ""  # pipeline.artifacts.code.source_sha256 of the train stage that wrote it ("" in older files)


def save(path: Path, checkpoint: Checkpoint) -> Path:
    """Write `checkpoint` atomically as plain tensors and values (loadable with weights_only=True)."""
    payload = {
        "format": FORMAT,
        "config": checkpoint.config.to_dict(),
        "state_dict": checkpoint.state_dict,
        "dataset": checkpoint.dataset,
        "dataset_sha256": checkpoint.dataset_sha256,
        "seed": checkpoint.seed,
        "recipe": checkpoint.recipe,
        "train": checkpoint.train.model_dump(),
        "mlflow_run_id": checkpoint.mlflow_run_id,
        "code_sha256": checkpoint.code_sha256,
    }
    return atomic.write_torch(path, payload)


def load(path: Path, model_name: str | None = None) -> Checkpoint:
    """Load a checkpoint with weights_only=True and check it is a convbench checkpoint of `model_name`."""
    path = Path(path)
    if not path.is_file():
        raise ConvbenchError(f"{path} is missing; run `convbench train` first")
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ConvbenchError(
            f"{path} is not a loadable checkpoint ({type(exc).__name__}); run `convbench train` again"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConvbenchError(f"{path} is not a convbench checkpoint (format {FORMAT}); run `convbench train` again")
    config = ModelConfig.from_dict(payload["config"])
    if model_name is not None and config.name != model_name:
        raise ConvbenchError(
            f"{path} holds a '{config.name}' model, not '{model_name}'; run `convbench train --model {model_name}`"
        )
    return Checkpoint(
        config,
        payload["state_dict"],
        payload["dataset"],
        payload["dataset_sha256"],
        payload["seed"],
        payload["recipe"],
        TrainInfo(**payload["train"]),
        payload["mlflow_run_id"],
        payload.get("code_sha256", ""),
    )


def restore(checkpoint: Checkpoint, path: Path) -> nn.Module:
    """Rebuild the module from the checkpoint's config and load its weights strictly."""
    model = models.build(checkpoint.config)
    try:
        model.load_state_dict(checkpoint.state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise ConvbenchError(
            f"{path} does not fit the architecture in its own config ({first}); run `convbench train` again"
        ) from None
    return model


def check_current(
    checkpoint: Checkpoint, path: Path, config: ModelConfig, dataset: str, dataset_sha256: str, recipe: dict[str, Any]
) -> None:
    """Refuse a checkpoint trained on other data, as another architecture, or with another recipe than params now say."""
    cell = f"--model {config.name} --seed {checkpoint.seed}"
    if checkpoint.dataset_sha256 != dataset_sha256:
        raise ConvbenchError(
            f"{path} was trained on other data ({checkpoint.dataset}, sha256 {checkpoint.dataset_sha256[:12]}...) than "
            f"the prepared '{dataset}'; run `convbench train {cell}` (or `dvc repro`)"
        )
    if checkpoint.config != config:
        raise ConvbenchError(
            f"{path} holds a different {config.name} than params.yaml's model section (or its builder's source) "
            f"now describes; "
            f"run `convbench train {cell}` (or `dvc repro`)"
        )
    changed = sorted(
        key for key in set(recipe) | set(checkpoint.recipe) if recipe.get(key) != checkpoint.recipe.get(key)
    )
    if changed:
        was = ", ".join(f"train.{key} {checkpoint.recipe.get(key)!r} -> {recipe.get(key)!r}" for key in changed)
        raise ConvbenchError(
            f"{path} was trained with another recipe than params.yaml now gives ({was}); "
            f"run `convbench train {cell}` (or `dvc repro`)"
        )


@dataclass(frozen=True)
class Resume:
    """What an interrupted run of a cell left behind: its training state and the MLflow run to continue."""

    state: TrainState
    mlflow_run_id: str | None


STATE_FIELDS = ("epoch", "model", "optimizer", "scheduler", "generator", "train_seconds")


def load_resume(path: Path, identity: dict[str, Any]) -> Resume | None:
    """The state an interrupted run of this exact cell left behind, or None (a stale or unreadable one is ignored)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            return None
        if any(payload.get(key) != value for key, value in identity.items()):
            return None
        history = [EpochStats(**stats) for stats in payload["history"]]
        state = TrainState(
            **{key: payload[key] for key in STATE_FIELDS},
            history=history,
            augment_generator=payload.get("augment_generator"),
        )
    except Exception:  # noqa: BLE001 - an unreadable or foreign resume file only costs a fresh start
        return None
    return Resume(state, payload.get("mlflow_run_id"))


def save_resume(path: Path, state: TrainState, identity: dict[str, Any], mlflow_run_id: str | None) -> None:
    """Write the state after an epoch (weights, optimizer, schedule, generator, history) atomically."""
    full = {key: getattr(state, key) for key in STATE_FIELDS} | {
        "history": [dataclasses.asdict(s) for s in state.history],
        "augment_generator": state.augment_generator,
    }
    full |= identity | {"format": FORMAT, "mlflow_run_id": mlflow_run_id}
    atomic.write_torch(path, full)
