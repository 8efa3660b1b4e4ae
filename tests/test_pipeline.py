"""End to end: real `dvc repro` and a `convbench sweep` on DVC's queue, on a temporary copy of the project.

One test walks the lifecycle in order (first run, no-op run, param edits), because each step's
expectation is defined by the state the previous step left.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mlflow.tracking import MlflowClient

from pipeline import paths
from tests.helpers import OFFLINE, copy_project, run

EVERY_STAGE = {"download", "prepare", "train@cnn-0", "train@mlp-0", "evaluate@cnn-0", "evaluate@mlp-0", "report"}


def repro(project: Path) -> set[str]:
    """Run `dvc repro` with the default MLflow store; return the names of the stages it ran."""
    result = run(["dvc", "repro"], project, MLFLOW_TRACKING_URI="")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    if not re.findall(r"Running stage", result.stdout):
        assert "Data and pipelines are up to date." in result.stdout
    return set(re.findall(r"Running stage '([^']+)'", result.stdout))


def test_dvc_repro_lifecycle(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")

    assert repro(project) == EVERY_STAGE, "a fresh project runs every stage"
    for path in (paths.checkpoint("cnn", 0), paths.curves("mlp", 0), paths.metrics("cnn", 0),
                 paths.prepared_tensors("mnist5k"), paths.report_markdown(), paths.figures_dir() / "learning_curves.png"):
        assert (project / path).is_file(), path
    metrics = json.loads((project / paths.metrics("cnn", 0)).read_text())
    assert {"test_accuracy", "params"} <= set(metrics)
    assert metrics["test_accuracy"] > 0.8, "one epoch of the textbook CNN on mnist5k already beats 80%"

    assert repro(project) == set(), "an unchanged project re-runs nothing"

    shown = run(["dvc", "metrics", "show", "--json"], project)
    assert shown.returncode == 0 and "test_accuracy" in shown.stdout, shown.stderr
    plots = run(["dvc", "plots", "show", "-o", "dvc_plots"], project)
    page = (project / "dvc_plots" / "index.html").read_text()
    assert plots.returncode == 0, plots.stderr
    assert "metrics/curves/cnn-s0.csv" in page and "metrics/predictions/cnn-s0.csv" in page, "curves and confusion plots"
    assert '"rect"' in page, "the confusion template draws a heat map of rects"

    commit = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline results"]
    assert run(["git", "add", "-A"], project).returncode == 0 and run(commit, project).returncode == 0
    # A grid on DVC's queue: an epochs change, a dataset change, and a cell that fails (cifar10 offline).
    sweep = run(["convbench", "sweep", "-S", "train.epochs=2", "-S", "data.name=mnist5k,digits,cifar10", "--jobs", "2",
                 "--name", "two-epochs"], project, MLFLOW_TRACKING_URI="", **OFFLINE)
    assert sweep.returncode == 1, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    assert sweep.stderr.strip().splitlines()[-1] == "convbench: error: 1 of 3 sweep cells failed: two-epochs-2", "the rest go on"
    assert "sweep: two-epochs-0 [train.epochs=2 data.name=mnist5k] success: cnn-s0 0." in sweep.stdout
    assert "sweep: two-epochs-2 [train.epochs=2 data.name=cifar10] failed: dataset 'cifar10' could not be downloaded" in sweep.stdout
    ran = {cell: set(re.findall(r"Running stage '([^']+)'", run(["dvc", "queue", "logs", cell], project).stdout))
           for cell in ("two-epochs-0", "two-epochs-1")}
    assert ran["two-epochs-0"] == EVERY_STAGE - {"download", "prepare"}, "epochs touch train, evaluate, report only"
    assert ran["two-epochs-1"] == EVERY_STAGE, "a new dataset re-runs download and everything after it"
    table = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    revs = [rev for row in table for group in row.get("experiments") or [] for rev in group["revs"]]
    (shown_experiment,) = [rev for rev in revs if rev["name"] == "two-epochs-0"]
    headline = shown_experiment["data"]["metrics"]["metrics/cnn-s0.json"]["data"]
    assert headline["epochs"] == 2 and 0 < headline["test_accuracy"] <= 1, "dvc exp show lists the headline metrics"
    diff = run(["dvc", "metrics", "diff", "HEAD", "two-epochs-0", "--json"], project)
    assert diff.returncode == 0, diff.stderr
    changed = json.loads(diff.stdout)["metrics/cnn-s0.json"]
    assert "test_accuracy" in changed and changed["epochs"] == {"old": 1, "new": 2, "diff": 1}

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("convbench-mnist5k")
    runs = client.search_runs([experiment.experiment_id], "tags.`convbench.kind` = 'train'")
    assert sorted(r.info.run_name for r in runs) == ["cnn-s0", "cnn-s0", "mlp-s0", "mlp-s0"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(len(client.get_metric_history(r.info.run_id, "val_accuracy")) for r in runs) == [1, 1, 2, 2]
    swept = {r.info.run_name: r for r in runs if r.data.tags.get("sweep_cell") == "two-epochs-0"}
    assert set(swept) == {"cnn-s0", "mlp-s0"}, "the queued cell logged to the project's store, tagged with its cell"
    assert len(client.get_metric_history(swept["cnn-s0"].info.run_id, "val_accuracy")) == 2

    digits = client.search_runs([client.get_experiment_by_name("convbench-digits").experiment_id],
                                "tags.sweep_cell = 'two-epochs-1'")
    assert sorted(r.info.run_name for r in digits) == ["cnn-s0", "comparison", "mlp-s0"]

    remote, clone = tmp_path / "remote", tmp_path / "clone"
    assert run(["dvc", "remote", "add", "-d", "shared", str(remote)], project).returncode == 0
    assert run(["git", "add", "-A"], project).returncode == 0
    assert run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results + remote"], project).returncode == 0
    pushed = run(["dvc", "push"], project)
    assert pushed.returncode == 0, pushed.stderr
    assert run(["git", "clone", "-q", str(project), str(clone)], tmp_path).returncode == 0
    pulled = run(["dvc", "pull"], clone)
    assert pulled.returncode == 0, pulled.stderr
    status = run(["dvc", "status"], clone)
    assert status.returncode == 0 and "Data and pipelines are up to date." in status.stdout, status.stdout
    assert (clone / paths.checkpoint("cnn", 0)).is_file() and (clone / paths.report_html()).is_file()
    assert repro(clone) == set(), "a teammate's dvc pull && dvc repro re-runs nothing"
