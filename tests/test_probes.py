"""Probe transforms on tiny inputs, and a real permutation sweep on digits."""

from __future__ import annotations

import json

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline import paths
from pipeline.params import validate_params
from pipeline.probes import (
    invert_permutation,
    permutation,
    permute_pixels,
    scaled_model_params,
    shift,
    shift_directions,
    stratified_subset,
)
from tests.conftest import Workspace
from tests.helpers import params_with


def test_shift_moves_pixels_and_fills_with_zeros() -> None:
    image = torch.arange(1, 10, dtype=torch.float32).reshape(1, 1, 3, 3)
    right = shift(image, (0, 1))[0, 0]
    assert right.tolist() == [[0, 1, 2], [0, 4, 5], [0, 7, 8]]
    up = shift(image, (-1, 0))[0, 0]
    assert up.tolist() == [[4, 5, 6], [7, 8, 9], [0, 0, 0]]
    assert torch.equal(shift(image, (0, 0)), image)
    assert shift(image, (3, 0)).abs().sum() == 0, "shifting by the whole size leaves nothing"
    signal = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    assert shift(signal, (2,))[0, 0].tolist() == [0, 0, 1, 2]


def test_shift_directions_cover_every_axis_both_ways() -> None:
    assert shift_directions(0, 2) == [(0, 0)]
    assert sorted(shift_directions(2, 2)) == [(-2, 0), (0, -2), (0, 2), (2, 0)]
    assert sorted(shift_directions(1, 1)) == [(-1,), (1,)]


def test_permutation_is_fixed_per_seed_and_invertible() -> None:
    order = permutation((4, 4), seed=3)
    assert torch.equal(order, permutation((4, 4), seed=3)) and not torch.equal(order, permutation((4, 4), seed=4))
    assert sorted(order.tolist()) == list(range(16))
    images = torch.randn(5, 3, 4, 4)
    scrambled = permute_pixels(images, order)
    assert not torch.equal(scrambled, images)
    assert torch.equal(permute_pixels(scrambled, invert_permutation(order)), images)
    # the same spatial shuffle for every channel: channel c of pixel p comes from channel c
    assert torch.equal(scrambled[:, 1].reshape(5, -1), images[:, 1].reshape(5, -1)[:, order])


def test_fraction_subset_is_stratified_and_repeatable() -> None:
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    chosen = stratified_subset(labels, 0.2, seed=0)
    assert len(chosen) == 20 and torch.equal(chosen, stratified_subset(labels, 0.2, seed=0))
    assert torch.bincount(labels[chosen]).tolist() == [12, 6, 2]
    assert torch.equal(chosen, chosen.sort().values)
    assert torch.equal(stratified_subset(labels, 1.0, seed=0), torch.arange(100))
    assert set(torch.unique(labels[stratified_subset(labels, 0.01, seed=0)]).tolist()) == {0, 1, 2}


def test_size_scaling_scales_channels_and_hidden_widths() -> None:
    model = validate_params(params_with({})).model
    doubled = scaled_model_params(model, 2.0)
    assert doubled.cnn.conv[0].channels == 64 and doubled.cnn.hidden == [256]
    assert doubled.cnn.conv[0].kernel == model.cnn.conv[0].kernel and doubled.mlp == model.mlp


def test_permutation_sweep_writes_rows_and_tagged_runs(workspace: Workspace) -> None:
    content = json.loads((workspace.root / paths.probe("permutation")).read_text())
    rows = content["rows"]
    assert content["dataset"] == "digits"
    assert sorted((r["setting"], r["model"], r["seed"]) for r in rows) == sorted(
        (s, m, seed) for s in ("original", "permuted") for m in ("cnn", "mlp") for seed in (0, 1)
    )
    assert all(0 < r["test_accuracy"] <= 1 for r in rows)
    original_cnn = {r["seed"]: r["test_accuracy"] for r in rows if r["setting"] == "original" and r["model"] == "cnn"}
    for seed, accuracy in original_cnn.items():
        evaluated = json.loads((workspace.root / paths.metrics("cnn", seed)).read_text())["test_accuracy"]
        assert accuracy == pytest.approx(evaluated), "the unpermuted setting repeats the main cell exactly"
    client = MlflowClient(workspace.tracking_uri)
    experiment = client.get_experiment_by_name("convbench-digits")
    runs = client.search_runs([experiment.experiment_id], "tags.`convbench.probe` = 'permutation'")
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["convbench.setting"] for r in runs} == {"original", "permuted"}


def test_robustness_at_zero_shift_and_noise_is_the_test_accuracy(workspace: Workspace) -> None:
    metrics = json.loads((workspace.root / paths.metrics("mlp", 0)).read_text())
    assert metrics["robustness"]["shift"]["0"] == pytest.approx(metrics["test_accuracy"])
    assert metrics["robustness"]["noise"]["0"] == pytest.approx(metrics["test_accuracy"])
    assert set(metrics["robustness"]["shift"]) == {"0", "1", "2", "3", "4"}
    assert metrics["robustness"]["shift"]["4"] < metrics["robustness"]["shift"]["0"]


def test_report_states_each_claim_and_its_verdict(workspace: Workspace) -> None:
    text = (workspace.root / paths.report_markdown()).read_text()
    assert "## Why does the CNN win? Probes" in text
    for claim in ("CNNs are more robust to translation", "CNNs are more robust to pixel noise",
                  "The CNN's advantage comes from spatial structure"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {claim}"))
        assert any(v in row for v in ("**held**", "**did not hold**", "**partly held**", "**not tested**"))
    assert "](figures/robustness.png)" in text
