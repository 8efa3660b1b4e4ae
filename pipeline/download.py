"""Download stage: put a dataset's raw files under <root>/<name>/, touching the network only if needed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.data import check_files, spec
from pipeline.params import DataParams


@dataclass(frozen=True)
class DownloadResult:
    """Where the dataset's files are and whether this call had to fetch them."""

    dataset: str
    folder: Path
    fetched: bool
    offline: bool


def download(params: DataParams, folder: Path) -> DownloadResult:
    """Fetch `params.name` into `folder`; torchvision sets only if files are missing or fail checksums.

    Embedded sets are always rewritten: it is cheap, and a change to their conversion code then shows.
    """
    dataset = spec(params.name)
    if not dataset.embedded and not dataset.missing(folder, params.verify_checksums):
        return DownloadResult(params.name, folder, fetched=False, offline=False)
    dataset.fetch(folder, params.verify_checksums)
    check_files(params.name, folder, params.verify_checksums)
    return DownloadResult(params.name, folder, fetched=True, offline=dataset.embedded)
