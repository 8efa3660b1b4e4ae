"""Prepare stage: a stratified, shuffled, seeded train/val/test split saved once as uint8 tensors.

A split the dataset brings itself (an official test set, a user's val/ or test/ folder) is kept as it is; the
others are held out of the training images by data.val_fraction and data.test_fraction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.artifacts import atomic, paths
from pipeline.core.catalog import RawData, check_consistent, check_files
from pipeline.core.data import SPLITS, PreparedManifest, Split, Splits, tensors_sha256
from pipeline.core.sources import dataset_spec, declared_paths, expanded
from pipeline.errors import DataError
from pipeline.params import Params


@dataclass(frozen=True)
class PrepareResult:
    """What the prepare stage wrote."""

    tensors_path: Path
    manifest_path: Path
    sizes: dict[str, int]
    sha256: str


def stratified_split(
    labels: np.ndarray, fractions: tuple[float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of (train, val, test), each stratified by label and shuffled with `seed`.

    `fractions` are the val and test shares of `labels`; either may be 0 when the dataset brings that split.
    """
    from sklearn.model_selection import train_test_split

    val_fraction, test_fraction = fractions
    indices = np.arange(len(labels))
    val = test = np.array([], dtype=np.int64)
    try:
        if test_fraction > 0:
            indices, test = train_test_split(
                indices, test_size=test_fraction, stratify=labels, random_state=seed, shuffle=True
            )
        if val_fraction > 0:
            indices, val = train_test_split(
                indices,
                test_size=val_fraction / (1.0 - test_fraction),
                stratify=labels[indices],
                random_state=seed + 1,
                shuffle=True,
            )
    except ValueError as exc:
        raise DataError(
            f"cannot split {len(labels)} images stratified into val {val_fraction} / test {test_fraction} ({exc}); "
            f"use a larger dataset or larger data.val_fraction / data.test_fraction"
        ) from None
    return np.sort(indices), np.sort(val), np.sort(test)


def split(raw: RawData, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """The dataset's own val and test splits where it has them; the rest held out of its training images."""
    given = {"val": (raw.val_images, raw.val_labels), "test": (raw.test_images, raw.test_labels)}
    fractions = (
        0.0 if raw.val_images is not None else val_fraction,
        0.0 if raw.test_images is not None else test_fraction,
    )
    indices = dict(zip(SPLITS, stratified_split(raw.labels, fractions, seed)))
    parts = {
        name: (raw.images[indices[name]], raw.labels[indices[name]])
        if name == "train" or given[name][0] is None
        else given[name]
        for name in SPLITS
    }
    return Splits(
        *(
            Split(
                torch.from_numpy(np.ascontiguousarray(parts[name][0], dtype=np.uint8)),
                torch.from_numpy(np.ascontiguousarray(parts[name][1], dtype=np.int64)),
            )
            for name in SPLITS
        )
    )


def channel_statistics(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and (unbiased) std of uint8 images in 0..1, from exact integer sums over each channel's
    histogram of the 256 pixel values: exact, one pass, and the memory of one channel's uint8 pixels."""
    values = torch.arange(256, dtype=torch.int64)
    counts = [torch.bincount(images[:, c].flatten(), minlength=256) for c in range(images.shape[1])]
    total = [int((values * count).sum()) for count in counts]
    squares = [int((values * values * count).sum()) for count in counts]
    n = images.numel() // images.shape[1]
    mean = [t / (255 * n) for t in total]
    variance = [(q * n - t * t) / (n * (n - 1)) / 255**2 for t, q in zip(total, squares)]
    return mean, [max(v**0.5, 1e-6) for v in variance]


def prepare(params: Params) -> PrepareResult:
    """Split the raw dataset, save uint8 tensors and a JSON manifest (both written atomically)."""
    data, name = params.data, params.data.name
    folder = paths.raw_dir(paths.expand_user(data.root, "data.root"), name)
    dataset = dataset_spec(params)
    check_files(name, dataset, folder, data.verify_checksums)
    raw = dataset.load(folder)
    declared = expanded(params.dataset[name], name) if name in params.dataset else None
    fix = None if declared is None else f"fix the labels in {' or '.join(map(str, declared_paths(declared)))}"
    check_consistent(raw, name, folder, fix)
    prepared = split(raw, data.val_fraction, data.test_fraction, data.split_seed)
    for part in SPLITS:
        if len(getattr(prepared, part)) == 0:
            raise DataError(f"{name}: the {part} split is empty; add images to it")
    tensors = prepared.tensors()
    mean, std = channel_statistics(prepared.train.x)
    digest = tensors_sha256(tensors)
    tensors_path, manifest_path = paths.prepared_tensors(name), paths.prepared_manifest(name)
    atomic.write_torch(tensors_path, tensors)
    sizes = {part: len(getattr(prepared, part)) for part in SPLITS}
    manifest = PreparedManifest(
        dataset=name,
        classes=list(raw.classes),
        input_shape=list(prepared.train.x.shape[1:]),
        sizes=sizes,
        class_counts={
            part: np.bincount(getattr(prepared, part).y.numpy(), minlength=len(raw.classes)).tolist() for part in SPLITS
        },
        mean=mean,
        std=std,
        split_seed=data.split_seed,
        official_test_split=raw.test_images is not None,
        sha256=digest,
    )
    atomic.write_json(manifest_path, manifest.model_dump())
    return PrepareResult(tensors_path, manifest_path, sizes, digest)
