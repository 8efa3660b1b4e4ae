"""Download stage: present files touch no network; missing files offline give one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.download import download
from pipeline.errors import DataError
from pipeline.params import validate_params
from tests.helpers import OFFLINE, params_with
from tests.torchvision_files import make_mnist_family


def data_params(name: str, root: Path):
    return validate_params(params_with({"data.name": name, "data.root": str(root)})).data


def test_embedded_dataset_is_rewritten_with_the_same_arrays(tmp_path: Path) -> None:
    folder = tmp_path / "mnist5k"
    first = download(data_params("mnist5k", tmp_path), folder)
    before = np.load(folder / "images.npz")["images"]
    second = download(data_params("mnist5k", tmp_path), folder)
    assert first.fetched and second.fetched and first.offline
    assert np.array_equal(np.load(folder / "images.npz")["images"], before)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["images.npz", "mnist5k"]


def test_present_torchvision_files_need_no_network(tmp_path: Path) -> None:
    folder = tmp_path / "kmnist"
    make_mnist_family(folder, "kmnist")
    result = download(data_params("kmnist", tmp_path), folder)
    assert not result.fetched and not result.offline


def test_offline_without_files_names_files_place_and_offline_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    folder = tmp_path / "mnist"
    with pytest.raises(DataError) as caught:
        download(data_params("mnist", tmp_path), folder)
    message = str(caught.value)
    assert message.startswith("dataset 'mnist' could not be downloaded")
    assert str(folder / "MNIST" / "raw" / "train-images-idx3-ubyte") in message
    assert "t10k-labels-idx1-ubyte" in message
    assert "torchvision's layout" in message and "mnist5k or digits" in message
    assert "\n" not in message
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == [], f"a failed download left files behind: {leftovers}"
