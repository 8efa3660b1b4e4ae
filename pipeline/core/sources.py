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

import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.artifacts.paths import expand_user
from pipeline.core.catalog import DatasetSpec, RawData, spec
from pipeline.errors import DataError

if TYPE_CHECKING:
    from PIL import Image

    from pipeline.params import Params, UserDataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
IGNORED = {"Thumbs.db", "desktop.ini", "__MACOSX"}  # what file managers leave, besides hidden names (.DS_Store)
SPLIT_FOLDERS = ("train", "val", "test")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}
GRAY_MODES = {"1", "L", "LA", "La", *SIXTEEN_BIT}
SERIAL_BELOW = 2_000  # images decoded in this process: below this, starting workers costs more than it saves
CHUNK = 256  # images per task sent to a worker


def dataset_spec(params: Params) -> DatasetSpec:
    """The selected dataset: a user's own declared under `dataset.<name>`, else the catalog's entry."""
    name = params.data.name
    entry = params.dataset.get(name)
    return spec(name) if entry is None else _user_spec(name, expanded(entry, name), int(params.data.max_memory))


def expanded(entry: UserDataset, alias: str) -> UserDataset:
    """`entry` with a leading ~ in its path and test_path read as a shell reads it (the home folder)."""
    paths = {
        key: expand_user(value, f"dataset.{alias}.{key}")
        for key in ("path", "test_path")
        if (value := getattr(entry, key)) is not None
    }
    return entry.model_copy(update=paths)


def _user_spec(alias: str, entry: UserDataset, max_memory: int) -> DatasetSpec:
    """A dataset the user declared: nothing to fetch, its files read where they are; a missing one is one line."""

    def files(folder: Path) -> list[Path]:
        return declared_paths(entry) if entry.format == "npz" else list_folder(entry, alias).files()

    def missing(folder: Path, verify: bool) -> list[Path]:
        for key, path in (("path", entry.path), ("test_path", entry.test_path)):
            if path is not None and not Path(path).exists():
                what = ".npz file" if entry.format == "npz" else "image folder (one subfolder per class)"
                raise DataError(f"dataset.{alias}.{key}: {path} does not exist; point it at your {what}")
        return []

    def fetch(folder: Path, verify: bool) -> None:
        missing(folder, verify)

    def load(folder: Path) -> RawData:
        read = load_npz if entry.format == "npz" else load_folder
        return read(entry, alias, max_memory)

    return DatasetSpec(False, fetch, missing, load, files, lambda folder: Path(entry.path), mirrorable=entry.mirrorable)


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


def _entries(folder: Path, alias: str) -> list[Path]:
    """The entries of `folder` that may be data, in a stable order; an unreadable folder or a link to nothing stops
    it, so no class or image is ever left out without a word."""
    try:
        entries = sorted(p for p in folder.iterdir() if not _ignored(p))
    except OSError as exc:
        raise DataError(_unreadable_folder(alias, folder, exc)) from None
    for entry in entries:
        _check_link(entry, alias)
    return entries


def _unreadable_folder(alias: str, folder: Path | str, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return (
        f"dataset.{alias}: the folder {folder} cannot be read ({reason}), so its images would be left out; make it "
        f"readable for this user (chmod -R u+rX) or move it out of the dataset"
    )


def _check_link(path: Path, alias: str) -> None:
    """A symbolic link whose target is gone would be skipped as if it were not there: refuse it instead."""
    if path.is_symlink() and not path.exists():
        raise DataError(
            f"dataset.{alias}: {path} is a symbolic link to {os.readlink(path)}, which does not exist; point the "
            f"link at the real folder or file, or remove it"
        )


def _class_images(folder: Path, alias: str) -> list[Path]:
    """Every image below one class folder (recursively, as torchvision does), in a stable order.

    A subfolder that cannot be read, a link to nothing, and a link back to a folder above it stop with one line.
    """

    def unreadable(exc: OSError) -> None:
        raise DataError(_unreadable_folder(alias, exc.filename or folder, exc))

    images: list[Path] = []
    seen = {folder.resolve()}
    for current, dirs, names in os.walk(folder, onerror=unreadable, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not _ignored(Path(d)))
        for name in dirs:
            below = Path(current) / name
            if below.is_symlink() and below.resolve() in seen:
                raise DataError(
                    f"dataset.{alias}: {below} is a symbolic link to {os.readlink(below)}, a folder already read "
                    f"(a loop, or the same images twice); remove the link"
                )
            seen.add(below.resolve())
        for name in sorted(names):
            path = Path(current) / name
            if _ignored(path):
                continue
            _check_link(path, alias)
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise DataError(
                    f"dataset.{alias}: {path} is not an image (expected {', '.join(IMAGE_EXTENSIONS)}); "
                    f"move it out of the class folders"
                )
            images.append(path)
    if not images:
        raise DataError(f"dataset.{alias}: the class folder {folder} holds no images; add images or remove the folder")
    return images


def _split_folders(root: Path, alias: str) -> dict[str, Path]:
    """{'train': root} for a flat folder; {'train': root/train, 'val': root/val, ...} for one already split.

    A folder with any split folder at its top must hold nothing but split folders, so that a stray folder beside
    train/ never turns the splits into classes.
    """
    top = [p for p in _entries(root, alias) if p.is_dir()]
    named = {p.name: SPLIT_NAMES[p.name.lower()] for p in top if p.name.lower() in SPLIT_NAMES}
    if not named:
        return {"train": root}
    others = [p.name for p in top if p.name not in named]
    if others or "train" not in named.values() or len(set(named.values())) < len(named):
        problem = f"folder(s) {', '.join(others)} beside" if others else "no single train/ among"
        raise DataError(
            f"dataset.{alias}: {root} has {problem} its split folders {', '.join(named)}; a split folder dataset "
            f"holds only train/ (and optionally val/ and test/), each with one subfolder per class"
        )
    return {
        split: root / name for split in SPLIT_FOLDERS for name, named_split in named.items() if named_split == split
    }


def list_folder(entry: UserDataset, alias: str) -> Listing:
    """The classes and image files of an ImageFolder dataset, flat or split into train/ (val/, test/)."""
    root = Path(entry.path)
    _check_link(root, alias)
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise DataError(
            f"dataset.{alias}.path: {root} {what}; point it at a folder with one subfolder of images per class"
        )
    folders = _split_folders(root, alias)
    classes = tuple(p.name for p in _entries(folders["train"], alias) if p.is_dir())
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
        present = [p for p in _entries(folder, alias) if p.is_dir()]
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
            image = _eight_bit(_upright(opened))
            target = "L" if (decoding.channels or _natural_channels(image.mode)) == 1 else "RGB"
            image = image if image.mode == target else image.convert(target)
            if decoding.size is not None and image.size != decoding.size[::-1]:
                image = image.resize(decoding.size[::-1], getattr(Image.Resampling, decoding.resample.upper()))
            array = np.asarray(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(_unreadable(alias, path, exc)) from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


ORIENTATION = 0x0112  # the EXIF tag phones set instead of rotating the pixels they store


def _upright(image: Image.Image) -> Image.Image:
    """The image as viewers show it: turned by its EXIF orientation where it has one (most phone photos)."""
    from PIL import ImageOps

    if image.getexif().get(ORIENTATION, 1) in (0, 1):
        return image
    return ImageOps.exif_transpose(image)


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit grayscale image scaled to 8 bits (Pillow's convert("L") would clip it to white), others as they are;
    32-bit pixels have no one range to scale from, so they are refused."""
    from PIL import Image

    if image.mode in ("I", "F"):
        raise ValueError(f"32-bit {'integer' if image.mode == 'I' else 'float'} pixels; save it with 8 or 16 bits")
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
    copied into the one output array as it arrives, so memory holds the result plus the chunks not yet copied.
    """
    first = _decode_one(paths[0], decoding, alias)
    out = np.empty((len(paths), first.shape[0], *(decoding.size or first.shape[1:])), dtype=np.uint8)
    processes = processes or _cores()
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


def _cores() -> int:
    """The cores this process may use (its affinity, under a container's or pytest worker's limits), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
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


def _open_npz(path: Path, alias: str, key: str) -> np.lib.npyio.NpzFile:
    """The archive, whose arrays are read only when asked for."""
    if not path.is_file():
        what = "is a folder" if path.exists() else "does not exist"
        raise DataError(f"dataset.{alias}.{key}: {path} {what}; point it at an .npz file with arrays x and y")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(
            f"dataset.{alias}.{key}: {path} is not a readable .npz file ({exc}); save it with numpy.savez"
        ) from None


def _read(archive: np.lib.npyio.NpzFile, key: str, alias: str, where: str) -> np.ndarray:
    try:
        return archive[key]
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"dataset.{alias}: {where} ({key}) cannot be read ({exc}); save the file again") from None


def _channels_first(x: np.ndarray, entry: UserDataset, alias: str, where: str) -> np.ndarray:
    """`x` as (N, C, H, W), or (N, 1, L) for signals; a view, nothing converted yet."""
    if x.ndim == 4:
        layout = entry.layout or _guess_layout(x.shape, alias, where)
        x = x if layout == "NCHW" else x.transpose(0, 3, 1, 2)
    elif x.ndim in (2, 3):
        x = x[:, None]
    else:
        raise DataError(
            f"dataset.{alias}: {where} has shape {x.shape}; expected (N, L), (N, H, W), (N, H, W, C) or (N, C, H, W)"
        )
    if len(x) == 0:
        raise DataError(f"dataset.{alias}: {where} holds no images; save at least one per class")
    if x.shape[1] not in (1, 3, 4):
        raise DataError(f"dataset.{alias}: {where} has {x.shape[1]} channels; convbench reads 1 (gray), 3 or 4 (RGBA)")
    if x.shape[1] == 4 and entry.channels is None:
        raise DataError(f"dataset.{alias}: {where} has 4 channels (RGBA); set dataset.{alias}.channels: 3 or 1")
    if entry.image_size is not None and x.ndim != 4:
        raise DataError(f"dataset.{alias}.image_size: {where} holds 1-D signals; remove image_size")
    return x


def _target_shape(x: np.ndarray, entry: UserDataset) -> tuple[int, ...]:
    """One image's shape once converted: the declared channels and size, else its own."""
    return (entry.channels or min(x.shape[1], 3), *(entry.image_size or x.shape[2:]))


def _as_images(x: np.ndarray, entry: UserDataset, alias: str, where: str) -> np.ndarray:
    """Channels-first `x` as uint8, converted to the declared channels and size, a chunk of images at a time."""
    out = np.empty((len(x), *_target_shape(x, entry)), dtype=np.uint8)
    scale = _scale(x, alias, where)
    for start in range(0, len(x), CHUNK):
        chunk = _as_uint8(x[start : start + CHUNK], scale)[:, :3]
        if out.shape[1] == 1 and chunk.shape[1] == 3:  # Pillow's convert("L"): ITU-R 601 luma in 16-bit fixed point
            wide = chunk.astype(np.uint32)
            weighted = wide[:, 0:1] * 19595 + wide[:, 1:2] * 38470 + wide[:, 2:3] * 7471
            chunk = ((weighted + 0x8000) >> 16).astype(np.uint8)
        elif out.shape[1] == 3 and chunk.shape[1] == 1:
            chunk = np.repeat(chunk, 3, axis=1)
        if chunk.shape[2:] != out.shape[2:]:
            chunk = _resize(chunk, out.shape[2:], entry.resize)
        out[start : start + len(chunk)] = chunk
    return out


def _guess_layout(shape: tuple[int, ...], alias: str, where: str) -> str:
    last, second = shape[3] in (1, 3, 4), shape[1] in (1, 3, 4)
    if last != second:
        return "NHWC" if last else "NCHW"
    raise DataError(
        f"dataset.{alias}: {where} has shape {shape}, which could be (N, H, W, C) or (N, C, H, W); set "
        f"dataset.{alias}.layout: NHWC or NCHW"
    )


def _scale(x: np.ndarray, alias: str, where: str) -> float:
    """What turns `x`'s values into 0..255: 1 for uint8 and 0..255 numbers, 255 for floats in 0..1."""
    if x.dtype == np.uint8:
        return 1.0
    if x.dtype == np.bool_:
        return 255.0
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"dataset.{alias}: {where} holds {x.dtype} values; save numbers (uint8 0..255 or float 0..1)")
    low, high = float(np.min(x)), float(np.max(x))
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
        raise DataError(f"dataset.{alias}: {where} holds values from {low:g} to {high:g}; scale them to 0..1 or 0..255")
    return 255.0 if np.issubdtype(x.dtype, np.floating) and high <= 1.0 else 1.0


def _as_uint8(x: np.ndarray, scale: float) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    return np.clip(np.rint(x.astype(np.float64) * scale), 0, 255).astype(np.uint8)


def _resize(x: np.ndarray, size: tuple[int, ...], resample: str) -> np.ndarray:
    """Each (C, H, W) image resized with Pillow, as folder images are."""
    from PIL import Image

    method = getattr(Image.Resampling, resample.upper())
    out = np.empty((len(x), x.shape[1], *size), dtype=np.uint8)
    for index, image in enumerate(x):
        picture = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
        array = np.asarray(picture.resize((size[1], size[0]), method))
        out[index] = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return out


def _as_labels(y: np.ndarray | None, count: int, alias: str, where: str) -> np.ndarray:
    if y is None:
        raise DataError(f"dataset.{alias}: {where} has images but no labels; save the labels beside them")
    if y.ndim == 2 and y.shape[1] == 1:  # (N, 1), as Keras code often keeps them
        y = y[:, 0]
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
    """NumPy arrays (x, y; optionally x_val, y_val, x_test, y_test and classes) as RawData.

    The test split comes from `test_path` (its x and y) or from x_test and y_test, never from both.
    """
    with contextlib.ExitStack() as files:
        return _load_npz(entry, alias, max_memory, files)


def _load_npz(entry: UserDataset, alias: str, max_memory: int, files: contextlib.ExitStack) -> RawData:
    main = files.enter_context(_open_npz(Path(entry.path), alias, "path"))
    if "x" not in main.files:
        raise DataError(
            f"dataset.{alias}.path: {entry.path} has arrays {', '.join(main.files) or 'none'} but no x; save the "
            f"images as x and their labels as y"
        )
    test = files.enter_context(_open_npz(Path(entry.test_path), alias, "test_path")) if entry.test_path else None
    if test is not None and ("x" not in test.files or "x_test" in main.files):
        problem = f"has no x (it holds {', '.join(test.files) or 'nothing'})" if "x" not in test.files else ""
        raise DataError(
            f"dataset.{alias}.test_path: {entry.test_path} "
            + (problem or f"and x_test in {entry.path} both give a test split")
            + "; save the test split as x and y in the test file, or as x_test and y_test in the main one"
        )
    sources = {
        "train": (main, "x", "y", Path(entry.path)),
        "val": (main, "x_val", "y_val", Path(entry.path)),
        "test": (test, "x", "y", Path(str(entry.test_path))) if test else (main, "x_test", "y_test", Path(entry.path)),
    }
    views = {
        split: (_channels_first(_read(archive, x_key, alias, str(path)), entry, alias, f"{path} ({x_key})"), path)
        for split, (archive, x_key, _, path) in sources.items()
        if x_key in archive.files
    }
    count = sum(len(x) for x, _ in views.values())
    check_memory(alias, count, _target_shape(views["train"][0], entry), max_memory)
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, (x, path) in views.items():
        archive, x_key, y_key, _ = sources[split]
        images = _as_images(x, entry, alias, f"{path} ({x_key})")
        y = _read(archive, y_key, alias, str(path)) if y_key in archive.files else None
        arrays[split] = (images, _as_labels(y, len(images), alias, f"{path} ({y_key})"))
    labels = np.concatenate([y for _, y in arrays.values()])
    if labels.min() < 0:
        raise DataError(f"dataset.{alias}: label {int(labels.min())} is negative; save labels 0..K-1")
    classes = _class_names(entry, main, int(labels.max()) + 1, alias)
    shapes = {split: images.shape[1:] for split, (images, _) in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(
            f"dataset.{alias}: the splits have different image shapes ({shapes}); set dataset.{alias}.image_size"
        )
    val, tests = arrays.get("val", (None, None)), arrays.get("test", (None, None))
    return RawData(*arrays["train"], classes, tests[0], tests[1], val[0], val[1])


def _class_names(entry: UserDataset, archive: np.lib.npyio.NpzFile, seen: int, alias: str) -> tuple[str, ...]:
    """Declared names, else the file's `classes` array, else '0'..'K-1' for the labels seen; each name once, since
    the per-class results are keyed by name (two classes of one name would share one accuracy)."""
    if entry.classes is not None:
        names, where = tuple(entry.classes), f"dataset.{alias}.classes"
    elif "classes" in archive.files:
        names = tuple(_text(c) for c in _read(archive, "classes", alias, str(entry.path)).ravel())
        where = f"the classes array in {entry.path}"
    else:
        return tuple(str(c) for c in range(seen))
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DataError(
            f"dataset.{alias}: {where} names {', '.join(map(repr, twice))} more than once; give every class its own "
            f"name"
        )
    return names


def _text(value: object) -> str:
    """A class name from an array: bytes (as NumPy keeps b'cat') decoded, anything else as its text."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
