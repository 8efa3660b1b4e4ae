"""The shared training runtime: execution plans, schedules, determinism and divergence, on real digits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from pipeline.artifacts import paths
from pipeline.core import models
from pipeline.core.data import Split, load_prepared
from pipeline.core.runtime import (
    EpochStats,
    device_splits,
    execution_plan,
    fit,
    make_scheduler,
    seconds_to_final_accuracy,
)
from pipeline.errors import ConvbenchError
from tests.conftest import Workspace, tiny_params


def _splits(workspace: Workspace):
    prepared = load_prepared(
        workspace.root / paths.prepared_tensors("digits"), workspace.root / paths.prepared_manifest("digits")
    )
    return prepared, device_splits(prepared, torch.device("cpu"))


def test_same_seed_same_result_on_cpu(workspace: Workspace) -> None:
    prepared, data = _splits(workspace)
    config = models.resolve(workspace.params, prepared.input_shape, prepared.num_classes)["cnn"]
    outcomes = []
    for _ in range(2):
        torch.manual_seed(7)
        model = models.build(config)
        history, _seconds = fit(model, data, workspace.params.train, 7, lambda stats: None)
        outcomes.append(
            ([dataclasses.replace(s, seconds=0.0, elapsed_seconds=0.0) for s in history], model.state_dict())
        )
    (first_history, first_state), (second_history, second_state) = outcomes
    assert first_history == second_history
    assert all(torch.equal(first_state[k], second_state[k]) for k in first_state)


def test_execution_plan_picks_the_fast_paths_per_device() -> None:
    recipe = tiny_params(Path("/tmp")).train
    cpu = execution_plan(recipe, torch.device("cpu"), (1, 28, 28))
    assert (cpu.autocast_dtype, cpu.channels_last, cpu.fused_optimizer, cpu.compile) == (None, True, True, False)
    assert cpu.dtype_name == "float32"
    assert not execution_plan(recipe, torch.device("cpu"), (1, 40)).channels_last  # 1-D signals: no 4-D layout
    cuda = execution_plan(recipe, torch.device("cuda"), (3, 32, 32))
    assert cuda.autocast_dtype == torch.bfloat16 and cuda.dtype_name == "bfloat16 autocast"
    fp32 = execution_plan(recipe.model_copy(update={"precision": "fp32"}), torch.device("cuda"), (3, 32, 32))
    assert fp32.autocast_dtype is None


def test_seconds_to_final_accuracy_is_the_first_epoch_reaching_it() -> None:
    def epoch(n: int, accuracy: float) -> EpochStats:
        return EpochStats(n, 0.0, 0.0, 0.0, accuracy, 0.0, 1.0, elapsed_seconds=2.0 * n)

    assert seconds_to_final_accuracy([epoch(1, 0.5), epoch(2, 0.9), epoch(3, 0.8), epoch(4, 0.9)]) == 4.0
    assert seconds_to_final_accuracy([epoch(1, 0.5), epoch(2, 0.6)]) == 4.0


def test_non_finite_loss_stops_with_the_epoch_and_a_fix(workspace: Workspace) -> None:
    prepared, data = _splits(workspace)
    data.train.x[0, 0, 0, 0] = float("nan")
    config = models.resolve(workspace.params, prepared.input_shape, prepared.num_classes)["mlp"]
    seen: list[int] = []
    with pytest.raises(ConvbenchError) as caught:
        fit(models.build(config), data, workspace.params.train, 0, lambda stats: seen.append(stats.epoch))
    assert str(caught.value) == (
        f"training diverged: the training loss became nan in epoch 1; lower train.lr (now {workspace.params.train.lr}) "
        "and run `convbench train` again"
    )
    assert seen == []


def test_training_never_holds_the_test_split(workspace: Workspace) -> None:
    prepared, data = _splits(workspace)
    assert len(data.test) == 0 and len(data.train) == len(prepared.splits.train) > 0
    with_test = device_splits(prepared, torch.device("cpu"), with_test=True)
    assert isinstance(with_test.test, Split) and len(with_test.test) == len(prepared.splits.test)


def test_constant_schedule_keeps_the_learning_rate() -> None:
    recipe = tiny_params(Path("/tmp")).train.model_copy(update={"schedule": "constant", "lr": 0.01})
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=recipe.lr)
    scheduler = make_scheduler(optimizer, recipe, total_steps=10)
    rates = []
    for _ in range(10):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == [0.01] * 10
