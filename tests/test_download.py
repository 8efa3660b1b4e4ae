"""Download stage: present files touch no network; missing files offline give one clear error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.artifacts import paths
from pipeline.core import data
from pipeline.errors import DataError
from pipeline.params import validate_params
from pipeline.stages.download import download
from tests.helpers import OFFLINE, copy_project, params_with, run
from tests.torchvision_files import make_cifar10, make_mnist_family


def data_params(name: str, root: Path):
    return validate_params(params_with({"data.name": name, "data.root": str(root)})).data


def test_embedded_dataset_is_rewritten_with_the_same_arrays(tmp_path: Path) -> None:
    folder = tmp_path / "mnist5k"
    first = download(data_params("mnist5k", tmp_path), folder)
    before = np.load(folder / "images.npz")["images"]
    second = download(data_params("mnist5k", tmp_path), folder)
    assert first.fetched and second.fetched
    assert np.array_equal(np.load(folder / "images.npz")["images"], before)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["images.npz", "mnist5k"]


def test_present_torchvision_files_need_no_network(tmp_path: Path) -> None:
    folder = tmp_path / "kmnist"
    make_mnist_family(folder, "kmnist")
    result = download(data_params("kmnist", tmp_path), folder)
    assert not result.fetched


def test_offline_without_files_names_files_place_and_offline_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    folder = tmp_path / "mnist"
    with pytest.raises(DataError) as caught:
        download(data_params("mnist", tmp_path), folder)
    message = str(caught.value)
    assert message.startswith("dataset 'mnist' could not be downloaded")
    assert str(folder / "MNIST" / "raw" / "train-images-idx3-ubyte") in message
    assert "t10k-labels-idx1-ubyte" in message
    assert f"convbench's layout, {folder / 'MNIST'}/..." in message, "names convbench's own layout"
    assert "torchvision's own layout, <data.root>/MNIST/..." in message, "names torchvision's root layout"
    assert "mnist5k or digits" in message
    assert "\n" not in message
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == [], f"a failed download left files behind: {leftovers}"


def test_torchvision_root_is_read_in_place_and_only_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in OFFLINE.items():  # the files are there, so no network is needed
        monkeypatch.setenv(key, value)
    make_mnist_family(tmp_path, "fashion_mnist")  # <root>/FashionMNIST/raw/..., as torchvision writes it
    make_cifar10(tmp_path)  # another dataset in the same root: not listed, not copied
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    folder = tmp_path / "fashion_mnist"
    result = download(data_params("fashion_mnist", tmp_path), folder)
    assert not result.fetched and result.folder == tmp_path
    assert {p: p.stat().st_mtime_ns for p in before} == before, "the user's files are left as they are"
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - set(before)
    assert written == {folder / data.IN_PLACE_MANIFEST}, "nothing is copied; DVC's output gets only the list"
    listed = json.loads((folder / data.IN_PLACE_MANIFEST).read_text())["files"]
    assert sorted(listed) == sorted(
        f"FashionMNIST/raw/{n}"
        for n in (
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
        )
    )
    assert listed["FashionMNIST/raw/t10k-labels-idx1-ubyte"]["bytes"] == 8 + 20


def test_convbench_layout_writes_no_list(tmp_path: Path) -> None:
    folder = tmp_path / "kmnist"
    make_mnist_family(folder, "kmnist")
    make_mnist_family(tmp_path, "kmnist", seed=1)  # a torchvision root beside it: convbench's own folder wins
    result = download(data_params("kmnist", tmp_path), folder)
    assert result.folder == folder and not (folder / data.IN_PLACE_MANIFEST).exists()


def test_dvc_repro_reads_a_torchvision_root_offline_without_copying(tmp_path: Path) -> None:
    """`data.root` at a folder laid out as torchvision writes it; DVC 3 needs it inside the project."""
    project = copy_project(tmp_path / "project", **{"data.name": "mnist", "data.root": "torchvision"})
    make_mnist_family(project / "torchvision", "mnist", train=200, test=50)
    images = project / "torchvision" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    before = {p: p.stat().st_mtime_ns for p in (project / "torchvision").rglob("*") if p.is_file()}
    # download and prepare are the stages that read data.root; the rest read data/prepared (test_pipeline runs
    # them all), and running them here would add a minute on the 2-core machine
    result = run(["dvc", "repro", "prepare"], project, **OFFLINE)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert set(re.findall(r"Running stage '([^']+)'", result.stdout)) == {"download", "prepare"}
    assert "download: mnist already present in torchvision" in result.stdout
    after = {p for p in (project / "torchvision").rglob("*") if p.is_file()}
    added = {project / "torchvision" / "mnist" / data.IN_PLACE_MANIFEST, project / "torchvision" / ".gitignore"}
    assert after - set(before) == added, "only the list, and DVC's .gitignore entry for it"
    assert {p: p.stat().st_mtime_ns for p in before} == before
    cached = [p for p in (project / ".dvc" / "cache").rglob("*") if p.is_file()]
    assert images.stat().st_size not in {p.stat().st_size for p in cached}, "DVC's cache holds no copy of the images"
    manifest = json.loads((project / paths.prepared_manifest("mnist")).read_text())
    assert manifest["sizes"] == {"train": 180, "val": 20, "test": 50}, "prepared from the 200 + 50 files in place"
    again = run(["dvc", "repro", "prepare"], project, **OFFLINE)
    assert again.returncode == 0 and "Running stage" not in again.stdout, again.stdout[-2000:]
