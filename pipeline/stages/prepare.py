"""Prepare stage: a stratified, shuffled, seeded train/val/test split saved once as uint8 tensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.artifacts import atomic
from pipeline.core.data import SPLITS, Split, Splits, check_consistent, check_files, spec, tensors_sha256
from pipeline.errors import DataError
from pipeline.params import DataParams


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

    `fractions` are the val and test shares of `labels`; test may be 0 when an official test split exists.
    """
    from sklearn.model_selection import train_test_split

    val_fraction, test_fraction = fractions
    indices = np.arange(len(labels))
    test = np.array([], dtype=np.int64)
    try:
        if test_fraction > 0:
            indices, test = train_test_split(
                indices, test_size=test_fraction, stratify=labels, random_state=seed, shuffle=True
            )
        train, val = train_test_split(
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
    return np.sort(train), np.sort(val), np.sort(test)


def prepare(params: DataParams, raw_folder: Path, tensors_path: Path, manifest_path: Path) -> PrepareResult:
    """Split the raw dataset, save uint8 tensors and a JSON manifest (both written atomically)."""
    check_files(params.name, raw_folder, params.verify_checksums)
    raw = spec(params.name).load(raw_folder)
    check_consistent(raw, params.name, raw_folder)
    if raw.test_images is not None and raw.test_labels is not None:
        train_idx, val_idx, _ = stratified_split(raw.labels, (params.val_fraction, 0.0), params.split_seed)
        splits = {
            "train": (raw.images[train_idx], raw.labels[train_idx]),
            "val": (raw.images[val_idx], raw.labels[val_idx]),
            "test": (raw.test_images, raw.test_labels),
        }
    else:
        fractions = (params.val_fraction, params.test_fraction)
        train_idx, val_idx, test_idx = stratified_split(raw.labels, fractions, params.split_seed)
        splits = {name: (raw.images[idx], raw.labels[idx]) for name, idx in zip(SPLITS, (train_idx, val_idx, test_idx))}
    prepared = Splits(
        *(
            Split(
                torch.from_numpy(np.ascontiguousarray(splits[name][0], dtype=np.uint8)),
                torch.from_numpy(np.ascontiguousarray(splits[name][1], dtype=np.int64)),
            )
            for name in SPLITS
        )
    )
    tensors = prepared.tensors()
    train_pixels = prepared.train.x.double() / 255.0
    reduce_dims = [0, *range(2, train_pixels.dim())]
    mean = train_pixels.mean(dim=reduce_dims).tolist()
    std = train_pixels.std(dim=reduce_dims).clamp_min(1e-6).tolist()
    digest = tensors_sha256(tensors)
    atomic.write_with(tensors_path, lambda tmp: torch.save(tensors, tmp))
    manifest = {
        "dataset": params.name,
        "classes": list(raw.classes),
        "input_shape": list(prepared.train.x.shape[1:]),
        "sizes": {name: len(getattr(prepared, name)) for name in SPLITS},
        "class_counts": {
            name: np.bincount(getattr(prepared, name).y.numpy(), minlength=len(raw.classes)).tolist() for name in SPLITS
        },
        "mean": mean,
        "std": std,
        "split_seed": params.split_seed,
        "official_test_split": raw.test_images is not None,
        "sha256": digest,
    }
    atomic.write_json(manifest_path, manifest)
    return PrepareResult(tensors_path, manifest_path, manifest["sizes"], digest)
