"""Tuning with real Optuna studies and real training on digits: equal budgets, validation only, kill and resume,
worker processes and a real Ray head, every trial a nested MLflow run, and the report's tuning section."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import pickle
import shutil
import signal
import sqlite3
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from pipeline.artifacts import paths
from pipeline.artifacts.records import Scored, TunedRecipe
from pipeline.core import recipes
from pipeline.core.data import load_prepared, tensors_sha256
from pipeline.errors import ConvbenchError
from pipeline.ops.studies import WorkerSpec, open_study, study_storage
from pipeline.params import validate_params
from pipeline.stages.tune import Objective, run_worker, study_name, trial_cell, tune_model
from tests.helpers import BIN, env, params_with, run, write_params

# Tiny trials: digits, one or two epochs, one scoring seed; the space still holds the shared recipe (trial 0).
TINY = {
    "data.name": "digits",
    "data.root": "data/raw",
    "train.epochs": 1,
    "train.seeds": [0],
    "train.device": "cpu",
    "evaluate.min_run_time": 0.02,
    "evaluate.throughput_batch_sizes": [32],
    "evaluate.shifts": [0, 2],
    "evaluate.noise_std": [0.0, 0.3],
    "report.bootstrap_resamples": 1000,
    "tracking.log_model": False,
    "tune.trials": 4,
    "tune.seeds": [0],
    "tune.startup_trials": 2,
    "tune.space.epochs": [1, 2],
    "tune.space.batch_size": [64, 128],
    "tune.shape": {"mlp": {"depth": [1, 2, 3]}},  # the MLP's depth, searched at the reference's parameter budget
}
SHARED_POINT = {
    "lr": 0.003,
    "weight_decay": 0.0001,
    "label_smoothing": 0.1,
    "epochs": 1,
    "batch_size": 128,
    "model.depth": 1,
}


@pytest.fixture(scope="module")
def prepared_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder where the real CLI downloaded and prepared digits."""
    root = tmp_path_factory.mktemp("prepared")
    write_params(root / "params.yaml", TINY)
    for args in (["convbench", "download"], ["convbench", "prepare"]):
        result = run(args, root, timeout=300)
        assert result.returncode == 0, result.stderr
    return root


def project_copy(prepared_project: Path, target: Path, **overrides: object) -> Path:
    """A private copy of the prepared project whose params (TINY + overrides) log to its own MLflow store."""
    shutil.copytree(prepared_project, target)
    write_params(target / "params.yaml", {**TINY, "tracking.uri": f"sqlite:///{target / 'mlflow.db'}", **overrides})
    return target


def tune_here(root: Path, model: str, **kwargs: object):
    """Run the tune stage in-process in `root`; returns (params, result, the tuned record it wrote)."""
    params = validate_params(yaml.safe_load((root / "params.yaml").read_text()))
    with contextlib.chdir(root):
        prepared = load_prepared(paths.prepared_tensors("digits"), paths.prepared_manifest("digits"))
        result = tune_model(params, model, prepared, quiet=True, echo=lambda _line: None, **kwargs)
    return params, result, TunedRecipe.load(root / paths.tuned_recipe("digits", model), model)


def storage_trials(root: Path, model: str) -> list[tuple[int, str, float | None]]:
    """(number, state, value) of every trial in the model's study storage, read with plain SQLite."""
    with contextlib.closing(sqlite3.connect(root / paths.study_storage("digits", model))) as db:
        return db.execute(
            "SELECT t.number, t.state, v.value FROM trials t LEFT JOIN trial_values v "
            "ON v.trial_id = t.trial_id ORDER BY t.number"
        ).fetchall()


def tune_runs(root: Path, model: str) -> tuple[list, list]:
    """The `tune-<model>` parent runs and every run nested under them, from the project's MLflow store."""
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("convbench-digits")
    parents = client.search_runs([experiment.experiment_id], f"attributes.run_name = 'tune-{model}'")
    children = [
        run
        for parent in parents
        for run in client.search_runs(
            [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", max_results=1000
        )
    ]
    return parents, children


def test_a_study_gives_the_model_its_budget_with_the_shared_recipe_first_and_every_trial_in_mlflow(
    prepared_project: Path, tmp_path: Path
) -> None:
    root = project_copy(prepared_project, tmp_path / "p", **{"tune.trials": 5, "tune.seeds": [0, 1]})
    params, result, tuned = tune_here(root, "mlp")

    assert (root / paths.tuned_recipe("digits", "mlp")).read_text().startswith(TunedRecipe.HEADER), (
        "it says what wrote it"
    )
    assert tuned.tuned is True and tuned.trials == 5 and result.ran == 5
    assert tuned.counts["complete"] + tuned.counts["pruned"] == 5, "the budget is finished trials"
    history = tuned.history
    assert [row.trial for row in history] == [0, 1, 2, 3, 4]
    assert history[0].params == SHARED_POINT, "trial 0 is the shared recipe"
    assert tuned.baseline == Scored(trial=0, val_accuracy=history[0].val_accuracy)
    assert result.baseline_value == history[0].val_accuracy
    complete = [row.val_accuracy for row in history if row.state == "COMPLETE"]
    assert tuned.best is not None and tuned.best.val_accuracy == max(complete) >= history[0].val_accuracy
    assert (result.best_value, result.best_trial) == (tuned.best.val_accuracy, tuned.best.trial)
    best_so_far = [row.best_so_far for row in history]
    assert best_so_far == sorted(best_so_far) and best_so_far[-1] == max(complete)
    best_params = history[tuned.best.trial].params
    assert tuned.model_settings == {"depth": best_params["model.depth"]}
    assert tuned.architecture["depth"] == best_params["model.depth"], "the architecture is the best trial's"
    assert {k: tuned.recipe[k] for k in ("lr", "epochs", "batch_size")} == {
        k: best_params[k] for k in ("lr", "epochs", "batch_size")
    }
    assert 0.0003 <= best_params["lr"] <= 0.03, "lr searched within tune.space.lr"

    parents, children = tune_runs(root, "mlp")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.metrics["best_val_accuracy"] == pytest.approx(tuned.best.val_accuracy)
    by_trial = {int(run.data.params["trial"]): run for run in children}
    assert sorted(by_trial) == [0, 1, 2, 3, 4], "every trial is a run nested under tune-mlp"
    for row in history:
        run_ = by_trial[row.number]
        assert run_.info.status == "FINISHED"
        assert float(run_.data.params["lr"]) == pytest.approx(row.params["lr"])
        assert run_.data.metrics["val_accuracy"] == pytest.approx(row.val_accuracy)
        assert run_.data.tags["convbench.trial_state"] == row.state

    with contextlib.chdir(root):  # the train stage's recipe is the tuned one, and a stale tuned file is refused
        prepared = load_prepared(paths.prepared_tensors("digits"), paths.prepared_manifest("digits"))
        own = recipes.params_for(params, "mlp", prepared.sha256)
        assert own.train.lr == tuned.recipe["lr"] and own.model["mlp"]["depth"] == tuned.model_settings["depth"]
        assert own.train.seeds == params.train.seeds
        more = validate_params(params_with({"tune.trials": 6}, yaml.safe_load((root / "params.yaml").read_text())))
        with pytest.raises(
            ConvbenchError,
            match=r"tuned/digits/mlp.yaml was tuned with 5 trials, but tune.trials is now 6; "
            r"run `convbench tune --model mlp`",
        ):
            recipes.params_for(more, "mlp", prepared.sha256)


def test_tuning_results_do_not_change_when_the_test_labels_are_corrupted(
    prepared_project: Path, tmp_path: Path
) -> None:
    clean = project_copy(prepared_project, tmp_path / "clean", **{"tune.trials": 3})
    corrupted = project_copy(prepared_project, tmp_path / "corrupted", **{"tune.trials": 3})
    tensors_path, manifest_path = (
        corrupted / paths.prepared_tensors("digits"),
        corrupted / paths.prepared_manifest("digits"),
    )
    tensors = torch.load(tensors_path, weights_only=True)
    tensors["test_y"] = (tensors["test_y"] + 1) % 10  # every test label wrong
    torch.save(tensors, tensors_path)
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"] = tensors_sha256(tensors)  # a consistent, loadable prepared set whose test labels are all wrong
    manifest_path.write_text(json.dumps(manifest))

    _params, _result, a = tune_here(clean, "cnn")
    _params, _result, b = tune_here(corrupted, "cnn")

    assert a.dataset_sha256 != b.dataset_sha256, "the corrupted set really differs"
    assert a.history == b.history, "every trial's params and validation score are the same"
    assert (a.recipe, a.best, a.study["name"]) == (b.recipe, b.best, b.study["name"])


def test_a_trial_whose_loss_diverges_scores_zero_and_says_so(prepared_project: Path, tmp_path: Path) -> None:
    root = project_copy(prepared_project, tmp_path / "p")
    params = validate_params(yaml.safe_load((root / "params.yaml").read_text()))
    with contextlib.chdir(root):
        prepared = load_prepared(paths.prepared_tensors("digits"), paths.prepared_manifest("digits"))
    cell = trial_cell(params, "mlp", prepared, {}, {}, 0)  # the shared recipe
    study = optuna.create_study(direction="maximize")
    clean, poisoned = study.ask(), study.ask()
    assert Objective(params, "mlp", prepared, None).score(cell, clean) > 0.3, "a sound run scores what it learned"

    objective = Objective(params, "mlp", prepared, None)
    objective.data.train.x[0].fill_(float("nan"))  # one poisoned training image: the first epoch's loss is nan
    assert objective.score(cell, poisoned) == 0.0, "TrainingDiverged is a score of 0, not a failed trial"
    assert study.trials[1].user_attrs == {"diverged": True} and "diverged" not in study.trials[0].user_attrs


def test_a_worker_spec_holds_absolute_plain_values_a_spawned_worker_runs_from(
    prepared_project: Path, tmp_path: Path
) -> None:
    root = project_copy(prepared_project, tmp_path / "p", **{"tracking.uri": "sqlite:///mlflow.db"})  # relative
    params = validate_params(yaml.safe_load((root / "params.yaml").read_text()))
    with contextlib.chdir(root):
        prepared = load_prepared(paths.prepared_tensors("digits"), paths.prepared_manifest("digits"))
        storage = study_storage("sqlite:///studies/mlp.db", "digits", "mlp")
        name = study_name(params, "mlp", prepared)
        open_study(storage, name, params, params.tune.sampler_seed)
        spec = WorkerSpec.of(params, "mlp", prepared, storage, name, None)
    project = root.resolve()
    assert storage == f"sqlite:///{project / 'studies' / 'mlp.db'}" and (project / "studies").is_dir()
    assert spec.params["tracking"]["uri"] == f"sqlite:///{project / 'mlflow.db'}"
    assert spec.params["data"]["root"] == str(project / "data" / "raw")
    assert (spec.tensors, spec.manifest, spec.project) == (
        str(project / paths.prepared_tensors("digits")),
        str(project / paths.prepared_manifest("digits")),
        str(project),
    )
    assert pickle.loads(pickle.dumps(spec)) == spec

    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:  # started from elsewhere: the spec says where
        assert pool.submit(run_worker, replace(spec, n_trials=2, threads=1, seed=7)).result(timeout=240) == 2
    with contextlib.closing(sqlite3.connect(project / "studies" / "mlp.db")) as db:
        rows = db.execute(
            "SELECT t.state, v.value FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id ORDER BY t.number"
        ).fetchall()
    assert [state for state, _value in rows] == ["COMPLETE", "COMPLETE"], "one tune seed: nothing to prune on"
    assert all(0 < value <= 1 for _state, value in rows), "each trial's validation accuracy is in the shared study"


def test_a_killed_tune_resumes_without_repeating_finished_trials(prepared_project: Path, tmp_path: Path) -> None:
    root = project_copy(prepared_project, tmp_path / "p", **{"tune.trials": 6})
    log = root / "killed.log"
    with open(log, "w") as handle:
        tune = subprocess.Popen(
            [str(BIN / "convbench"), "tune", "--model", "mlp"],
            cwd=root,
            env=env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 240
    while True:
        try:
            done = [t for t in storage_trials(root, "mlp") if t[1] == "COMPLETE"]
        except sqlite3.OperationalError:  # not created yet, or Optuna is creating its tables
            done = []
        if len(done) >= 2 or tune.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    tune.send_signal(signal.SIGKILL)
    tune.wait(timeout=30)
    assert tune.returncode == -signal.SIGKILL, f"tune ended before the kill: {log.read_text()[-2000:]}"
    before = storage_trials(root, "mlp")
    finished_before = {number: value for number, state, value in before if state in ("COMPLETE", "PRUNED")}
    assert 2 <= len(finished_before) < 6

    result = run(["convbench", "tune", "--model", "mlp"], root, timeout=300)

    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "resuming study mlp-" in result.stdout
        and f"{len(finished_before)} of 6 trials already finished" in result.stdout
    )
    after = storage_trials(root, "mlp")
    finished = {number: value for number, state, value in after if state in ("COMPLETE", "PRUNED")}
    assert len(finished) == 6, "the budget is met exactly"
    assert {n: finished[n] for n in finished_before} == finished_before, "finished trials kept, not repeated"
    killed = [number for number, state, _value in before if state == "RUNNING"]
    assert [number for number, state, _value in after if state == "FAIL"] == killed
    assert len(after) == 6 + len(killed), "no trial ran twice"
    assert f"{6 - len(finished_before)} trial(s) run now" in result.stdout
    parents, children = tune_runs(root, "mlp")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", "the resumed run continues the tune-mlp run"
    statuses = [run_.info.status for run_ in children]
    assert statuses.count("FINISHED") == 6 and "RUNNING" not in statuses, "a killed trial's run (if opened) ends FAILED"
    assert statuses.count("FAILED") <= len(killed)


def _fanned_out_workers(children: list) -> set[str]:
    """The workers of the trials after the shared-recipe one, which the stage's own process runs before fanning out
    (Optuna's SQL storage could hand one enqueued trial to two workers)."""
    baseline = [run_ for run_ in children if run_.data.tags["convbench.baseline"] == "True"]
    assert len(baseline) == 1 and baseline[0].data.params["trial"] == "0"
    others = {run_.data.tags["convbench.worker"] for run_ in children if run_ is not baseline[0]}
    assert baseline[0].data.tags["convbench.worker"] not in others
    return others


def _score(scored: Scored | None) -> float:
    """A complete trial's validation accuracy (the tests' studies always finish their best and shared-recipe trials)."""
    assert scored is not None and scored.val_accuracy is not None
    return scored.val_accuracy


def test_workers_on_this_machine_share_one_study_and_the_report_shows_both_gaps(
    prepared_project: Path, tmp_path: Path
) -> None:
    root = project_copy(prepared_project, tmp_path / "p")
    result = run(["convbench", "tune", "--workers", "2"], root, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    for model in ("cnn", "mlp"):
        assert sorted(s for _n, s, _v in storage_trials(root, model)) in (
            sorted(["COMPLETE"] * k + ["PRUNED"] * (4 - k)) for k in range(1, 5)
        )
        _parents, children = tune_runs(root, model)
        assert len(children) == 4
        assert len(_fanned_out_workers(children)) == 2, "two worker processes ran the trials after the shared recipe"
    for args in (["convbench", "train"], ["convbench", "evaluate"], ["convbench", "bench"], ["convbench", "report"]):
        step = run(args, root, timeout=400)
        assert step.returncode == 0, step.stderr[-3000:]

    tuned = {m: TunedRecipe.load(root / paths.tuned_recipe("digits", m), m) for m in ("cnn", "mlp")}
    checkpoint = torch.load(root / paths.checkpoint("digits", "mlp", 0), weights_only=True)
    assert checkpoint["recipe"]["lr"] == tuned["mlp"].recipe["lr"], "train used the tuned recipe"
    assert checkpoint["config"]["settings"]["depth"] == tuned["mlp"].model_settings["depth"]
    report = (root / paths.report_markdown("digits")).read_text()
    assert "each with its own recipe, as each checkpoint records it" in report
    assert "Each model's recipe is the best of the same budget of 4 Optuna trials per model" in report
    assert f"MLP: lr {tuned['mlp'].recipe['lr']:.3g}" in report
    assert "These numbers come from each model's tuned recipe" in report
    tuning = report.split("## Tuning", 1)[1].split("\n## ", 1)[0]
    shared_gap = (_score(tuned["cnn"].baseline) - _score(tuned["mlp"].baseline)) * 100
    tuned_gap = (_score(tuned["cnn"].best) - _score(tuned["mlp"].best)) * 100
    row = next(line for line in tuning.splitlines() if line.startswith("| MLP") and "[" in line)
    assert f"{shared_gap:.2f}".lstrip("-") in row and f"{tuned_gap:.2f}".lstrip("-") in row
    assert (
        "figures/tuning_progress.png" in tuning
        and (root / paths.figures_dir("digits") / "tuning_progress.png").is_file()
    )


def test_tuning_off_writes_a_note_and_leaves_the_shared_recipe(prepared_project: Path, tmp_path: Path) -> None:
    root = project_copy(prepared_project, tmp_path / "p", **{"tune.trials": 0})
    params, result, note = tune_here(root, "mlp")
    assert result.tuned is False and note.tuned is False and note.trials == 0 and "shared recipe" in note.note
    assert not (root / paths.study_storage("digits", "mlp")).exists(), "no study without trials"
    with contextlib.chdir(root):
        assert recipes.params_for(params, "mlp", "any-sha") is params


def test_a_study_runs_across_a_real_ray_head_and_every_trial_is_in_mlflow(
    prepared_project: Path, tmp_path: Path, ray_head: str
) -> None:
    root = project_copy(prepared_project, tmp_path / "p")
    result = run(
        ["convbench", "tune", "--model", "mlp", "--backend", "ray", "--ray-address", ray_head, "--workers", "2"],
        root,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"2 Optuna worker(s) on Ray at {ray_head}" in result.stdout
    tuned = TunedRecipe.load(root / paths.tuned_recipe("digits", "mlp"), "mlp")
    assert tuned.counts["complete"] + tuned.counts["pruned"] == 4
    parents, children = tune_runs(root, "mlp")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(int(run_.data.params["trial"]) for run_ in children) == [0, 1, 2, 3]
    assert {run_.info.status for run_ in children} == {"FINISHED"}
    assert all("val_accuracy" in run_.data.metrics for run_ in children)
    assert len(_fanned_out_workers(children)) == 2, "two Ray workers ran the trials after the shared recipe"
