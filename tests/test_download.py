"""Download stage: present files touch no network; missing files offline give one clear error."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.artifacts import paths
from pipeline.errors import DataError
from pipeline.params import Params, validate_params
from pipeline.stages.download import download
from tests.helpers import OFFLINE, copy_project, params_with, run
from tests.torchvision_files import make_cifar10, make_mnist_family


def data_params(name: str, root: Path) -> Params:
    return validate_params(params_with({"data.name": name, "data.root": str(root)}))


def test_embedded_dataset_is_rewritten_byte_for_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dvc repro` runs download every time: equal bytes keep its output, so nothing after it re-runs."""
    monkeypatch.chdir(tmp_path)
    folder = paths.raw_dir(Path("data/raw"), "mnist5k")
    first = download(data_params("mnist5k", Path("data/raw")))
    before = (folder / "images.npz").read_bytes()
    listed = paths.source_manifest("mnist5k").read_text()
    second = download(data_params("mnist5k", Path("data/raw")))
    assert first.fetched and second.fetched and first.files == 1
    assert (folder / "images.npz").read_bytes() == before and paths.source_manifest("mnist5k").read_text() == listed
    assert np.load(folder / "images.npz")["images"].shape == (5000, 1, 28, 28)
    with zipfile.ZipFile(folder / "images.npz") as archive:  # no time, no OS in it: the same bytes on every machine
        assert {(i.date_time, i.create_system) for i in archive.infolist()} == {((1980, 1, 1, 0, 0, 0), 3)}
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["images.npz", "source.json"]


def test_present_torchvision_files_need_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_mnist_family(tmp_path / "raw" / "kmnist", "kmnist")
    result = download(data_params("kmnist", tmp_path / "raw"))
    assert not result.fetched and result.folder == tmp_path / "raw" / "kmnist"
    listed = json.loads(paths.source_manifest("kmnist").read_text())["files"]
    assert sorted(listed) == sorted(f"KMNIST/raw/{n}" for n in IDX_FILES), "listed relative to their folder"


def test_offline_without_files_names_files_place_and_offline_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    folder = tmp_path / "raw" / "mnist"
    with pytest.raises(DataError) as caught:
        download(data_params("mnist", tmp_path / "raw"))
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


IDX_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte", "train-labels-idx1-ubyte")


def test_torchvision_root_is_read_in_place_and_only_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in OFFLINE.items():  # the files are there, so no network is needed
        monkeypatch.setenv(key, value)
    shared, project = tmp_path / "datasets", tmp_path / "project"
    make_mnist_family(shared, "fashion_mnist")  # <root>/FashionMNIST/raw/..., as torchvision writes it
    make_cifar10(shared)  # another dataset in the same root: not listed, not copied
    before = {p: p.stat().st_mtime_ns for p in shared.rglob("*") if p.is_file()}
    project.mkdir()
    monkeypatch.chdir(project)
    result = download(data_params("fashion_mnist", shared))
    assert not result.fetched and result.folder == shared
    assert {p: p.stat().st_mtime_ns for p in shared.rglob("*") if p.is_file()} == before, (
        "the user's files as they were"
    )
    written = {p for p in project.rglob("*") if p.is_file()}
    assert written == {project / paths.source_manifest("fashion_mnist")}, "nothing is copied; only the list"
    listed = json.loads(paths.source_manifest("fashion_mnist").read_text())
    assert listed["source"] == str(shared)
    assert sorted(listed["files"]) == sorted(f"FashionMNIST/raw/{n}" for n in IDX_FILES)
    assert listed["files"]["FashionMNIST/raw/t10k-labels-idx1-ubyte"]["bytes"] == 8 + 20


def test_dvc_repro_reads_a_torchvision_root_outside_the_project_offline_without_copying(tmp_path: Path) -> None:
    """`data.root` at a folder outside the project, laid out as torchvision writes it (DVC 3 cannot track it)."""
    shared = tmp_path / "datasets"
    make_mnist_family(shared, "mnist", train=200, test=50)
    project = copy_project(tmp_path / "project", **{"data.name": "mnist", "data.root": str(shared)})
    images = shared / "MNIST" / "raw" / "train-images-idx3-ubyte"
    before = {p: p.stat().st_mtime_ns for p in shared.rglob("*") if p.is_file()}
    # download and prepare are the stages that read data.root; the rest read data/prepared (test_pipeline runs
    # them all), and running them here would add a minute on the 2-core machine
    result = run(["dvc", "repro", "prepare"], project, **OFFLINE)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert set(re.findall(r"Running stage '([^']+)'", result.stdout)) == {"download@mnist", "prepare@mnist"}
    assert f"download: mnist: 4 file(s) present in {shared}" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in shared.rglob("*") if p.is_file()} == before, "nothing added or touched"
    cached = [p for p in (project / ".dvc" / "cache").rglob("*") if p.is_file()]
    assert images.stat().st_size not in {p.stat().st_size for p in cached}, "DVC's cache holds no copy of the images"
    manifest = json.loads((project / paths.prepared_manifest("mnist")).read_text())
    assert manifest["sizes"] == {"train": 180, "val": 20, "test": 50}, "prepared from the 200 + 50 files in place"
    again = run(["dvc", "repro", "prepare"], project, **OFFLINE)
    assert again.returncode == 0, again.stdout[-2000:]
    assert set(re.findall(r"Running stage '([^']+)'", again.stdout)) == {"download@mnist"}, "the list is the same"


def test_the_torchvision_layouts_are_torchvisions_own() -> None:
    """The copied folders, file names and md5s equal torchvision's class attributes: a torchvision that moves or
    re-hashes a file fails here, not in a user's download."""
    import torchvision.datasets as tvd

    from pipeline.core.catalog import TORCHVISION_LAYOUTS, TorchvisionLayout

    def of(cls: type) -> TorchvisionLayout:
        if cls is tvd.CIFAR10:
            entries = [*cls.train_list, *cls.test_list, [cls.meta["filename"], cls.meta["md5"]]]
            return TorchvisionLayout(cls.base_folder, tuple(map(tuple, entries)), cls.filename)
        return TorchvisionLayout(cls.__name__, tuple(map(tuple, cls.resources)))

    classes = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "kmnist": tvd.KMNIST, "cifar10": tvd.CIFAR10}
    assert {name: of(cls) for name, cls in classes.items()} == TORCHVISION_LAYOUTS


def test_listing_and_checking_torchvision_files_does_not_import_torchvision(tmp_path: Path) -> None:
    """Download and prepare find and md5-check CIFAR's files without torchvision's 4 s import (loaded to download)."""
    make_cifar10(tmp_path / "cifar10")
    probe = (
        "import sys; from pathlib import Path; from pipeline.core.catalog import CATALOG; "
        f"folder = Path({str(tmp_path / 'cifar10')!r}); "
        "print(len(CATALOG['cifar10'].missing(folder, False)), len(CATALOG['cifar10'].missing(folder, True))); "
        "print('torchvision' in sys.modules)"
    )
    result = run(["python", "-c", probe], tmp_path)
    # generated files: present, and each fails torchvision's md5 of the real CIFAR-10
    assert result.stdout.split() == ["0", "7", "False"], result.stdout + result.stderr
