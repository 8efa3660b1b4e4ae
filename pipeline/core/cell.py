"""One (model, seed) cell, resolved in one place: the model's own recipe, its buildable config, its files, its device.

Train, evaluate, bench, report, tune and the probes all ask this module what a cell is, so a checkpoint is
always checked against the same recipe and config that trained it, and no stage resolves a model its own way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.artifacts import checkpoint as checkpoints
from pipeline.artifacts import paths
from pipeline.core import models, recipes
from pipeline.core.data import load_prepared
from pipeline.core.measure import resolve_device
from pipeline.core.models import ModelConfig
from pipeline.core.runtime import execution_plan

if TYPE_CHECKING:
    import torch
    from torch import nn

    from pipeline.core.data import PreparedData
    from pipeline.core.runtime import ExecutionPlan
    from pipeline.params import Params, TrainParams


def recipe(train: TrainParams) -> dict[str, Any]:
    """The recipe a cell is trained with, as recorded in its checkpoint: the train section without the seed list."""
    return train.recipe()


@dataclass(frozen=True)
class Cell:
    """One model at one seed, as params.yaml defines it now."""

    model: str
    seed: int
    params: Params  # with the model's tuned recipe (and shape settings) when tuning is on
    config: ModelConfig

    @property
    def name(self) -> str:
        """'cnn-s0'."""
        return paths.cell(self.model, self.seed)

    @property
    def key(self) -> tuple[str, int]:
        """(model, seed): what names its files within the dataset's folders."""
        return self.model, self.seed

    @property
    def dataset(self) -> str:
        """The dataset it trains on: its files live under this name."""
        return self.params.data.name

    @property
    def recipe(self) -> dict[str, Any]:
        """What this cell trains with (params.train of its own params, without the seeds)."""
        return recipe(self.params.train)

    @property
    def checkpoint_path(self) -> Path:
        """Where its weights are."""
        return paths.checkpoint(self.dataset, self.model, self.seed)

    def trained(self, prepared: PreparedData) -> checkpoints.Checkpoint:
        """Its checkpoint, refused with one line when it was trained on other data, as another model or recipe."""
        path = self.checkpoint_path
        checkpoint = checkpoints.load(path, self.model)
        checkpoints.check_current(checkpoint, path, self.config, prepared.name, prepared.sha256, self.recipe)
        return checkpoint

    def restore(self, prepared: PreparedData) -> nn.Module:
        """Its trained module (checked as `trained` checks), weights loaded strictly, on the CPU."""
        return checkpoints.restore(self.trained(prepared), self.checkpoint_path)

    def device(self) -> torch.device:
        """The device train.device names (auto: cuda, then mps, then cpu)."""
        return resolve_device(self.params.train.device)

    def plan(self, device: torch.device, input_shape: tuple[int, ...]) -> ExecutionPlan:
        """How its recipe runs on `device`."""
        return execution_plan(self.params.train, device, input_shape)


def prepared_data(params: Params) -> PreparedData:
    """The prepared splits of data.name, as the prepare stage wrote them."""
    return load_prepared(paths.prepared_tensors(params.data.name), paths.prepared_manifest(params.data.name))


def model_params(params: Params, model: str, dataset_sha256: str) -> Params:
    """params with the model's own recipe: its tuned one when tune.trials > 0 (checked to fit), else the shared one."""
    return recipes.params_for(params, model, dataset_sha256)


def resolve(
    params: Params,
    prepared: PreparedData,
    names: list[str] | None = None,
    seeds: list[int] | None = None,
    tuned: bool = True,
) -> list[Cell]:
    """Every cell of `names` x `seeds` (default: models x train.seeds), each model resolved once for all its seeds.

    With `tuned` each model gets its own recipe (the tuned one when tune.trials > 0); without, every model gets
    params as given (the probes retrain with the shared recipe, which their fingerprint records). Every model of
    params.models is resolved, picked or not, so a broken one (a user builder that fails) stops the stage before
    any cell trains.
    """
    resolved = {}
    for name in params.models:
        own = model_params(params, name, prepared.sha256) if tuned else params
        resolved[name] = (own, models.resolve(own, prepared.input_shape, prepared.num_classes, [name])[name])
    return [
        Cell(name, seed, *resolved[name])
        for name in names or params.models
        for seed in (params.train.seeds if seeds is None else seeds)
    ]


def one(params: Params, model: str, seed: int, prepared: PreparedData) -> Cell:
    """The cell of `model` at `seed`."""
    return resolve(params, prepared, [model], [seed])[0]
