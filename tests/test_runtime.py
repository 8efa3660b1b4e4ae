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


def _threads_for(model: torch.nn.Module, shape: tuple[int, ...], batch: int, budget: int, override: int | None = None):
    from pipeline.core.runtime import choose_threads, intra_op_threads

    with intra_op_threads(budget):
        return choose_threads(model, torch.randn(2, *shape), torch.tensor([0, 1]), batch, override)


def test_a_tiny_model_trains_on_one_thread_and_a_large_one_on_its_share_of_the_cores() -> None:
    tiny = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10))
    large = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10)
    )
    assert _threads_for(tiny, (1, 40), 100, budget=2).count == 1
    chosen = _threads_for(large, (1, 28, 28), 128, budget=2)
    assert chosen.count == 2 and "MFLOP per training step, 2 core(s) available" in chosen.reason
    assert _threads_for(large, (1, 28, 28), 128, budget=1).count == 1, "never more than the process's share"
    assert _threads_for(tiny, (1, 40), 100, budget=2, override=3).count == 3, "train.threads decides"


def test_choosing_threads_leaves_the_thread_count_and_the_rng_as_they_were() -> None:
    from pipeline.core.runtime import choose_threads, intra_op_threads

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(40, 10))
    sample, labels = torch.randn(2, 1, 40), torch.tensor([0, 1])
    with intra_op_threads(2):
        torch.manual_seed(0)
        choose_threads(model, sample, labels, 100, None)
        after = torch.rand(3)
        torch.manual_seed(0)
        assert torch.equal(torch.rand(3), after), "the counted pass's dropout did not draw from the global RNG"
        assert torch.get_num_threads() == 2


def test_augmentation_changes_only_training_batches_and_repeats_with_its_seed(workspace: Workspace) -> None:
    from pipeline.core.data import Splits
    from pipeline.core.transforms import Augment

    prepared, data = _splits(workspace)
    data = device_splits(prepared, torch.device("cpu"), with_test=True)
    config = models.resolve(workspace.params, prepared.input_shape, prepared.num_classes)["mlp"]
    recipe = workspace.params.train.model_copy(update={"epochs": 2})
    augment = Augment(2, False, (-prepared.mean[0] / prepared.std[0],))

    def train(splits: Splits, augmentation) -> tuple[list, list[torch.Tensor], dict]:
        batches: list[torch.Tensor] = []

        def recorded(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            out = augmentation(batch, generator) if augmentation else batch
            batches.append(out.clone())
            return out

        torch.manual_seed(3)
        model = models.build(config)
        history, _seconds = fit(model, splits, recipe, 3, lambda stats: None, augment=recorded)
        return [(s.train_loss, s.train_accuracy) for s in history], batches, model.state_dict()

    losses, batches, state = train(data, augment)
    corrupted = Splits(
        data.train,
        type(data.val)(torch.randn_like(data.val.x), data.val.y.flip(0)),
        type(data.test)(torch.randn_like(data.test.x), data.test.y.flip(0)),
    )
    losses_c, batches_c, state_c = train(corrupted, augment)
    assert losses == losses_c and all(torch.equal(a, b) for a, b in zip(batches, batches_c))
    assert all(torch.equal(state[k], state_c[k]) for k in state), "validation and test images never reach training"
    _, plain, _ = train(data, None)
    assert len(plain) == len(batches) and not torch.equal(plain[0], batches[0]), "the training batches are augmented"
    assert len(batches) == 2 * -(-len(data.train) // recipe.batch_size)
