"""dvc.yaml and pipeline/paths.py name the same files (resolved by DVC itself)."""

from __future__ import annotations

from dvc.repo import Repo

from pipeline import paths
from pipeline.params import load_params
from tests.helpers import ROOT


def test_dvc_outputs_are_the_paths_the_stages_write() -> None:
    params = load_params(ROOT / "params.yaml")
    name = params.data.name
    expected = {
        "download": {str(paths.raw_dir(params.data.root, name))},
        "prepare": {str(paths.prepared_tensors(name)), str(paths.prepared_manifest(name))},
        "report": {str(paths.report_markdown()), str(paths.report_html()), str(paths.figures_dir())},
    }
    for model in ("cnn", "mlp"):
        for seed in params.train.seeds:
            expected[f"train@{model}-{seed}"] = {str(paths.checkpoint(model, seed)), str(paths.curves(model, seed))}
            expected[f"evaluate@{model}-{seed}"] = {str(paths.metrics(model, seed)), str(paths.predictions(model, seed))}
    with Repo(str(ROOT)) as repo:
        declared = {stage.addressing: {str(out) for out in stage.outs} for stage in repo.index.stages}
    assert declared == expected


def test_cell_names() -> None:
    assert paths.cell("cnn", 2) == "cnn-s2"
    assert str(paths.metrics("mlp", 0)) == "metrics/mlp-s0.json"
