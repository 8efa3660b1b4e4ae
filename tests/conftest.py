"""Fixtures that build real, small workspaces: real data files, real training, real MLflow stores."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import paths
from pipeline.params import Params, validate_params
from tests.helpers import params_with


@dataclass(frozen=True)
class Workspace:
    """A project folder where the real stages have run on `digits` (2 models x 2 seeds, 3 epochs, permutation probe)."""

    root: Path
    params: Params
    tracking_uri: str


def tiny_params(root: Path, **overrides: object) -> Params:
    """Validated params for fast runs: digits, 3 epochs, 2 seeds, short timings, a store under `root`."""
    values = {
        "data.name": "digits",
        "data.root": str(root / "data" / "raw"),
        "train.epochs": 3,
        "train.seeds": [0, 1],
        "train.device": "cpu",
        "evaluate.min_run_time": 0.05,
        "tracking.uri": f"sqlite:///{root / 'mlflow.db'}",
        "probes.run": ["permutation"],
    }
    values.update(overrides)
    return validate_params(params_with(values))


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Run download, prepare, train, evaluate and report in-process on digits, once per session."""
    from pipeline.download import download
    from pipeline.evaluate import evaluate_cell
    from pipeline.prepare import load_prepared, prepare
    from pipeline.probes import run_probe
    from pipeline.report import report
    from pipeline.train import train_cell

    root = tmp_path_factory.mktemp("workspace")
    params = tiny_params(root)
    with contextlib.chdir(root):
        name = params.data.name
        download(params.data, paths.raw_dir(params.data.root, name))
        prepare(params.data, paths.raw_dir(params.data.root, name), paths.prepared_tensors(name), paths.prepared_manifest(name))
        prepared = load_prepared(paths.prepared_tensors(name), paths.prepared_manifest(name))
        for model in ("cnn", "mlp"):
            for seed in params.train.seeds:
                train_cell(params, model, seed, prepared, paths.checkpoint(model, seed), paths.curves(model, seed))
                evaluate_cell(params, model, seed, prepared, paths.checkpoint(model, seed), paths.metrics(model, seed))
        for probe in params.probes.run:
            run_probe(params, probe, prepared, paths.probe(probe))
        report(params, paths.report_markdown(), paths.figures_dir())
    return Workspace(root=root, params=params, tracking_uri=params.tracking.uri or "")
