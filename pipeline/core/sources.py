"""Where the selected dataset comes from: the catalog's built-ins, or a user's own image folder or NumPy arrays.

A user's dataset is declared under `dataset.<alias>` in params.yaml and chosen by data.name like a built-in.
It becomes the same `RawData` the catalog's datasets give: uint8 (N, C, H, W) images (or (N, 1, L) signals),
int64 labels and class names, with the user's own val and test splits where they exist. Every problem with the
data stops with one line naming the file and the fix, before anything is decoded where that is possible.
An image folder is laid out as torchvision's ImageFolder (`<path>/<class>/<image>`), or already split into
`<path>/train/<class>/...`, with optional `val/` and `test/` beside it. Images are decoded with Pillow in a few
forked processes (benchmarks/prepare.py measures it against torchvision.io).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.core.data import DatasetSpec, RawData, spec
from pipeline.errors import DataError

if TYPE_CHECKING:
    from PIL import Image

    from pipeline.params import Params, UserDataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
IGNORED = {"Thumbs.db", "desktop.ini", "__MACOSX"}  # what file managers leave, besides hidden names (.DS_Store)
SPLIT_FOLDERS = ("train", "val", "test")
SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}
GRAY_MODES = {"1", "L", "LA", "La", "I", "F", *SIXTEEN_BIT}
SERIAL_BELOW = 2_000  # images decoded in this process: below this, starting workers costs more than it saves
CHUNK = 256  # images per task sent to a worker


def dataset_spec(params: Params, name: str | None = None) -> DatasetSpec:
    """The dataset `name` (default: data.name): a user's own declared under `dataset.<name>`, else the catalog's."""
    name = name or params.data.name
    entry = params.dataset.get(name)
    return spec(name) if entry is None else _user_spec(name, entry, int(params.data.max_memory))


def _user_spec(alias: str, entry: UserDataset, max_memory: int) -> DatasetSpec:
    """A dataset the user declared: nothing to fetch, its files read where they are."""

    def files(folder: Path) -> list[Path]:
        return declared_paths(entry) if entry.format == "npz" else list_folder(entry, alias).files()

    def missing(folder: Path, verify: bool) -> list[Path]:
        return [path for path in declared_paths(entry) if not path.exists()]

    def fetch(folder: Path, verify: bool) -> None:
        absent = missing(folder, verify)
        if absent:
            raise DataError(
                f"dataset.{alias}: {absent[0]} does not exist; point dataset.{alias}.path at your "
                f"{'.npz file' if entry.format == 'npz' else 'image folder (one subfolder per class)'}"
            )

    def load(folder: Path) -> RawData:
        read = load_npz if entry.format == "npz" else load_folder
        return read(entry, alias, max_memory)

    source = Path(entry.path).parent if entry.format == "npz" else Path(entry.path)
    return DatasetSpec(False, fetch, missing, load, files, lambda folder: source, mirrorable=entry.mirrorable)


@dataclass(frozen=True)
class Listing:
    """The image files of a folder dataset, per split that the folder itself provides, with their class index."""

    classes: tuple[str, ...]
    splits: dict[str, list[tuple[Path, int]]]

    def files(self) -> list[Path]:
        """Every image, in the order they are decoded."""
        return [path for entries in self.splits.values() for path, _ in entries]


def _ignored(path: Path) -> bool:
    return path.name.startswith(".") or path.name in IGNORED


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not _ignored(p))


def _class_images(folder: Path, alias: str) -> list[Path]:
    """Every image below one class folder (recursively, as torchvision does), in a stable order."""
    images: list[Path] = []
    for current, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not _ignored(Path(d)))
        for name in sorted(names):
            path = Path(current) / name
            if _ignored(path):
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise DataError(
                    f"dataset.{alias}: {path} is not an image (expected {', '.join(IMAGE_EXTENSIONS)}); "
                    f"move it out of the class folders"
                )
            images.append(path)
    if not images:
        raise DataError(f"dataset.{alias}: the class folder {folder} holds no images; add images or remove the folder")
    return images


def list_folder(entry: UserDataset, alias: str) -> Listing:
    """The classes and image files of an ImageFolder dataset, flat or split into train/ (val/, test/)."""
    root = Path(entry.path)
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise DataError(
            f"dataset.{alias}.path: {root} {what}; point it at a folder with one subfolder of images per class"
        )
    top = [p for p in _entries(root) if p.is_dir()]
    presplit = (root / "train").is_dir() and all(p.name in SPLIT_FOLDERS for p in top)
    folders = {name: root / name for name in SPLIT_FOLDERS if (root / name).is_dir()} if presplit else {"train": root}
    classes = tuple(p.name for p in _entries(folders["train"]) if p.is_dir())
    if not classes:
        raise DataError(
            f"dataset.{alias}: {folders['train']} has no class subfolders; lay it out as {folders['train']}/<class>/<image>"
        )
    if len(classes) < 2:
        raise DataError(
            f"dataset.{alias}: {folders['train']} has one class ({classes[0]}); a classifier needs at least two "
            f"class folders"
        )
    splits: dict[str, list[tuple[Path, int]]] = {}
    for split, folder in folders.items():
        present = [p for p in _entries(folder) if p.is_dir()]
        unknown = [p.name for p in present if p.name not in classes]
        if unknown:
            raise DataError(
                f"dataset.{alias}: {folder} has class folder(s) {', '.join(unknown)} that {folders['train']} lacks; "
                f"every split must use the training split's classes"
            )
        splits[split] = [(path, classes.index(p.name)) for p in present for path in _class_images(p, alias)]
    return Listing(classes, splits)


@dataclass(frozen=True)
class Decoding:
    """How every image becomes one (C, H, W) uint8 array: its channels, size and resampling."""

    channels: int | None  # None: the images' own, which must agree
    size: tuple[int, int] | None  # (H, W); None: the images' own, which must agree
    resample: str


def _natural_channels(mode: str) -> int:
    return 1 if mode in GRAY_MODES else 3


def _decode_one(path: Path, decoding: Decoding, alias: str) -> np.ndarray:
    """One image as (C, H, W) uint8, or DataError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            image = _eight_bit(opened)
            target = "L" if (decoding.channels or _natural_channels(image.mode)) == 1 else "RGB"
            image = image if image.mode == target else image.convert(target)
            if decoding.size is not None and image.size != decoding.size[::-1]:
                image = image.resize(decoding.size[::-1], getattr(Image.Resampling, decoding.resample.upper()))
            array = np.asarray(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(_unreadable(alias, path, exc)) from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit grayscale image scaled to 8 bits (Pillow's convert("L") would clip it to white), others as they are."""
    from PIL import Image

    if image.mode not in SIXTEEN_BIT:
        return image
    wide = np.asarray(image).astype(np.uint32)
    return Image.fromarray(((wide + 128) // 257).astype(np.uint8))


def _unreadable(alias: str, path: Path, exc: Exception) -> str:
    from PIL import UnidentifiedImageError

    reason = "not in a format Pillow reads" if isinstance(exc, UnidentifiedImageError) else str(exc)
    return f"dataset.{alias}: {path} cannot be read as an image ({reason}); replace or delete it"


def _decode_into(out: np.ndarray, paths: list[Path], decoding: Decoding, alias: str) -> np.ndarray:
    """Decode `paths` into `out` (n, C, H, W); an image of another size or channel count stops it."""
    for index, path in enumerate(paths):
        array = _decode_one(path, decoding, alias)
        if array.shape != out.shape[1:]:
            raise DataError(_mismatch(alias, path, array.shape, out.shape[1:]))
        out[index] = array
    return out


def _decode_chunk(paths: list[Path], decoding: Decoding, shape: tuple[int, ...], alias: str) -> np.ndarray:
    """A worker's task: a chunk of images as one new array."""
    return _decode_into(np.empty((len(paths), *shape), dtype=np.uint8), paths, decoding, alias)


def _mismatch(alias: str, path: Path, got: tuple[int, ...], want: tuple[int, ...]) -> str:
    if got[0] != want[0]:
        kinds = {1: "grayscale", 3: "colour"}
        return (
            f"dataset.{alias}: {path} is {kinds[got[0]]} but the first image is {kinds[want[0]]}; set "
            f"dataset.{alias}.channels: 1 or 3 to convert every image"
        )
    return (
        f"dataset.{alias}: {path} is {got[1]}x{got[2]} but the first image is {want[1]}x{want[2]}; set "
        f"dataset.{alias}.image_size: [H, W] to resize every image"
    )


def decode(paths: list[Path], decoding: Decoding, alias: str, processes: int | None = None) -> np.ndarray:
    """Every image in `paths` as one (N, C, H, W) uint8 array, decoded by `processes` forked workers.

    The first image fixes what was not declared (channels, size); the others must agree. Each worker's chunk is
    copied into the one output array as it arrives, so memory holds the result plus a few chunks.
    """
    first = _decode_one(paths[0], decoding, alias)
    out = np.empty((len(paths), first.shape[0], *(decoding.size or first.shape[1:])), dtype=np.uint8)
    processes = processes or len(os.sched_getaffinity(0))  # the cores this process may use, not the machine's
    if len(paths) < SERIAL_BELOW or processes == 1:
        return _decode_into(out, paths, decoding, alias)
    starts = range(0, len(paths), CHUNK)
    chunks = [paths[start : start + CHUNK] for start in starts]
    context = multiprocessing.get_context("fork")  # as torch's DataLoader workers: nothing is imported again
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        same = [[value] * len(chunks) for value in (decoding, out.shape[1:], alias)]
        for start, part in zip(starts, pool.map(_decode_chunk, chunks, *same)):
            out[start : start + len(part)] = part
    return out


def check_memory(alias: str, count: int, shape: tuple[int, ...], limit: int) -> None:
    """Stop before decoding when the prepared uint8 images would not fit in data.max_memory."""
    from pydantic import ByteSize

    needed = count * int(np.prod(shape))
    if needed > limit:
        raise DataError(
            f"dataset.{alias}: {count:,} images of {'x'.join(map(str, shape))} need "
            f"{ByteSize(needed).human_readable()} as uint8 (and about 4x that as float32 while training), more than "
            f"data.max_memory ({ByteSize(limit).human_readable()}); set a smaller dataset.{alias}.image_size, use "
            f"fewer images, or raise data.max_memory"
        )


def load_folder(entry: UserDataset, alias: str, max_memory: int, processes: int | None = None) -> RawData:
    """An ImageFolder dataset as RawData; the memory bound is checked from the first image before decoding."""
    from PIL import Image

    listing = list_folder(entry, alias)
    paths = listing.files()
    decoding = Decoding(entry.channels, entry.image_size, entry.resize)
    try:
        with Image.open(paths[0]) as image:
            width, height = image.size
            channels = decoding.channels or _natural_channels(image.mode)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(_unreadable(alias, paths[0], exc)) from None
    check_memory(alias, len(paths), (channels, *(decoding.size or (height, width))), max_memory)
    images = decode(paths, decoding, alias, processes)
    labels = np.array([label for entries in listing.splits.values() for _, label in entries], dtype=np.int64)
    bounds = np.cumsum([0, *(len(entries) for entries in listing.splits.values())])
    parts = {split: slice(bounds[i], bounds[i + 1]) for i, split in enumerate(listing.splits)}

    def part(split: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        return (images[parts[split]], labels[parts[split]]) if split in parts else (None, None)

    return RawData(
        images[parts["train"]],
        labels[parts["train"]],
        listing.classes,
        *part("test"),
        *part("val"),
    )


# --- NumPy arrays ----------------------------------------------------------------------------------------------------


def declared_paths(entry: UserDataset) -> list[Path]:
    """The .npz file (or the image folder), and the test split's own file where one is declared."""
    return [Path(entry.path), *([Path(entry.test_path)] if entry.test_path else [])]


def _read_npz(path: Path, alias: str, key: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        what = "is a folder" if path.exists() else "does not exist"
        raise DataError(f"dataset.{alias}.{key}: {path} {what}; point it at an .npz file with arrays x and y")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(
            f"dataset.{alias}.{key}: {path} is not a readable .npz file ({exc}); save it with numpy.savez"
        ) from None


def _as_images(x: np.ndarray, entry: UserDataset, alias: str, where: str) -> np.ndarray:
    """`x` as uint8 (N, C, H, W), or (N, 1, L) for signals, converted to the declared channels and size."""
    if x.ndim == 4:
        layout = entry.layout or _guess_layout(x.shape, alias, where)
        x = x if layout == "NCHW" else x.transpose(0, 3, 1, 2)
    elif x.ndim in (2, 3):
        x = x[:, None]
    else:
        raise DataError(
            f"dataset.{alias}: {where} has shape {x.shape}; expected (N, L), (N, H, W), (N, H, W, C) or (N, C, H, W)"
        )
    x = _as_uint8(x, alias, where)
    if x.shape[1] not in (1, 3, 4):
        raise DataError(f"dataset.{alias}: {where} has {x.shape[1]} channels; convbench reads 1 (gray), 3 or 4 (RGBA)")
    if x.shape[1] == 4 and entry.channels is None:
        raise DataError(f"dataset.{alias}: {where} has 4 channels (RGBA); set dataset.{alias}.channels: 3 or 1")
    channels = entry.channels or x.shape[1]
    x = x[:, :3]
    if channels == 1 and x.shape[1] == 3:  # ITU-R 601 luma, as Pillow's convert("L")
        x = ((x[:, 0:1] * 299 + x[:, 1:2] * 587 + x[:, 2:3] * 114 + 500) // 1000).astype(np.uint8)
    elif channels == 3 and x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    if entry.image_size is not None:
        if x.ndim != 4:
            raise DataError(f"dataset.{alias}.image_size: {where} holds 1-D signals; remove image_size")
        if tuple(x.shape[2:]) != entry.image_size:
            x = _resize(x, entry.image_size, entry.resize)
    return np.ascontiguousarray(x)


def _guess_layout(shape: tuple[int, ...], alias: str, where: str) -> str:
    last, second = shape[3] in (1, 3, 4), shape[1] in (1, 3, 4)
    if last != second:
        return "NHWC" if last else "NCHW"
    raise DataError(
        f"dataset.{alias}: {where} has shape {shape}, which could be (N, H, W, C) or (N, C, H, W); set "
        f"dataset.{alias}.layout: NHWC or NCHW"
    )


def _as_uint8(x: np.ndarray, alias: str, where: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"dataset.{alias}: {where} holds {x.dtype} values; save numbers (uint8 0..255 or float 0..1)")
    if x.dtype == np.bool_:
        return x.astype(np.uint8) * 255
    low, high = float(np.min(x)), float(np.max(x))
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
        raise DataError(f"dataset.{alias}: {where} holds values from {low:g} to {high:g}; scale them to 0..1 or 0..255")
    scale = 255.0 if np.issubdtype(x.dtype, np.floating) and high <= 1.0 else 1.0
    return np.clip(np.rint(x.astype(np.float64) * scale), 0, 255).astype(np.uint8)


def _resize(x: np.ndarray, size: tuple[int, int], resample: str) -> np.ndarray:
    """Each (C, H, W) image resized with Pillow, as folder images are."""
    from PIL import Image

    method = getattr(Image.Resampling, resample.upper())
    out = np.empty((len(x), x.shape[1], *size), dtype=np.uint8)
    for index, image in enumerate(x):
        picture = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
        array = np.asarray(picture.resize(size[::-1], method))
        out[index] = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return out


def _as_labels(y: np.ndarray | None, count: int, alias: str, where: str) -> np.ndarray:
    if y is None:
        raise DataError(f"dataset.{alias}: {where} has images but no labels; save the labels beside them")
    if y.ndim != 1 or len(y) != count:
        raise DataError(
            f"dataset.{alias}: {where} holds labels of shape {y.shape} for {count:,} images; save one integer "
            f"label per image"
        )
    if not np.issubdtype(y.dtype, np.integer) and not (
        np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y))
    ):
        raise DataError(f"dataset.{alias}: {where} holds {y.dtype} labels that are not whole numbers; save 0..K-1")
    return y.astype(np.int64)


def load_npz(entry: UserDataset, alias: str, max_memory: int) -> RawData:
    """NumPy arrays (x, y; optionally x_val, y_val, x_test, y_test and classes) as RawData."""
    main = _read_npz(Path(entry.path), alias, "path")
    if "x" not in main:
        raise DataError(
            f"dataset.{alias}.path: {entry.path} has arrays {', '.join(main) or 'none'} but no x; save the images as x "
            f"and their labels as y"
        )
    test = _read_npz(Path(entry.test_path), alias, "test_path") if entry.test_path else {}
    sources = {
        "train": (main, "x", "y", str(entry.path)),
        "val": (main, "x_val", "y_val", str(entry.path)),
        "test": (test, "x", "y", str(entry.test_path)) if test else (main, "x_test", "y_test", str(entry.path)),
    }
    present = {split: archive[x_key] for split, (archive, x_key, _, _) in sources.items() if x_key in archive}
    check_memory(alias, sum(len(x) for x in present.values()), present["train"].shape[1:], max_memory)
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, (archive, x_key, y_key, path) in sources.items():
        if x_key in archive:
            where = f"{path} ({x_key})"
            images = _as_images(archive[x_key], entry, alias, where)
            arrays[split] = (images, _as_labels(archive.get(y_key), len(images), alias, f"{path} ({y_key})"))
    labels = np.concatenate([y for _, y in arrays.values()])
    if len(labels) and labels.min() < 0:
        raise DataError(f"dataset.{alias}: label {int(labels.min())} is negative; save labels 0..K-1")
    classes = _class_names(entry, main, int(labels.max()) + 1 if len(labels) else 0, alias)
    shapes = {split: images.shape[1:] for split, (images, _) in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(
            f"dataset.{alias}: the splits have different image shapes ({shapes}); set dataset.{alias}.image_size"
        )
    val, tests = arrays.get("val", (None, None)), arrays.get("test", (None, None))
    return RawData(
        *arrays["train"], classes, test_images=tests[0], test_labels=tests[1], val_images=val[0], val_labels=val[1]
    )


def _class_names(entry: UserDataset, archive: dict[str, np.ndarray], seen: int, alias: str) -> tuple[str, ...]:
    """Declared names, else the file's `classes` array, else '0'..'K-1' for the labels seen."""
    if entry.classes is not None:
        return tuple(entry.classes)
    if "classes" in archive:
        return tuple(str(c) for c in archive["classes"])
    return tuple(str(c) for c in range(seen))
