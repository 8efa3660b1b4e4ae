"""dvc.yaml and pipeline/artifacts/paths.py name the same files (resolved by DVC itself)."""

from __future__ import annotations

import ast

import yaml
from dvc.repo import Repo

from pipeline.artifacts import paths
from pipeline.artifacts.code import dvc_deps, imported_modules, module_path, stage_names
from pipeline.params import load_params
from tests.helpers import ROOT


def test_dvc_outputs_are_the_paths_the_stages_write() -> None:
    params = load_params(ROOT / "params.yaml")
    name = params.data.name
    expected = {
        f"download@{name}": {str(paths.source_dir(name))},  # the list of the raw files, wherever they live
        f"prepare@{name}": {str(paths.prepared_dir(name))},
        f"tune@{name}": {str(paths.tuned_dir(name))},
        f"train@{name}": {str(paths.models_dir(name)), str(paths.curves_dir(name))},
        f"evaluate@{name}": {str(paths.cells_dir(name)), str(paths.predictions_dir(name))},
        f"bench@{name}": {str(paths.bench(name))},
        f"report@{name}": {
            str(paths.report_dir(name)),
            str(paths.summary(name)),
            str(paths.learning_curves_plot(name)),
            str(paths.confusion_plot(name)),
        },
        "overview": {str(paths.overview_markdown()), str(paths.overview_html())},
    }
    for model in params.models:  # each cell's files lie in its stage's output folders
        assert paths.tuned_recipe(name, model).parent == paths.tuned_dir(name)
        for seed in params.train.seeds:
            assert paths.checkpoint(name, model, seed).parent == paths.models_dir(name)
            assert paths.curves(name, model, seed).parent == paths.curves_dir(name)
            assert paths.metrics(name, model, seed).parent == paths.cells_dir(name)
            assert paths.predictions(name, model, seed).parent == paths.predictions_dir(name)
    assert paths.prepared_tensors(name).parent == paths.prepared_manifest(name).parent == paths.prepared_dir(name)
    assert paths.figures_dir(name).parent == paths.report_dir(name)
    with Repo(str(ROOT)) as repo:
        declared = {stage.addressing: {str(out) for out in stage.outs} for stage in repo.index.stages}
        report_deps = {
            str(dep) for stage in repo.index.stages if stage.addressing == f"report@{name}" for dep in stage.deps
        }
    assert declared == expected
    assert str(paths.results_dir(name)) in report_deps, "the report follows every per-cell result of its dataset"


def test_every_path_of_a_dataset_lies_under_its_name() -> None:
    """Switching datasets never touches another dataset's files: every per-dataset path is inside its own folders."""
    for dataset in ("mnist5k", "digits"):
        other = "digits" if dataset == "mnist5k" else "mnist5k"
        made = [
            paths.prepared_tensors(dataset),
            paths.tuned_recipe(dataset, "cnn"),
            paths.study_storage(dataset, "cnn"),
            paths.checkpoint(dataset, "cnn", 0),
            paths.resume_state(dataset, "cnn", 0),
            paths.curves(dataset, "cnn", 0),
            paths.metrics(dataset, "cnn", 0),
            paths.predictions(dataset, "cnn", 0),
            paths.bench(dataset),
            paths.probe(dataset, "permutation"),
            paths.summary(dataset),
            paths.report_html(dataset),
            paths.figures_dir(dataset),
        ]
        assert all(dataset in path.parts and other not in path.parts for path in made)


def test_cell_names() -> None:
    assert paths.cell("cnn", 2) == "cnn-s2"
    assert str(paths.metrics("mnist5k", "mlp", 0)) == "results/mnist5k/cells/mlp-s0.json"


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


def test_every_stage_depends_on_the_code_its_numbers_come_from_and_not_on_plumbing() -> None:
    """dvc.yaml names whole packages (few columns in `dvc exp show`); each must cover the stage's code identity, and
    none may cover what changes no number (MLflow plumbing, messages, the CLI, params parsing)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in stage_names():
        template = stages[stage].get("do", stages[stage])  # foreach stages keep their definition under `do`
        declared = [dep for dep in template["deps"] if dep.startswith("pipeline")]
        for file in dvc_deps(stage):
            assert any(file == dep or file.startswith(dep + "/") for dep in declared), f"{stage}: {file} not covered"
        assert not any(
            dep.startswith(("pipeline/ops", "pipeline/cli", "pipeline/errors", "pipeline/params")) or dep == "pipeline"
            for dep in declared
        ), stage


def test_a_function_level_import_of_a_project_module_says_why() -> None:
    """Imports sit at the top, where the graph above sees them; one inside a function (to keep torch, MLflow, Ray
    or matplotlib out of a light command) carries its reason on its line. cli.py is exempt: each command imports
    its own stage when it runs, which its docstring says once."""
    unexplained = []
    for module in sorted(_package_modules() - {"cli"}):
        path = module_path(module)
        lines = path.read_text().splitlines()
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline"):
                    if not any("#" in line for line in lines[node.lineno - 1 : node.end_lineno]):
                        unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not unexplained, unexplained


def test_a_function_of_more_than_six_parameters_says_why_on_its_def_line() -> None:
    """Past six, parameters travel as one small object (ExecutionPlan, Workers, Runner); where they do not (a Typer
    command's options, a registration's fields), the def line says why."""
    unexplained = []
    for module in sorted(_package_modules()):
        path = module_path(module)
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)]
                if len(names) - (names[:1] in (["self"], ["cls"])) > 6 and "#" not in lines[node.lineno - 1]:
                    unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not unexplained, unexplained
