"""End to end: real `dvc repro`, experiments and a DVC remote on a temporary copy of the project.

One test walks the lifecycle in order (first run, no-op run, param edits), because each step's
expectation is defined by the state the previous step left.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.artifacts import paths
from tests.helpers import ROOT, copy_project, run, write_params

DATASET = "mnist5k"  # the project's default
PER_DATASET = ("download", "prepare", "tune", "train", "evaluate", "bench", "report")


def every_stage(*datasets: str) -> set[str]:
    """What a fresh project runs: each per-dataset stage once per dataset, then the overview."""
    return {f"{stage}@{dataset}" for stage in PER_DATASET for dataset in datasets} | {"overview"}


def unchanged(*datasets: str) -> set[str]:
    """What an up-to-date project runs: download lists its files again; nothing after it runs when they are the same."""
    return {f"download@{dataset}" for dataset in datasets}


def repro(project: Path, *args: str) -> set[str]:
    """Run `dvc repro` with the default MLflow store; return the names of the stages it ran."""
    result = run(["dvc", "repro", *args], project, MLFLOW_TRACKING_URI="")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return set(re.findall(r"Running stage '([^']+)'", result.stdout))


def status(project: Path, **extra_env: str) -> dict:
    """`dvc status --json`: the stages whose outputs are not current."""
    return json.loads(run(["dvc", "status", "--json"], project, **extra_env).stdout)


def commit(project: Path, message: str) -> None:
    assert run(["git", "add", "-A"], project).returncode == 0
    done = run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], project)
    assert done.returncode == 0, done.stderr


def first_screen(project: Path) -> set[str]:
    """The column names `dvc exp show` puts on a 160-column terminal's first screen: DVC pages the full-width table
    (less -S), so the screen is the first 160 characters of each line; `script` gives DVC the terminal it pages on."""
    shown = run(["script", "-qc", "dvc exp show", "/dev/null"], project, COLUMNS="160", DVC_PAGER="cat").stdout
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    header = next(line for line in plain.splitlines() if "Experiment" in line)
    return set(header[:160].split())


def test_dvc_repro_lifecycle(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")

    assert repro(project) == every_stage(DATASET), "a fresh project runs every stage"
    for path in (
        paths.checkpoint(DATASET, "cnn", 0),
        paths.curves(DATASET, "mlp", 0),
        paths.metrics(DATASET, "cnn", 0),
        paths.prepared_tensors(DATASET),
        paths.report_html(DATASET),
        paths.figures_dir(DATASET) / "learning_curves.png",
        paths.summary(DATASET),
        paths.overview_html(),
    ):
        assert (project / path).is_file(), path
    assert "tuned: false" in (project / paths.tuned_recipe(DATASET, "cnn")).read_text(), "tune.trials 0: a note"
    metrics = json.loads((project / paths.metrics(DATASET, "cnn", 0)).read_text())
    assert metrics["test_accuracy"] > 0.8, "one epoch of the textbook CNN on mnist5k already beats 80%"
    summary = json.loads((project / paths.summary(DATASET)).read_text())
    assert list(summary)[0] == "accuracy" and summary["accuracy"]["cnn"] == pytest.approx(
        metrics["test_accuracy"], abs=1e-4
    )
    assert all(isinstance(v, (int, float)) for group in summary.values() for v in group.values()), "numbers only"

    assert repro(project) == unchanged(DATASET), "an unchanged project re-runs nothing after listing its files"

    shown = run(["dvc", "metrics", "show", "--json"], project)
    assert shown.returncode == 0, shown.stderr
    listed = json.loads(shown.stdout)
    assert list(next(iter(listed.values()))["data"]) == [str(paths.summary(DATASET))], "the one metrics file"
    plots = run(["dvc", "plots", "show", "-o", "dvc_plots"], project)
    page = (project / "dvc_plots" / "index.html").read_text()
    assert plots.returncode == 0, plots.stderr
    for model in ("cnn", "mlp"):  # one mean learning curve and one confusion matrix per model (DVC ids its files so)
        assert (
            f"metrics_{DATASET}_learning_curves_{model}_csv" in page
            and f"metrics_{DATASET}_confusion_{model}_csv" in page
        )
    assert '"rect"' in page, "the confusion template draws a heat map of rects"

    commit(project, "baseline results")
    columns = run(["dvc", "exp", "show", "--csv"], project).stdout.splitlines()[0].split(",")
    assert len(columns) <= 60, columns
    assert first_screen(project) >= {"accuracy.cnn", "accuracy.mlp"}, "every model's mean test accuracy"
    kept = run(["dvc", "exp", "show", "--drop", ".*", "--keep", "accuracy", "--csv"], project)
    assert kept.returncode == 0, kept.stderr
    assert {"accuracy.cnn", "accuracy.mlp"} <= set(kept.stdout.splitlines()[0].split(",")), kept.stdout

    experiment = run(["dvc", "exp", "run", "-n", "two-epochs", "-S", "train.epochs=2"], project, MLFLOW_TRACKING_URI="")
    assert experiment.returncode == 0, experiment.stdout[-3000:] + experiment.stderr[-3000:]
    ran = set(re.findall(r"Running stage '([^']+)'", experiment.stdout))
    assert ran == every_stage(DATASET) - {f"prepare@{DATASET}"}, "epochs touch the stages after prepare"
    table = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    revs = [rev for row in table for group in row.get("experiments") or [] for rev in group["revs"]]
    (shown_experiment,) = [rev for rev in revs if rev["name"] == "two-epochs"]
    headline = shown_experiment["data"]["metrics"][str(paths.summary(DATASET))]["data"]
    assert 0 < headline["accuracy"]["cnn"] <= 1, "dvc exp show lists the headline metrics"
    diff = run(["dvc", "metrics", "diff", "HEAD", "two-epochs", "--json"], project)
    assert diff.returncode == 0, diff.stderr
    changed = json.loads(diff.stdout)[str(paths.summary(DATASET))]
    assert {"accuracy.cnn", "accuracy.mlp"} <= set(changed), "each model's accuracy change"

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("convbench-mnist5k").experiment_id
    runs = client.search_runs([experiment_id], "tags.`convbench.kind` = 'train'")
    assert sorted(r.info.run_name for r in runs) == ["cnn-s0", "cnn-s0", "mlp-s0", "mlp-s0"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(len(client.get_metric_history(r.info.run_id, "val_accuracy")) for r in runs) == [1, 1, 2, 2]

    remote, clone = tmp_path / "remote", tmp_path / "clone"
    assert run(["dvc", "remote", "add", "-d", "shared", str(remote)], project).returncode == 0
    commit(project, "results + remote")
    pushed = run(["dvc", "push"], project)
    assert pushed.returncode == 0, pushed.stderr
    assert run(["git", "clone", "-q", str(project), str(clone)], tmp_path).returncode == 0
    pulled = run(["dvc", "pull"], clone)
    assert pulled.returncode == 0, pulled.stderr
    assert status(clone) == {f"download@{DATASET}": ["always changed"]}
    assert (clone / paths.checkpoint(DATASET, "cnn", 0)).is_file() and (clone / paths.report_html(DATASET)).is_file()
    assert repro(clone) == unchanged(DATASET), "a teammate's dvc pull && dvc repro re-runs nothing"


def test_a_second_dataset_keeps_the_first_ones_results_and_the_overview_compares_them(tmp_path: Path) -> None:
    """Asking a second question never deletes the first one's answer: add a dataset, then go back to one."""
    project = copy_project(tmp_path / "project", **{"data.name": ["digits"]})
    assert repro(project) == every_stage("digits")

    def files(dataset: str) -> dict[str, bytes]:
        folders = (paths.models_dir(dataset), paths.results_dir(dataset), paths.report_dir(dataset))
        return {
            str(p): p.read_bytes() for folder in folders for p in sorted((project / folder).rglob("*")) if p.is_file()
        }

    first = files("digits")
    commit(project, "digits")
    both = run(["dvc", "exp", "run", "-S", "data.name=[digits,mnist1d]"], project, MLFLOW_TRACKING_URI="")
    assert both.returncode == 0, both.stdout[-3000:] + both.stderr[-3000:]
    ran = set(re.findall(r"Running stage '([^']+)'", both.stdout))
    assert ran == every_stage("mnist1d") | {"download@digits", "prepare@digits"}, "digits' cells are not touched"
    assert not re.findall(
        r"^(train|evaluate): \S+ (val|test)_accuracy", both.stdout.split("Running stage 'download@mnist1d'")[0], re.M
    )
    assert files("digits") == first, "the first dataset's checkpoints, cell metrics and report are byte-identical"
    assert (project / paths.summary("mnist1d")).is_file() and (project / paths.report_html("mnist1d")).is_file()
    overview = (project / paths.overview_markdown()).read_text()
    assert "## Across datasets" in overview and "`digits`" in overview and "`mnist1d`" in overview
    assert re.search(r"The claim that `cnn` is more accurate than every other model (held|did not hold)", overview)
    assert "[The full report on mnist1d](mnist1d/comparison.md)" in overview
    assert 'href="mnist1d/comparison.html"' in (project / paths.overview_html()).read_text()

    other = files("mnist1d")
    write_params(project / "params.yaml", {"data.name": ["digits"]}, edit_existing=True)  # edited by hand, then repro
    ran = repro(project)  # data changed, so prepare runs too: it rewrites the same bytes, and nothing after it
    assert ran <= unchanged("digits") | {"prepare@digits", "overview"}, f"switching back to digits: {ran}"
    assert files("digits") == first and files("mnist1d") == other, "and keeps every dataset's results as they were"
    assert "## Across datasets" in (project / paths.overview_markdown()).read_text()


def test_every_preset_runs_through_dvc_repro(tmp_path: Path) -> None:
    """A preset is a whole params file; each one runs as the README says (`cp presets/x.yaml params.yaml && dvc
    repro`), shortened, so a change to the schema cannot break one silently."""
    presets = sorted((ROOT / "presets").glob("*.yaml"))
    assert presets
    for preset in presets:
        project = copy_project(tmp_path / preset.stem)
        shutil.copy(preset, project / "params.yaml")
        write_params(project / "params.yaml", {**SHORT, "tracking.uri": f"sqlite:///{project / 'mlflow.db'}"}, True)
        names = yaml.safe_load((project / "params.yaml").read_text())["data"]["name"]
        assert isinstance(names, list), f"{preset.name}: data.name must be a list for DVC to fan out"
        ran = repro(project)
        assert every_stage(*names) <= ran, (preset.name, ran)
        for dataset in names:
            assert (project / paths.summary(dataset)).is_file(), (preset.name, dataset)
        published = yaml.safe_load(preset.read_text())["report"].get("published")
        if published:  # the published table, with shuffled-pixel columns only where the source gives that row
            report = (project / paths.report_markdown(published["dataset"])).read_text()
            assert "## Published results, reproduced" in report, preset.name
            assert ("Published, shuffled pixels" in report) == bool(published.get("permuted")), preset.name


SHORT = {"train.epochs": 1, "train.seeds": [0], "probes.fractions": [0.5, 1.0], "probes.width_scales": [1.0]}


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
            "data.name": ["digits"],
            "models": ["cnn", "mlp", "mine"],
            "model.mine": {"builder": "my_zoo:small_convnet", "channels": 6},
        },
    )
    result = run(["dvc", "repro"], project, MLFLOW_TRACKING_URI="", PYTHONPATH=str(zoo))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert cells_run(result.stdout) == ({"cnn-s0", "mine-s0", "mlp-s0"}, {"cnn-s0", "mine-s0", "mlp-s0"})
    metrics = json.loads((project / paths.metrics("digits", "mine", 0)).read_text())
    assert metrics["arch"] == "builder" and metrics["params"] == net_params(6)
    report = (project / paths.report_markdown("digits")).read_text()
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
    first = {
        cell: (project / paths.checkpoint("digits", *cell)).read_bytes()
        for cell in (("cnn", 0), ("mine", 0), ("mlp", 0))
    }

    write_params(project / "params.yaml", {"train.seeds": [0, 1]}, edit_existing=True)
    more = run(["dvc", "repro"], project, MLFLOW_TRACKING_URI="", PYTHONPATH=str(zoo))
    assert more.returncode == 0, more.stdout[-3000:] + more.stderr[-3000:]
    assert set(re.findall(r"Running stage '([^']+)'", more.stdout)) == {
        "download@digits",
        "tune@digits",  # train changed: it writes the same not-tuned notes again (tune.trials 0), or tunes nothing anew
        "train@digits",
        "evaluate@digits",
        "bench@digits",
        "report@digits",
        "overview",
    }
    assert cells_run(more.stdout) == ({"cnn-s1", "mine-s1", "mlp-s1"}, {"cnn-s1", "mine-s1", "mlp-s1"}), (
        "adding a seed trains and evaluates only the new cells"
    )
    assert all((project / paths.checkpoint("digits", *cell)).read_bytes() == data for cell, data in first.items())
    runs = client.search_runs([experiment_id], "tags.`convbench.kind` = 'train'")
    assert sorted(r.info.run_name for r in runs) == ["cnn-s0", "cnn-s1", "mine-s0", "mine-s1", "mlp-s0", "mlp-s1"]

    write_params(project / "params.yaml", {"model.mine.channels": 4}, edit_existing=True)
    changed = run(["dvc", "repro"], project, MLFLOW_TRACKING_URI="", PYTHONPATH=str(zoo))
    assert changed.returncode == 0, changed.stdout[-3000:] + changed.stderr[-3000:]
    assert cells_run(changed.stdout) == ({"mine-s0", "mine-s1"}, {"mine-s0", "mine-s1"}), (
        "changing one model's settings retrains and re-scores only that model"
    )
    assert json.loads((project / paths.metrics("digits", "mine", 0)).read_text())["params"] == net_params(4)

    write_params(project / "params.yaml", {"train.seeds": [1]}, edit_existing=True)
    fewer = run(["dvc", "repro"], project, MLFLOW_TRACKING_URI="", PYTHONPATH=str(zoo))
    assert fewer.returncode == 0, fewer.stdout[-3000:] + fewer.stderr[-3000:]
    assert cells_run(fewer.stdout) == (set(), set()), "dropping a seed trains nothing"
    assert sorted(p.name for p in (project / paths.models_dir("digits")).iterdir()) == [
        "cnn-s1.pt",
        "mine-s1.pt",
        "mlp-s1.pt",
    ]
    assert sorted(p.name for p in (project / paths.cells_dir("digits")).iterdir()) == [
        "cnn-s1.json",
        "mine-s1.json",
        "mlp-s1.json",
    ]
    assert status(project, PYTHONPATH=str(zoo)) == {"download@digits": ["always changed"]}

    checkpoints = {p.name: p.read_bytes() for p in (project / paths.models_dir("digits")).iterdir()}
    for plumbing in ("ops/tracking.py", "cli.py", "errors.py"):  # what MLflow receives, messages: not the numbers
        module = project / "pipeline" / plumbing
        module.write_text(module.read_text() + "\n# an edit that changes no number\n")
    describe = project / "pipeline" / "reporting" / "architecture.py"  # the report's words for a layer
    describe.write_text(describe.read_text().replace('return f"Linear({', 'return f"Dense({') + "\n# reworded\n")
    for concern in ("core/timing.py", "core/catalog.py"):  # the bench's clocks, the downloaders and readers
        module = project / "pipeline" / concern
        module.write_text(module.read_text() + "\n# an edit to code no trained weight depends on\n")
    reworded = run(["dvc", "repro"], project, MLFLOW_TRACKING_URI="", PYTHONPATH=f"{zoo}:{project}")
    assert reworded.returncode == 0, reworded.stdout[-3000:] + reworded.stderr[-3000:]
    assert cells_run(reworded.stdout) == (set(), set()), "stages whose package changed run; every cell is current"
    assert {p.name: p.read_bytes() for p in (project / paths.models_dir("digits")).iterdir()} == checkpoints
    assert "Dense(" in (project / paths.report_markdown("digits")).read_text(), "the report took the new words"

    registry = project / "pipeline" / "core" / "models.py"  # the models' code changes: every cell is computed again
    registry.write_text(registry.read_text() + "\n# an edit to the model registry\n")
    edited = run(["dvc", "repro"], project, MLFLOW_TRACKING_URI="", PYTHONPATH=f"{zoo}:{project}")
    assert edited.returncode == 0, edited.stdout[-3000:] + edited.stderr[-3000:]
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
