"""How fast convbench prepares a user's image folder: images/s of `load_folder` on small grayscale PNGs.

A user's ImageFolder dataset (`<root>/<class>/<image>.png`) is listed and decoded by
`pipeline.core.sources.load_folder`: Pillow in forked worker processes (serially below SERIAL_BELOW images).
This times, on one folder of 28x28 grayscale PNGs over 10 classes written once into a temporary directory:
(a) `load_folder` itself (listing + decode in one worker per core, the real path), (b) `load_folder` on one
process, and (c) the same listing followed by a plain loop of `torchvision.io.decode_image(read_file(path),
mode=GRAY)`, to compare what the workers buy (a against b) and the decoders (b against c). Rounds alternate the
order of the variants; the printed figures are the median images/s over rounds, with their range.

Run: python benchmarks/prepare.py [--images 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image, read_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.sources import SERIAL_BELOW, Decoding, decode, list_folder, load_folder
from pipeline.params import UserDataset
from tests.image_files import write_image_folder

ALIAS = "bench"
CLASSES = 10
SIZE = 28
GOAL = 10_000  # images/s for load_folder on 28x28 PNGs
MAX_MEMORY = 2**40  # no memory bound: the benchmark's folder is small


def write_folder(root: Path, images: int) -> UserDataset:
    """`images` 28x28 grayscale PNGs over 10 classes under `root`, declared as a user's image folder."""
    write_image_folder(root, [f"class{k}" for k in range(CLASSES)], -(-images // CLASSES), SIZE, channels=1)
    return UserDataset(format="imagefolder", path=root)


def convbench_prepare(entry: UserDataset, processes: int | None = None) -> int:
    """convbench's path: list the folder, then decode it (in forked workers unless processes=1); the image count."""
    return len(load_folder(entry, ALIAS, MAX_MEMORY, processes).images)


def torchvision_serial(entry: UserDataset) -> int:
    """The same listing, then a plain loop of torchvision.io's PNG decoder into one uint8 tensor; the image count."""
    paths = list_folder(entry, ALIAS).files()
    out = torch.empty((len(paths), 1, SIZE, SIZE), dtype=torch.uint8)
    for index, path in enumerate(paths):
        out[index] = decode_image(read_file(str(path)), mode=ImageReadMode.GRAY)
    return len(out)


def check_decoders_agree(paths: list[Path]) -> None:
    """Pillow and torchvision.io give the same pixels for these PNGs, so their speeds compare like for like."""
    ours = decode(paths[:50], Decoding(None, None, "bilinear"), ALIAS, processes=1)
    theirs = np.stack([decode_image(read_file(str(p)), mode=ImageReadMode.GRAY).numpy() for p in paths[:50]])
    if not np.array_equal(ours, theirs):
        raise SystemExit("Pillow and torchvision.io decode these PNGs differently; the comparison would not hold")


def images_per_second(call: Callable[[], int], expected: int) -> float:
    """Images/s of one call that decodes `expected` images."""
    started = time.perf_counter()
    count = call()
    elapsed = time.perf_counter() - started
    if count != expected:
        raise SystemExit(f"a variant decoded {count} images instead of {expected}")
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="PNGs in the folder (rounded up to 10 classes)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        entry = write_folder(Path(scratch) / "folder", args.images)
        paths = list_folder(entry, ALIAS).files()
        check_decoders_agree(paths)
        processes = len(os.sched_getaffinity(0)) if len(paths) >= SERIAL_BELOW else 1
        variants: dict[str, Callable[[], int]] = {
            "load_folder": lambda: convbench_prepare(entry),
            "load_folder, 1 process": lambda: convbench_prepare(entry, processes=1),
            "torchvision serial": lambda: torchvision_serial(entry),
        }
        print(
            f"# {len(paths):,} {SIZE}x{SIZE} grayscale PNGs over {CLASSES} classes, {len(os.sched_getaffinity(0))} cores, "
            f"{args.rounds} rounds\n# load_folder: convbench's listing + Pillow decode in {processes} process(es)\n"
            f"# load_folder, 1 process: the same on one process; torchvision serial: the listing, then a loop of "
            f"torchvision.io.decode_image"
        )
        for call in variants.values():
            images_per_second(call, len(paths))  # warm-up: imports, the page cache
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for index in range(args.rounds):
            order = list(variants) if index % 2 == 0 else list(reversed(variants))
            for name in order:
                rates[name].append(images_per_second(variants[name], len(paths)))
            print(
                f"round {index + 1}: " + ", ".join(f"{name} {rates[name][-1]:,.0f} images/s" for name in variants),
                flush=True,
            )
    width = max(map(len, variants))
    for name, values in rates.items():
        print(
            f"{name:{width}s} median {statistics.median(values):,.0f} images/s "
            f"(rounds {min(values):,.0f}-{max(values):,.0f})"
        )
    ours = statistics.median(rates["load_folder"])
    print(
        f"goal: at least {GOAL:,} images/s for convbench's prepare on 28x28 PNGs: "
        f"{'met' if ours >= GOAL else 'not met'} ({ours:,.0f} images/s)"
    )


if __name__ == "__main__":
    main()
