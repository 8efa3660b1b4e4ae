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


def test_translate_moves_each_image_by_its_own_offset_within_the_range() -> None:
    from pipeline.core.transforms import translate

    images = torch.rand(64, 2, 6, 5) + 1.0  # no zeros, so a filled pixel is told from a moved one
    fill = (-0.5, 0.25)
    moved = translate(images, 2, torch.tensor(fill), torch.Generator().manual_seed(0))
    fill_value = torch.tensor(fill).view(1, 2, 1, 1)
    offsets_seen = set()
    for image, out in zip(images, moved):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.allclose(shift(image[None] - fill_value, (dy, dx)) + fill_value, out[None])
        ]
        assert len(matches) == 1, "every image is one of its shifted copies, shifted-in pixels at the fill"
        offsets_seen.add(matches[0])
    assert len(offsets_seen) > 10, "offsets are drawn per image, not once per batch"
    again = translate(images, 2, torch.tensor(fill), torch.Generator().manual_seed(0))
    assert torch.equal(moved, again), "the same generator seed gives the same batch"
    signal = translate(torch.rand(8, 1, 10) + 1.0, 3, torch.zeros(1), torch.Generator().manual_seed(1))
    assert signal.shape == (8, 1, 10) and (signal == 0).any(), "1-D signals are moved along their length"


def test_augment_flips_about_half_the_batch_and_only_when_asked() -> None:
    from pipeline.core.transforms import Augment

    images = torch.rand(200, 1, 4, 4)
    flipped = Augment(0, True, (0.0,))(images, torch.Generator().manual_seed(0))
    mirrored = [torch.equal(out, image.flip(-1)) for image, out in zip(images, flipped)]
    kept = [torch.equal(out, image) for image, out in zip(images, flipped)]
    assert all(m or k for m, k in zip(mirrored, kept)) and 60 < sum(mirrored) < 140
    assert torch.equal(Augment(0, False, (0.0,))(images, torch.Generator()), images)


def test_shifting_normalised_images_with_the_zero_pixel_equals_normalising_shifted_raw_images_to_the_bit() -> None:
    """The evaluate stage shifts the normalised test images (one normalisation, not one per copy); every copy must be
    exactly the normalised shifted raw images, in 2-D and 1-D, or the robustness numbers would move."""
    from pipeline.core.data import PreparedData, Split, Splits
    from pipeline.core.runtime import normalize, zero_pixel

    cpu = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    for shape, mean, std in [((64, 3, 9, 7), (0.49, 0.48, 0.45), (0.247, 0.243, 0.261)), ((64, 1, 40), (0.3,), (0.7,))]:
        raw = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        split = Split(raw, torch.zeros(len(raw), dtype=torch.long))
        prepared = PreparedData("t", Splits(split, split, split), ("a", "b"), mean, std, "")
        clean = normalize(raw, mean, std, cpu)
        for k in (1, 3, 100):
            for move in shift_directions(k, len(shape) - 2):
                expected = normalize(shift(raw, move), mean, std, cpu)
                assert torch.equal(shift(clean, move, zero_pixel(prepared)), expected), (shape, move)
