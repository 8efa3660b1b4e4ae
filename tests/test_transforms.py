"""Probe transforms on tiny inputs: shifts, pixel permutations and stratified subsets."""

from __future__ import annotations

import torch

from pipeline.core.transforms import (
    permutation,
    permute_pixels,
    shift,
    shift_directions,
    stratified_subset,
)


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
    assert torch.equal(permute_pixels(scrambled, order.argsort()), images)
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
