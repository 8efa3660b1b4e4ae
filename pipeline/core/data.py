"""The data formats on disk: the source list download writes, the prepared splits and their manifest, and the loader.

Nothing here downloads or decodes raw files (that is core/catalog.py), so the code identity of the stages that
train, score and time models holds only what their numbers depend on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from pipeline.errors import DataError

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Images (N, C, ...) and their int64 labels: uint8 as prepared, float once normalised."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Splits:
    """The train, validation and test splits of one dataset."""

    train: Split
    val: Split
    test: Split

    def tensors(self) -> dict[str, torch.Tensor]:
        """The on-disk form: {'train_x': ..., 'train_y': ..., ...}."""
        return {f"{name}_{part}": getattr(getattr(self, name), part) for name in SPLITS for part in "xy"}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> Splits:
        """The inverse of tensors()."""
        return cls(*(Split(tensors[f"{name}_x"], tensors[f"{name}_y"]) for name in SPLITS))


@dataclass(frozen=True)
class PreparedData:
    """The uint8 splits of one dataset plus what training needs to know about them."""

    name: str
    splits: Splits
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sha256: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) or (C, L) of one image."""
        return tuple(self.splits.train.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)


class SourceFile(BaseModel):
    """One raw file as the download stage listed it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    bytes: int
    sha256: str


class SourceManifest(BaseModel):
    """data/raw/<dataset>/source.json: every raw file a dataset reads, where it lives, its size and sha256."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    dataset: str
    source: str
    files: dict[str, SourceFile]


class PreparedManifest(BaseModel):
    """data/prepared/<dataset>/manifest.json: what prepare made, and the sha256 the loader checks the tensors against."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    dataset: str
    classes: list[str]
    input_shape: list[int]
    sizes: dict[str, int]
    class_counts: dict[str, list[int]]
    mean: list[float]
    std: list[float]
    split_seed: int
    official_test_split: bool
    sha256: str


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        array = tensors[key].contiguous().numpy()
        digest.update(f"{key}:{array.dtype}:{list(array.shape)}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def load_prepared(tensors_path: Path, manifest_path: Path) -> PreparedData:
    """Load prepared tensors (weights_only) and refuse them unless their sha256 matches the manifest."""
    import torch

    for path in (tensors_path, manifest_path):
        if not Path(path).is_file():
            raise DataError(f"{path} is missing; run `convbench prepare` (or `dvc repro`) first")
    try:
        manifest = PreparedManifest.model_validate_json(Path(manifest_path).read_text())
        tensors = torch.load(tensors_path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise DataError(
            f"{tensors_path} or {manifest_path} is unreadable ({type(exc).__name__}); run `convbench prepare` again"
        ) from None
    expected = {f"{split}_{part}" for split in SPLITS for part in "xy"}
    if not isinstance(tensors, dict) or set(tensors) != expected or tensors_sha256(tensors) != manifest.sha256:
        raise DataError(
            f"{tensors_path} does not match the sha256 in {manifest_path} (corrupted or edited); "
            f"run `convbench prepare` again"
        )
    return PreparedData(
        name=manifest.dataset,
        splits=Splits.from_tensors(tensors),
        classes=tuple(manifest.classes),
        mean=tuple(manifest.mean),
        std=tuple(manifest.std),
        sha256=manifest.sha256,
    )
