"""Download stage: put a dataset's raw files under <root>/<name>/, touching the network only if needed.

A torchvision set may instead be read in place from <root> itself, laid out as torchvision writes it
(<root>/MNIST/raw/..., <root>/cifar-10-batches-py/...). Nothing is copied then: <root>/<name>/, the stage's DVC
output, only gets a small manifest of those files (data.IN_PLACE_MANIFEST, with their sha256), so DVC has an
output to cache and to hash for prepare. DVC 3 refuses outputs outside the project, so under `dvc repro`
data.root must be a folder inside it (in either layout); `convbench download`/`run`/`sweep` take any folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.core.data import check_files, record_in_place, spec, torchvision_root
from pipeline.params import DataParams


@dataclass(frozen=True)
class DownloadResult:
    """Where the dataset's files are and whether this call had to fetch them."""

    dataset: str
    folder: Path
    fetched: bool


def download(params: DataParams, folder: Path) -> DownloadResult:
    """Fetch `params.name` into `folder`; torchvision sets only if files are missing or fail checksums.

    Embedded sets are always rewritten: it is cheap, and a change to their conversion code then shows.
    `folder` in the result is where the files are: the torchvision root when they are read in place.
    """
    dataset = spec(params.name)
    if dataset.embedded:
        dataset.fetch(folder, params.verify_checksums)
        check_files(params.name, folder, params.verify_checksums)
        return DownloadResult(params.name, folder, fetched=True)
    fetched = bool(dataset.missing(folder, params.verify_checksums))
    if fetched:
        dataset.fetch(folder, params.verify_checksums)
        check_files(params.name, folder, params.verify_checksums)
    record_in_place(params.name, folder)
    return DownloadResult(params.name, torchvision_root(params.name, folder), fetched=fetched)
