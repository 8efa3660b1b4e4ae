"""dvc.yaml and pipeline/paths.py name the same files (resolved by DVC itself)."""

from __future__ import annotations

import yaml
from dvc.repo import Repo

from pipeline import paths
from pipeline.code import closure, imported_modules
from pipeline.params import load_params
from tests.helpers import ROOT


def test_dvc_outputs_are_the_paths_the_stages_write() -> None:
    params = load_params(ROOT / "params.yaml")
    name = params.data.name
    expected = {
        "download": {str(paths.raw_dir(params.data.root, name))},
        "prepare": {str(paths.prepared_tensors(name)), str(paths.prepared_manifest(name))},
        "report": {str(paths.report_markdown()), str(paths.report_html()), str(paths.figures_dir())},
        "bench": {str(paths.bench())},
        "tune": {str(paths.TUNED_DIR)},
        "train": {str(paths.MODELS_DIR), str(paths.CURVES_DIR)},
        "evaluate": {str(paths.CELLS_DIR), str(paths.PREDICTIONS_DIR)},
    }
    for model in params.models:  # each cell's files lie in its stage's output folders
        assert paths.tuned_recipe(model).parent == paths.TUNED_DIR
        for seed in params.train.seeds:
            assert {paths.checkpoint(model, seed).parent, paths.curves(model, seed).parent} == {paths.MODELS_DIR, paths.CURVES_DIR}
            assert {paths.metrics(model, seed).parent, paths.predictions(model, seed).parent} == {paths.CELLS_DIR,
                                                                                                  paths.PREDICTIONS_DIR}
    with Repo(str(ROOT)) as repo:
        declared = {stage.addressing: {str(out) for out in stage.outs} for stage in repo.index.stages}
    assert declared == expected


def test_cell_names() -> None:
    assert paths.cell("cnn", 2) == "cnn-s2"
    assert str(paths.metrics("mlp", 0)) == "metrics/cells/mlp-s0.json"


STAGE_MODULES = {"download": "download", "prepare": "prepare", "tune": "tune", "train": "train", "evaluate": "evaluate",
                 "bench": "timing", "probe": "probes", "report": "report"}
LEAVES = {*STAGE_MODULES.values(), "sweep", "cli"}


def test_no_stage_module_imports_another_stage() -> None:
    for stage in LEAVES - {"cli"}:  # cli is the thin layer over every stage
        assert imported_modules(stage) & LEAVES == set(), stage
    shared = {path.stem for path in (ROOT / "pipeline").glob("*.py")} - LEAVES - {"__init__", "__main__"}
    for layer in shared:
        assert imported_modules(layer) & LEAVES == set(), f"shared layer {layer} imports a stage"


def test_every_stage_depends_on_exactly_the_code_it_runs() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(STAGE_MODULES)
    for stage, module in STAGE_MODULES.items():
        declared = {dep for dep in stages[stage]["deps"] if dep.startswith("pipeline/")}
        assert declared == {f"pipeline/{name}.py" for name in closure(module)}, stage
