"""Tiny dataset files in torchvision's exact on-disk formats (IDX, CIFAR python pickles)."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

MNIST_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file: magic (0, 0, 0x08 ubyte, ndim), big-endian dims, data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    return path


def balanced_labels(count: int, classes: int = 10) -> np.ndarray:
    """Labels 0..classes-1 repeated, so any stratified split is possible."""
    return (np.arange(count) % classes).astype(np.uint8)


def make_mnist_family(folder: Path, dataset: str, train: int = 60, test: int = 20, seed: int = 0) -> Path:
    """Write the four uncompressed IDX files under <folder>/<Class>/raw/ as torchvision expects."""
    rng = np.random.default_rng(seed)
    raw = folder / MNIST_FOLDERS[dataset] / "raw"
    for prefix, count in (("train", train), ("t10k", test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", balanced_labels(count))
    return raw


def make_cifar10(folder: Path, per_batch: int = 20, seed: int = 0) -> Path:
    """Write data_batch_1..5, test_batch and batches.meta under <folder>/cifar-10-batches-py/."""
    rng = np.random.default_rng(seed)
    base = folder / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "batch_label": name,
            "data": rng.integers(0, 256, size=(per_batch, 3 * 32 * 32), dtype=np.uint8),
            "labels": balanced_labels(per_batch).astype(int).tolist(),
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        }
        (base / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    (base / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return base
