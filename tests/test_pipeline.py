"""End to end: real `dvc repro`, experiments and a DVC remote on a temporary copy of the project.

One test walks the lifecycle in order (first run, no-op run, param edits), because each step's
expectation is defined by the state the previous step left.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.artifacts import paths
from tests.helpers import copy_project, run, write_params

EVERY_STAGE = {"download", "prepare", "tune", "train", "evaluate", "bench", "report"}


UNCHANGED = {"download"}  # always run: it lists the raw files again, and nothing after it runs when they are the same
ALWAYS_CHANGED = {"download": ["always changed"]}  # what `dvc status --json` says of an up-to-date workspace


def repro(project: Path) -> set[str]:
    """Run `dvc repro` with the default MLflow store; return the names of the stages it ran."""
    result = run(["dvc", "repro"], project, MLFLOW_TRACKING_URI="")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return set(re.findall(r"Running stage '([^']+)'", result.stdout))


def status(project: Path, **extra_env: str) -> dict:
    """`dvc status --json`: the stages whose outputs are not current."""
    return json.loads(run(["dvc", "status", "--json"], project, **extra_env).stdout)


def test_dvc_repro_lifecycle(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")

    assert repro(project) == EVERY_STAGE, "a fresh project runs every stage"
    for path in (
        paths.checkpoint("cnn", 0),
        paths.curves("mlp", 0),
        paths.metrics("cnn", 0),
        paths.prepared_tensors("mnist5k"),
        paths.report_markdown(),
        paths.figures_dir() / "learning_curves.png",
    ):
        assert (project / path).is_file(), path
    assert "tuned: false" in (project / paths.tuned_recipe("cnn")).read_text(), "tune.trials 0: a note, no tuning"
    metrics = json.loads((project / paths.metrics("cnn", 0)).read_text())
    assert {"test_accuracy", "params"} <= set(metrics)
    assert metrics["test_accuracy"] > 0.8, "one epoch of the textbook CNN on mnist5k already beats 80%"

    assert repro(project) == UNCHANGED, "an unchanged project re-runs nothing after listing its files"

    shown = run(["dvc", "metrics", "show", "--json"], project)
    assert shown.returncode == 0 and "test_accuracy" in shown.stdout, shown.stderr
    plots = run(["dvc", "plots", "show", "-o", "dvc_plots"], project)
    page = (project / "dvc_plots" / "index.html").read_text()
    assert plots.returncode == 0, plots.stderr
    assert "metrics/curves/cnn-s0.csv" in page and "metrics/predictions/cnn-s0.csv" in page, (
        "curves and confusion plots"
    )
    assert '"rect"' in page, "the confusion template draws a heat map of rects"

    commit = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline results"]
    assert run(["git", "add", "-A"], project).returncode == 0 and run(commit, project).returncode == 0
    experiment = run(["dvc", "exp", "run", "-n", "two-epochs", "-S", "train.epochs=2"], project, MLFLOW_TRACKING_URI="")
    assert experiment.returncode == 0, experiment.stdout[-3000:] + experiment.stderr[-3000:]
    ran = set(re.findall(r"Running stage '([^']+)'", experiment.stdout))
    assert ran == EVERY_STAGE - {"prepare"}, "epochs touch train, evaluate, report only (and download lists files)"
    table = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    revs = [rev for row in table for group in row.get("experiments") or [] for rev in group["revs"]]
    (shown_experiment,) = [rev for rev in revs if rev["name"] == "two-epochs"]
    headline = shown_experiment["data"]["metrics"]["metrics/cells/cnn-s0.json"]["data"]
    assert headline["epochs"] == 2 and 0 < headline["test_accuracy"] <= 1, "dvc exp show lists the headline metrics"
    diff = run(["dvc", "metrics", "diff", "HEAD", "two-epochs", "--json"], project)
    assert diff.returncode == 0, diff.stderr
    changed = json.loads(diff.stdout)["metrics/cells/cnn-s0.json"]
    assert "test_accuracy" in changed and changed["epochs"] == {"old": 1, "new": 2, "diff": 1}

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("convbench-mnist5k").experiment_id
    runs = client.search_runs([experiment_id], "tags.`convbench.kind` = 'train'")
    assert sorted(r.info.run_name for r in runs) == ["cnn-s0", "cnn-s0", "mlp-s0", "mlp-s0"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(len(client.get_metric_history(r.info.run_id, "val_accuracy")) for r in runs) == [1, 1, 2, 2]

    write_params(project / "params.yaml", {"data.name": "digits"}, edit_existing=True)
    assert set(status(project)) == EVERY_STAGE, "a new dataset invalidates download and everything after it"
    write_params(project / "params.yaml", {"data.name": "mnist5k"}, edit_existing=True)
    assert repro(project) == UNCHANGED, "back on mnist5k, the workspace holds the two-epochs results"

    remote, clone = tmp_path / "remote", tmp_path / "clone"
    assert run(["dvc", "remote", "add", "-d", "shared", str(remote)], project).returncode == 0
    assert run(["git", "add", "-A"], project).returncode == 0
    assert (
        run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results + remote"], project
        ).returncode
        == 0
    )
    pushed = run(["dvc", "push"], project)
    assert pushed.returncode == 0, pushed.stderr
    assert run(["git", "clone", "-q", str(project), str(clone)], tmp_path).returncode == 0
    pulled = run(["dvc", "pull"], clone)
    assert pulled.returncode == 0, pulled.stderr
    assert status(clone) == ALWAYS_CHANGED
    assert (clone / paths.checkpoint("cnn", 0)).is_file() and (clone / paths.report_html()).is_file()
    assert repro(clone) == UNCHANGED, "a teammate's dvc pull && dvc repro re-runs nothing"


ZOO = '''
import torch
from torch import nn
from torch.nn import functional as F


class Net(nn.Module):
    """A user's own model the way PyTorch users write one (pytorch/examples' mnist Net, made small)."""

    def __init__(self, input_shape, num_classes, channels):
        super().__init__()
        in_channels, height, width = input_shape
        self.features = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.BatchNorm2d(channels))
        self.dropout = nn.Dropout(0.25)
        self.fc = nn.Linear(channels * (height // 2) * (width // 2), num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.features(x)), 2)
        return self.fc(torch.flatten(self.dropout(x), 1))


def small_convnet(input_shape, num_classes, channels=4):
    return Net(input_shape, num_classes, channels)
'''


def net_params(channels: int) -> int:
    """Net's parameter count on digits (8x8, 10 classes): conv 3x3, BatchNorm's scale and shift, the linear head."""
    return (channels * 9 + channels) + 2 * channels + (channels * 4 * 4 * 10 + 10)


def test_a_model_from_the_users_own_module_flows_through_dvc_repro(tmp_path: Path) -> None:
    """A third model from a module outside convbench (an nn.Module subclass with its own forward, BatchNorm and
    Dropout; no edits to convbench) reaches metrics, report and MLflow; the cache follows what the numbers depend on."""
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "my_zoo.py").write_text(ZOO)
    project = copy_project(
        tmp_path / "project",
        **{
            "data.name": "digits",
            "models": ["cnn", "mlp", "mine"],
            "model.mine": {"builder": "my_zoo:small_convnet", "channels": 6},
        },
    )
    result = run(["dvc", "repro"], project, MLFLOW_TRACKING_URI="", PYTHONPATH=str(zoo))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert cells_run(result.stdout) == ({"cnn-s0", "mine-s0", "mlp-s0"}, {"cnn-s0", "mine-s0", "mlp-s0"})
    metrics = json.loads((project / paths.metrics("mine", 0)).read_text())
    assert metrics["arch"] == "builder" and metrics["params"] == net_params(6)
    report = (project / paths.report_markdown()).read_text()
    assert "convbench: CNN vs MLP vs mine on `digits`" in report
    accuracy_row = next(line for line in report.splitlines() if line.startswith("| mine "))
    assert f"{metrics['test_accuracy']:.4f}" in accuracy_row
    assert "**mine** (`builder`, 1,042 parameters)" in report, "the architecture table reads the user's module"
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("convbench-digits").experiment_id
    (comparison,) = client.search_runs([experiment_id], "tags.`convbench.kind` = 'comparison'")
    children = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{comparison.info.run_id}'")
    assert sorted((r.info.run_name, r.info.status) for r in children) == [
        ("cnn-s0", "FINISHED"),
        ("mine-s0", "FINISHED"),
        ("mlp-s0", "FINISHED"),
    ]
    assert comparison.data.metrics["mine_accuracy_mean"] == pytest.approx(metrics["test_accuracy"])
    (mine,) = [r for r in children if r.info.run_name == "mine-s0"]
    logged = {Path(a.path).name for a in client.list_artifacts(mine.info.run_id, "evaluation")}
    assert {"filters.png", "confusion_matrix.png"} <= logged, "the first conv, nested in features, draws its filters"
    first = {cell: (project / paths.checkpoint(*cell)).read_bytes() for cell in (("cnn", 0), ("mine", 0), ("mlp", 0))}

    write_params(project / "params.yaml", {"train.seeds": [0, 1]}, edit_existing=True)
    more = run(["dvc", "repro"], project, MLFLOW_TRACKING_URI="", PYTHONPATH=str(zoo))
    assert more.returncode == 0, more.stdout[-3000:] + more.stderr[-3000:]
    assert set(re.findall(r"Running stage '([^']+)'", more.stdout)) == {
        "download",
        "train",
        "evaluate",
        "bench",
        "report",
    }
    assert cells_run(more.stdout) == ({"cnn-s1", "mine-s1", "mlp-s1"}, {"cnn-s1", "mine-s1", "mlp-s1"}), (
        "adding a seed trains and evaluates only the new cells"
    )
    assert all((project / paths.checkpoint(*cell)).read_bytes() == data for cell, data in first.items())
    runs = client.search_runs([experiment_id], "tags.`convbench.kind` = 'train'")
    assert sorted(r.info.run_name for r in runs) == ["cnn-s0", "cnn-s1", "mine-s0", "mine-s1", "mlp-s0", "mlp-s1"]

    write_params(project / "params.yaml", {"model.mine.channels": 4}, edit_existing=True)
    changed = run(["dvc", "repro"], project, MLFLOW_TRACKING_URI="", PYTHONPATH=str(zoo))
    assert changed.returncode == 0, changed.stdout[-3000:] + changed.stderr[-3000:]
    assert cells_run(changed.stdout) == ({"mine-s0", "mine-s1"}, {"mine-s0", "mine-s1"}), (
        "changing one model's settings retrains and re-scores only that model"
    )
    assert json.loads((project / paths.metrics("mine", 0)).read_text())["params"] == net_params(4)

    write_params(project / "params.yaml", {"train.seeds": [1]}, edit_existing=True)
    fewer = run(["dvc", "repro"], project, MLFLOW_TRACKING_URI="", PYTHONPATH=str(zoo))
    assert fewer.returncode == 0, fewer.stdout[-3000:] + fewer.stderr[-3000:]
    assert cells_run(fewer.stdout) == (set(), set()), "dropping a seed trains nothing"
    assert sorted(p.name for p in (project / paths.MODELS_DIR).iterdir()) == ["cnn-s1.pt", "mine-s1.pt", "mlp-s1.pt"]
    assert sorted(p.name for p in (project / paths.CELLS_DIR).iterdir()) == [
        "cnn-s1.json",
        "mine-s1.json",
        "mlp-s1.json",
    ]
    assert status(project, PYTHONPATH=str(zoo)) == ALWAYS_CHANGED

    checkpoints = {p.name: p.read_bytes() for p in (project / paths.MODELS_DIR).iterdir()}
    for plumbing in ("ops/tracking.py", "cli.py", "errors.py"):  # what MLflow receives, messages: not the numbers
        module = project / "pipeline" / plumbing
        module.write_text(module.read_text() + "\n# an edit that changes no number\n")
    untouched = run(["dvc", "repro"], project, MLFLOW_TRACKING_URI="", PYTHONPATH=f"{zoo}:{project}")
    assert untouched.returncode == 0, untouched.stdout[-3000:] + untouched.stderr[-3000:]
    assert set(re.findall(r"Running stage '([^']+)'", untouched.stdout)) == UNCHANGED, untouched.stdout
    assert {p.name: p.read_bytes() for p in (project / paths.MODELS_DIR).iterdir()} == checkpoints

    registry = project / "pipeline" / "core" / "models.py"  # the models' code changes: every cell is computed again
    registry.write_text(registry.read_text() + "\n# an edit to the model registry\n")
    edited = run(["dvc", "repro"], project, MLFLOW_TRACKING_URI="", PYTHONPATH=f"{zoo}:{project}")
    assert edited.returncode == 0, edited.stdout[-3000:] + edited.stderr[-3000:]
    assert "prepare" not in set(re.findall(r"Running stage '([^']+)'", edited.stdout)), (
        "the data does not depend on the model registry"
    )
    assert cells_run(edited.stdout) == ({"cnn-s1", "mine-s1", "mlp-s1"}, {"cnn-s1", "mine-s1", "mlp-s1"})

    (zoo / "my_zoo.py").write_text(ZOO + "\n# the user edits their own module (outside the project: not a DVC dep)\n")
    stages = [
        run(["convbench", stage], project, MLFLOW_TRACKING_URI="", PYTHONPATH=f"{zoo}:{project}")
        for stage in ("train", "evaluate")
    ]
    assert all(done.returncode == 0 for done in stages), [done.stderr[-2000:] for done in stages]
    assert cells_run(stages[0].stdout + stages[1].stdout) == ({"mine-s1"}, {"mine-s1"}), (
        "the builder's source is part of its cells' identity: exactly those are computed again"
    )


def cells_run(stdout: str) -> tuple[set[str], set[str]]:
    """The cells the train and the evaluate stage computed (not the ones they kept as current)."""
    return (
        set(re.findall(r"^train: (\S+) val_accuracy", stdout, re.M)),
        set(re.findall(r"^evaluate: (\S+) test_accuracy", stdout, re.M)),
    )
