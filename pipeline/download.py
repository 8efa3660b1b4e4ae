"""Download stage: put a dataset's raw files under <root>/<name>/, touching the network only if needed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.data import OFFLINE_DATASETS, check_files, spec
from pipeline.params import DataParams


@dataclass(frozen=True)
class DownloadResult:
    """Where the dataset's files are and whether this call had to fetch them."""

    dataset: str
    folder: Path
    fetched: bool
    offline: bool


def download(params: DataParams, folder: Path) -> DownloadResult:
    """Fetch `params.name` into `folder` unless all its files are already there (and pass checksums)."""
    dataset = spec(params.name)
    if not dataset.missing(folder, params.verify_checksums):
        return DownloadResult(params.name, folder, fetched=False, offline=params.name in OFFLINE_DATASETS)
    dataset.fetch(folder, params.verify_checksums)
    check_files(params.name, folder, params.verify_checksums)
    return DownloadResult(params.name, folder, fetched=True, offline=params.name in OFFLINE_DATASETS)
