"""Prepare stage: a stratified, shuffled, seeded train/val/test split saved once as uint8 tensors."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline import atomic
from pipeline.data import check_files, spec
from pipeline.errors import DataError
from pipeline.params import DataParams

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PreparedData:
    """The split tensors of one dataset plus what training needs to know about them."""

    name: str
    tensors: dict[str, torch.Tensor]
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sha256: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one image."""
        return tuple(self.tensors["train_x"].shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)


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


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        array = tensors[key].contiguous().numpy()
        digest.update(f"{key}:{array.dtype}:{list(array.shape)}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def prepare(params: DataParams, raw_folder: Path, tensors_path: Path, manifest_path: Path) -> PrepareResult:
    """Split the raw dataset, save uint8 tensors and a JSON manifest (both written atomically)."""
    check_files(params.name, raw_folder, params.verify_checksums)
    raw = spec(params.name).load(raw_folder)
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
    tensors: dict[str, torch.Tensor] = {}
    for name, (images, labels) in splits.items():
        tensors[f"{name}_x"] = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
        tensors[f"{name}_y"] = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    train_pixels = tensors["train_x"].double() / 255.0
    reduce_dims = [0, *range(2, train_pixels.dim())]
    mean = train_pixels.mean(dim=reduce_dims).tolist()
    std = train_pixels.std(dim=reduce_dims).clamp_min(1e-6).tolist()
    digest = tensors_sha256(tensors)
    atomic.write_with(tensors_path, lambda tmp: torch.save(tensors, tmp))
    manifest = {
        "dataset": params.name,
        "classes": list(raw.classes),
        "input_shape": list(tensors["train_x"].shape[1:]),
        "sizes": {name: int(tensors[f"{name}_y"].numel()) for name in SPLITS},
        "class_counts": {name: np.bincount(tensors[f"{name}_y"].numpy(), minlength=len(raw.classes)).tolist() for name in SPLITS},
        "mean": mean,
        "std": std,
        "split_seed": params.split_seed,
        "official_test_split": raw.test_images is not None,
        "sha256": digest,
    }
    atomic.write_json(manifest_path, manifest)
    return PrepareResult(tensors_path, manifest_path, manifest["sizes"], digest)


def load_prepared(tensors_path: Path, manifest_path: Path) -> PreparedData:
    """Load prepared tensors (weights_only) and refuse them unless their sha256 matches the manifest."""
    for path in (tensors_path, manifest_path):
        if not Path(path).is_file():
            raise DataError(f"{path} is missing; run `convbench prepare` (or `dvc repro`) first")
    try:
        manifest = json.loads(Path(manifest_path).read_text())
        tensors = torch.load(tensors_path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise DataError(
            f"{tensors_path} or {manifest_path} is unreadable ({type(exc).__name__}); run `convbench prepare` again"
        ) from None
    expected = {f"{split}_{part}" for split in SPLITS for part in "xy"}
    if not isinstance(tensors, dict) or set(tensors) != expected or tensors_sha256(tensors) != manifest.get("sha256"):
        raise DataError(
            f"{tensors_path} does not match the sha256 in {manifest_path} (corrupted or edited); "
            f"run `convbench prepare` again"
        )
    return PreparedData(
        name=manifest["dataset"],
        tensors=tensors,
        classes=tuple(manifest["classes"]),
        mean=tuple(manifest["mean"]),
        std=tuple(manifest["std"]),
        sha256=manifest["sha256"],
    )
