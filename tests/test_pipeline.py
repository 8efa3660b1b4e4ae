"""End to end: real `dvc repro` on a temporary copy of the project with tiny params."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline import paths
from tests.helpers import ROOT, run, write_params

PROJECT_FILES = ("dvc.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore", ".gitignore")


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def set_param(project: Path, dotted: str, value: object) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    *parents, last = dotted.split(".")
    node = params
    for key in parents:
        node = node[key]
    node[last] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def repro(project: Path) -> str:
    result = run(["dvc", "repro"], project, MLFLOW_TRACKING_URI="")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("project")
    for name in PROJECT_FILES:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target / name)
    shutil.copytree(ROOT / "pipeline", target / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    write_params(target / "params.yaml", {"train.epochs": 1, "train.seeds": [0], "evaluate.min_run_time": 0.05})
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        assert run(args, target).returncode == 0
    return target


def test_first_repro_runs_every_stage_and_writes_every_output(project: Path) -> None:
    output = repro(project)
    assert ran_stages(output) == {
        "download", "prepare", "train@cnn-0", "train@mlp-0", "evaluate@cnn-0", "evaluate@mlp-0", "report"
    }
    for path in (paths.checkpoint("cnn", 0), paths.curves("mlp", 0), paths.metrics("cnn", 0),
                 paths.prepared_tensors("mnist5k"), paths.report_markdown(), paths.figures_dir() / "learning_curves.png"):
        assert (project / path).is_file(), path
    metrics = json.loads((project / paths.metrics("cnn", 0)).read_text())
    assert {"test_accuracy", "params"} <= set(metrics)
    assert metrics["test_accuracy"] > 0.8, "one epoch of the textbook CNN on mnist5k already beats 80%"


def test_second_repro_runs_nothing(project: Path) -> None:
    output = repro(project)
    assert ran_stages(output) == set()
    assert "Data and pipelines are up to date." in output


def test_metrics_and_plots_commands_work(project: Path) -> None:
    shown = run(["dvc", "metrics", "show", "--json"], project)
    assert shown.returncode == 0, shown.stderr
    assert "test_accuracy" in shown.stdout
    plots = run(["dvc", "plots", "show", "-o", "dvc_plots"], project)
    assert plots.returncode == 0, plots.stderr
    assert (project / "dvc_plots" / "index.html").is_file()


def test_changing_epochs_reruns_train_evaluate_report_only(project: Path) -> None:
    set_param(project, "train.epochs", 2)
    assert ran_stages(repro(project)) == {"train@cnn-0", "train@mlp-0", "evaluate@cnn-0", "evaluate@mlp-0", "report"}


def test_runs_are_in_the_default_store_with_histories(project: Path) -> None:
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("convbench-mnist5k")
    runs = client.search_runs([experiment.experiment_id], "tags.`convbench.kind` = 'train'")
    assert sorted(r.info.run_name for r in runs) == ["cnn-s0", "cnn-s0", "mlp-s0", "mlp-s0"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    steps = sorted(len(client.get_metric_history(r.info.run_id, "val_accuracy")) for r in runs)
    assert steps == [1, 1, 2, 2]


def test_changing_dataset_reruns_everything_from_download(project: Path) -> None:
    set_param(project, "data.name", "digits")
    assert ran_stages(repro(project)) == {
        "download", "prepare", "train@cnn-0", "train@mlp-0", "evaluate@cnn-0", "evaluate@mlp-0", "report"
    }
    assert "`digits`" in (project / paths.report_markdown()).read_text()
