"""Checkpoint format: weights-only loading, exact rebuilds, and refusing stale or foreign checkpoints."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pytest
import torch

from pipeline.artifacts import checkpoint as checkpoints
from pipeline.artifacts import paths
from pipeline.core import cell, models
from pipeline.core.cell import recipe
from pipeline.core.data import load_prepared
from pipeline.errors import ConvbenchError
from pipeline.stages.evaluate import evaluate_cell
from tests.conftest import Workspace


def test_checkpoints_load_weights_only_and_rebuild(workspace: Workspace) -> None:
    for model in workspace.params.models:
        path = workspace.root / paths.checkpoint("digits", model, 0)
        checkpoint = checkpoints.load(path, model)
        assert checkpoint.config.name == model and checkpoint.config.input_shape == (1, 8, 8)
        rebuilt = checkpoints.restore(checkpoint, path)
        assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in checkpoint.state_dict.items())
        assert checkpoint.train.epochs == 3 and checkpoint.train.train_images_per_second > 0
        assert 0.0 <= checkpoint.train.final_val_accuracy <= 1.0
        assert checkpoint.recipe == recipe(workspace.params.train) and "seeds" not in checkpoint.recipe


def test_wrong_model_checkpoint_is_refused(workspace: Workspace) -> None:
    with pytest.raises(ConvbenchError, match=r"holds a 'cnn' model, not 'mlp'"):
        checkpoints.load(workspace.root / paths.checkpoint("digits", "cnn", 0), "mlp")


def test_checkpoint_from_another_architecture_is_refused(workspace: Workspace, tmp_path: Path) -> None:
    checkpoint = checkpoints.load(workspace.root / paths.checkpoint("digits", "cnn", 0))
    settings = checkpoint.config.settings | {"conv": [checkpoint.config.settings["conv"][0] | {"channels": 16}]}
    forged = dataclasses.replace(checkpoint, config=dataclasses.replace(checkpoint.config, settings=settings))
    with pytest.raises(ConvbenchError, match="does not fit the architecture in its own config"):
        checkpoints.restore(forged, tmp_path / "x.pt")


def _evaluate_forged(workspace: Workspace, tmp_path: Path, **changes: object) -> None:
    """Evaluate a changed copy of cnn-s0's checkpoint in a project folder of its own (tmp_path)."""
    checkpoint = checkpoints.load(workspace.root / paths.checkpoint("digits", "cnn", 0))
    checkpoints.save(tmp_path / paths.checkpoint("digits", "cnn", 0), dataclasses.replace(checkpoint, **changes))
    prepared = load_prepared(
        workspace.root / paths.prepared_tensors("digits"), workspace.root / paths.prepared_manifest("digits")
    )
    with contextlib.chdir(tmp_path):
        evaluate_cell(cell.one(workspace.params, "cnn", 0, prepared), prepared)


def test_checkpoint_trained_on_other_data_is_refused(workspace: Workspace, tmp_path: Path) -> None:
    with pytest.raises(ConvbenchError, match="was trained on other data"):
        _evaluate_forged(workspace, tmp_path, dataset_sha256="f" * 64)
    assert not (tmp_path / paths.metrics("digits", "cnn", 0)).exists()


def test_checkpoint_trained_with_another_recipe_is_refused(workspace: Workspace, tmp_path: Path) -> None:
    stale = recipe(workspace.params.train) | {"epochs": 1, "lr": 0.01}
    with pytest.raises(ConvbenchError) as caught:
        _evaluate_forged(workspace, tmp_path, recipe=stale)
    assert (
        "was trained with another recipe than params.yaml now gives (train.epochs 1 -> 3, train.lr 0.01 -> 0.003)"
        in str(caught.value)
    )
    assert not (tmp_path / paths.metrics("digits", "cnn", 0)).exists()


def test_config_round_trips_through_plain_values() -> None:
    from pipeline.params import validate_params
    from tests.helpers import params_with

    params = validate_params(params_with({"models": ["linear", "mlp", "lcn", "cnn"]}))
    for config in models.resolve(params, (1, 28, 28), 10).values():
        assert models.ModelConfig.from_dict(config.to_dict()) == config
