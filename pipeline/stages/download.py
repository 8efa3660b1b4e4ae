"""Download stage: make the dataset's raw files available, then list them in the stage's DVC output.

Built-in sets go to <data.root>/<name>/ (torchvision's layout for torchvision sets, touching the network only when
files are missing). A torchvision set may instead be read in place from <data.root> itself, as torchvision writes
it (<root>/MNIST/raw/...), and a user's own dataset (`dataset.<name>`) is read where its path says. Nothing is
copied: the stage's DVC output, data/raw/<name>/ inside the project, gets `source.json`, every raw file with its
size and sha256. dvc.yaml marks the stage always changed, so each `dvc repro` lists the files again and prepare
re-runs exactly when one was edited, added or removed, wherever they live (outside the project included).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.artifacts import atomic, paths
from pipeline.core.catalog import check_files, source_manifest
from pipeline.core.sources import dataset_spec
from pipeline.params import Params


@dataclass(frozen=True)
class DownloadResult:
    """Where the dataset's files are, how many, and whether this call had to fetch them."""

    dataset: str
    folder: Path
    files: int
    fetched: bool


def download(params: Params) -> DownloadResult:
    """Fetch data.name into data.root/<name>/ where needed, and write the list of its files into data/raw/<name>/.

    Embedded sets are always rewritten (cheap, byte for byte the same unless their conversion code changed);
    torchvision sets only if files are missing or fail checksums; a user's dataset is only checked and listed.
    """
    name, verify = params.data.name, params.data.verify_checksums
    folder = paths.raw_dir(paths.expand_user(params.data.root, "data.root"), name)
    dataset = dataset_spec(params)
    fetched = dataset.embedded or bool(dataset.missing(folder, verify))
    if fetched:
        dataset.fetch(folder, verify)
    check_files(name, dataset, folder, verify)
    manifest = source_manifest(name, dataset, folder)
    atomic.write_json(paths.source_manifest(name), manifest.model_dump())
    return DownloadResult(name, dataset.source(folder), len(manifest.files), fetched=fetched)
