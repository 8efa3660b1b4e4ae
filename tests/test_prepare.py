"""Prepare stage: stratified seeded splits, train-only statistics, and tamper-evident tensors."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.artifacts import paths
from pipeline.core.data import load_prepared
from pipeline.errors import DataError
from pipeline.params import validate_params
from pipeline.stages.download import download
from pipeline.stages.prepare import channel_statistics, prepare, stratified_split
from tests.helpers import params_with
from tests.torchvision_files import make_mnist_family


def test_split_of_class_sorted_labels_is_stratified_disjoint_and_seeded() -> None:
    labels = np.repeat(np.arange(10), 100)  # sorted by class, like mnist5k
    train, val, test = stratified_split(labels, (0.1, 0.2), seed=0)
    assert (len(train), len(val), len(test)) == (700, 100, 200)
    assert np.bincount(labels[train]).tolist() == [70] * 10
    assert np.bincount(labels[val]).tolist() == [10] * 10
    assert np.bincount(labels[test]).tolist() == [20] * 10
    assert len(np.union1d(np.union1d(train, val), test)) == 1000
    again = stratified_split(labels, (0.1, 0.2), seed=0)
    other = stratified_split(labels, (0.1, 0.2), seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    assert not np.array_equal(test, other[2])


def test_split_too_small_to_stratify_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="cannot split 12 images stratified"):
        stratified_split(np.arange(12) % 6, (0.1, 0.2), seed=0)


@pytest.fixture(scope="module")
def mnist5k(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("prepare")
    params = validate_params(params_with({"data.root": str(root / "raw")}))
    with contextlib.chdir(root):
        download(params)
        prepare(params)
    return root / paths.prepared_tensors("mnist5k"), root / paths.prepared_manifest("mnist5k")


def test_mnist5k_prepared_balanced_with_train_only_statistics(mnist5k: tuple[Path, Path]) -> None:
    tensors_path, manifest_path = mnist5k
    prepared = load_prepared(tensors_path, manifest_path)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["sizes"] == {"train": 3500, "val": 500, "test": 1000}
    assert manifest["class_counts"]["test"] == [100] * 10
    assert prepared.splits.train.x.dtype == torch.uint8 and prepared.input_shape == (1, 28, 28)
    train = prepared.splits.train.x.double() / 255
    assert prepared.mean[0] == pytest.approx(train.mean().item(), rel=1e-9)
    assert prepared.std[0] == pytest.approx(train.std().item(), rel=1e-9)
    everything = torch.cat([getattr(prepared.splits, s).x for s in ("train", "val", "test")]).double() / 255
    assert prepared.mean[0] != pytest.approx(everything.mean().item(), rel=1e-6)


def test_tampered_tensors_are_refused(mnist5k: tuple[Path, Path], tmp_path: Path) -> None:
    tensors_path, manifest_path = mnist5k
    tensors = torch.load(tensors_path, weights_only=True)
    tensors["test_y"][0] = (tensors["test_y"][0] + 1) % 10
    edited = tmp_path / "edited.pt"
    torch.save(tensors, edited)
    with pytest.raises(DataError, match="does not match the sha256 in .*mnist5k/manifest.json"):
        load_prepared(edited, manifest_path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tensors_path.read_bytes()[:1000])
    with pytest.raises(DataError, match="is unreadable .*run `convbench prepare` again"):
        load_prepared(truncated, manifest_path)


def test_official_test_split_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_mnist_family(tmp_path / "mnist", "mnist", train=100, test=30)
    params = validate_params(params_with({"data.name": "mnist", "data.root": str(tmp_path)}))
    result = prepare(params)
    assert result.sizes == {"train": 90, "val": 10, "test": 30}
    assert json.loads(result.manifest_path.read_text())["official_test_split"] is True


@pytest.mark.parametrize("shape", [(300, 3, 7, 5), (200, 1, 40), (2, 2, 1, 1)])
def test_channel_statistics_are_exact_per_channel_for_images_and_signals(shape: tuple[int, ...]) -> None:
    """The histogram sums give each channel's mean and unbiased std as float64 arithmetic over every pixel does."""
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8))
    images[0, 0] = 255  # the largest value, whose square is the largest term
    mean, std = channel_statistics(images)
    scaled = images.double() / 255
    per_channel = scaled.transpose(0, 1).reshape(shape[1], -1)
    assert mean == pytest.approx(per_channel.mean(1).tolist(), rel=1e-12)
    assert std == pytest.approx(per_channel.std(1).tolist(), rel=1e-12)
