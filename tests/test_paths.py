"""dvc.yaml and pipeline/artifacts/paths.py name the same files (resolved by DVC itself)."""

from __future__ import annotations

import yaml
from dvc.repo import Repo

from pipeline.artifacts import paths
from pipeline.artifacts.code import dvc_deps, imported_modules, stage_names
from pipeline.params import load_params
from tests.helpers import ROOT


def test_dvc_outputs_are_the_paths_the_stages_write() -> None:
    params = load_params(ROOT / "params.yaml")
    name = params.data.name
    expected = {
        "download": {str(paths.source_dir(name))},  # the list of the raw files, wherever they live
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
            assert {paths.checkpoint(model, seed).parent, paths.curves(model, seed).parent} == {
                paths.MODELS_DIR,
                paths.CURVES_DIR,
            }
            assert {paths.metrics(model, seed).parent, paths.predictions(model, seed).parent} == {
                paths.CELLS_DIR,
                paths.PREDICTIONS_DIR,
            }
    with Repo(str(ROOT)) as repo:
        declared = {stage.addressing: {str(out) for out in stage.outs} for stage in repo.index.stages}
    assert declared == expected


def test_cell_names() -> None:
    assert paths.cell("cnn", 2) == "cnn-s2"
    assert str(paths.metrics("mlp", 0)) == "metrics/cells/mlp-s0.json"


def test_every_dvc_stage_is_one_module_in_pipeline_stages() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(stage_names())


def _package_modules() -> set[str]:
    pipeline = ROOT / "pipeline"
    return {
        ".".join(path.relative_to(pipeline).with_suffix("").parts)
        for path in pipeline.rglob("*.py")
        if path.name != "__init__.py"
    }


def test_no_stage_module_imports_another_stage_and_no_shared_layer_imports_a_stage() -> None:
    leaves = {f"stages.{name}" for name in stage_names()} | {"cli", "__main__"}
    for module in _package_modules() - {"cli", "__main__"}:  # cli is the thin layer over every stage
        assert not imported_modules(module) & leaves, module


def test_there_is_no_import_cycle_in_the_package() -> None:
    graph = {module: imported_modules(module) for module in _package_modules()}
    state: dict[str, str] = {}

    def visit(module: str, trail: tuple[str, ...]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            assert state.get(target) != "open", " -> ".join((*trail, module, target))
            if target not in state:
                visit(target, (*trail, module))
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, ())


def test_every_stage_depends_on_exactly_the_code_its_numbers_come_from() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in stage_names():
        declared = sorted(dep for dep in stages[stage]["deps"] if dep.startswith("pipeline/"))
        assert declared == dvc_deps(stage), f"{stage}: dvc.yaml deps should be {dvc_deps(stage)}"
        assert not any(
            dep.startswith(("pipeline/ops/", "pipeline/cli", "pipeline/errors", "pipeline/params")) for dep in declared
        ), stage
