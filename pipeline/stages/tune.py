"""Tune stage: every model gets the same Optuna budget, scored on the validation split only.

A shared recipe favours whichever model it happens to suit; this stage gives each model `tune.trials`
trials of one seeded TPE search over `tune.space` (and the shape knobs of `tune.shape` that keep its
parameter budget). Trial 0 of every study is the shared recipe itself, so the report can put the gap
under the shared recipe next to the gap after tuning. A trial trains with runtime.fit on the train and
validation splits (the test split never leaves the prepared file) and scores the mean final validation
accuracy over `tune.seeds`; a trial whose running mean falls below the median of earlier trials after a
seed may be pruned.

Trials live in an Optuna study storage (SQLite under tuned/ by default, any RDB URL with --storage), so a
killed `convbench tune` resumes without repeating finished trials. They run in this process, in several
worker processes on this machine, or as Ray tasks on a cluster: Optuna workers that share the storage.
Every trial is an MLflow run nested under one `tune-<model>` run. The best recipe goes to tuned/<dataset>/<model>.yaml.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from pipeline.artifacts import paths
from pipeline.artifacts.records import Scored, TrialRow, TunedRecipe
from pipeline.core import models, recipes
from pipeline.core.cell import Cell, prepared_data
from pipeline.core.data import PreparedData, load_prepared
from pipeline.core.measure import resolve_device
from pipeline.core.runtime import device_splits, fit, place_model
from pipeline.errors import ConvbenchError, TrainingDiverged
from pipeline.ops import tracking
from pipeline.ops.cluster import check_listening
from pipeline.ops.studies import (
    FINISHED,
    Echo,
    TrialProgress,
    Workers,
    WorkerSpec,
    open_study,
    quiet_optuna,
    resume,
    run_workers,
    sampler_seed,
    shares,
    study_name,
    study_storage,
)
from pipeline.params import RECIPE_KNOBS, Params, validate_params

SHAPE_PREFIX = "model."


@dataclass(frozen=True)
class TuneResult:
    """What tuning one model produced."""

    model: str
    tuned: bool
    path: Path
    best_value: float | None = None
    best_trial: int | None = None
    baseline_value: float | None = None
    ran: int = 0


# --- the search space -------------------------------------------------------------------------------------------------


def suggest(trial: optuna.Trial, params: Params, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """One point of the search space: the recipe knobs (lr, weight decay log-uniform) and the model's shape knobs."""
    space = params.tune.space
    recipe: dict[str, Any] = {}
    for knob in ("lr", "weight_decay"):
        bounds = getattr(space, knob)
        if bounds is not None:
            recipe[knob] = trial.suggest_float(knob, bounds.low, bounds.high, log=True)
    if space.label_smoothing is not None:
        recipe["label_smoothing"] = trial.suggest_float(
            "label_smoothing", space.label_smoothing.low, space.label_smoothing.high
        )
    for knob in ("epochs", "batch_size"):
        choices = getattr(space, knob)
        if choices is not None:
            recipe[knob] = trial.suggest_categorical(knob, choices)
    shape = {
        key: trial.suggest_categorical(f"{SHAPE_PREFIX}{key}", choices)
        for key, choices in shape_space(params, model).items()
    }
    return recipe, shape


def shape_space(params: Params, model: str) -> dict[str, list[Any]]:
    """The shape knobs searched for `model` (empty for a model without any)."""
    return dict(params.tune.shape.get(model, {})) if model in params.models else {}


def shared_point(params: Params, model: str) -> dict[str, Any]:
    """The shared recipe (and the model's own shape settings) as a point of the space: trial 0 of every study."""
    point = {knob: getattr(params.train, knob) for knob in RECIPE_KNOBS if getattr(params.tune.space, knob) is not None}
    settings = models.typed_settings(params, model)
    point |= {f"{SHAPE_PREFIX}{key}": settings[key] for key in shape_space(params, model)}
    return point


def split_point(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Optuna's flat params -> (recipe knobs, model settings)."""
    recipe = {k: v for k, v in values.items() if not k.startswith(SHAPE_PREFIX)}
    shape = {k.removeprefix(SHAPE_PREFIX): v for k, v in values.items() if k.startswith(SHAPE_PREFIX)}
    return recipe, shape


# --- one trial ---------------------------------------------------------------------------------------------------------


def trial_cell(
    params: Params, model: str, prepared: PreparedData, recipe: dict[str, Any], shape: dict[str, Any], seed: int
) -> Cell:
    """A point of the space as a core.cell Cell, so a trial's model is resolved as every stage resolves one."""
    own = recipes.with_recipe(params, model, recipe, shape)
    return Cell(model, seed, own, models.resolve(own, prepared.input_shape, prepared.num_classes, [model])[model])


class Objective:
    """Train a trial's recipe on the train split once per tune seed; its score is the mean final validation accuracy."""

    def __init__(self, params: Params, model: str, prepared: PreparedData, parent_run_id: str | None) -> None:
        self.params, self.model, self.prepared, self.parent_run_id = params, model, prepared, parent_run_id
        self.device = resolve_device(params.train.device)  # as Cell.device(): train.device is never a tuned knob
        self.data = device_splits(prepared, self.device)  # train and val only: the test split is never moved or read

    def __call__(self, trial: optuna.Trial) -> float:
        """One trial: its cell at every tune seed in one nested MLflow run, pruned on the running mean."""
        recipe, shape = suggest(trial, self.params, self.model)
        seeds = list(self.params.tune.seeds)
        cell = trial_cell(self.params, self.model, self.prepared, recipe, shape, seeds[0])
        baseline = bool(trial.user_attrs.get("baseline"))
        tags = {
            "convbench.kind": "tune-trial",
            "convbench.model": self.model,
            "convbench.trial": trial.number,
            "convbench.study": trial.study.study_name,
            "convbench.dataset": self.prepared.name,
            "convbench.baseline": baseline,
            "convbench.worker": f"{socket.gethostname()}:{os.getpid()}",
        }
        scores: list[float] = []
        pruned = False
        with tracking.child_run(
            self.params.tracking, self.prepared.name, f"tune-{self.model}-t{trial.number}", self.parent_run_id, tags
        ) as logger:
            trial.set_user_attr("mlflow_run_id", logger.run_id)
            size = models.count_params(models.build(cell.config))
            logger.log_params(
                {
                    "model": self.model,
                    "trial": trial.number,
                    "baseline": baseline,
                    "seeds": seeds,
                    **recipe,
                    **{f"{SHAPE_PREFIX}{k}": v for k, v in shape.items()},
                    "architecture": cell.config.settings,
                    "parameters": size,
                }
            )
            for index, seed in enumerate(seeds):
                scores.append(self.score(replace(cell, seed=seed), trial))
                running = statistics.fmean(scores)
                logger.log_metrics(
                    {f"val_accuracy_seed_{seed}": scores[-1], "val_accuracy_running": running}, step=index
                )
                if not baseline and index < len(seeds) - 1:  # the shared recipe always runs to the end
                    trial.report(running, index)
                    if trial.should_prune():
                        pruned = True
                        break
            value = statistics.fmean(scores)
            logger.log_metrics({"val_accuracy": value})
            logger.set_tags({"convbench.trial_state": "PRUNED" if pruned else "COMPLETE"})
        if pruned:
            raise optuna.TrialPruned(f"mean validation accuracy {value:.4f} after {len(scores)} seed(s)")
        return value

    def score(self, cell: Cell, trial: optuna.Trial) -> float:
        """Final validation accuracy of one seed; a run whose loss diverges scores 0 (it learned nothing usable)."""
        plan = cell.plan(self.device, self.prepared.input_shape)
        torch.manual_seed(cell.seed)  # as the train stage does: the same seed gives the same initial weights
        net = place_model(models.build(cell.config), plan)
        try:
            history, _seconds = fit(net, self.data, cell.params.train, cell.seed, lambda _stats: None, plan)
        except TrainingDiverged:
            trial.set_user_attr("diverged", True)
            return 0.0
        return history[-1].val_accuracy


# --- one worker (ops/studies.py runs several) -------------------------------------------------------------------------


def run_worker(spec: WorkerSpec) -> int:
    """One Optuna worker: load the study from the shared storage and run `n_trials` trials (a process or a Ray task).

    Everything arrives as plain values (params, absolute paths, URLs), so the same function runs in a spawned
    process on this machine or on any Ray node that can reach the storage, the data and the tracking store.
    """
    if spec.project and Path(spec.project).is_dir():
        os.chdir(spec.project)  # user builders import from the project folder
    torch.set_num_threads(max(1, spec.threads))
    quiet_optuna()
    params = validate_params(spec.params, "params.yaml")
    prepared = load_prepared(Path(spec.tensors), Path(spec.manifest))
    study = open_study(spec.storage, spec.study, params, spec.seed)
    objective = Objective(params, spec.model, prepared, spec.parent_run_id)
    study.optimize(objective, n_trials=spec.n_trials, gc_after_trial=False)
    return spec.n_trials


# --- the stage ---------------------------------------------------------------------------------------------------------


def tune(params: Params, model: str | None = None, workers: Workers = Workers(), say: Echo = print) -> list[TuneResult]:
    """Give every model (or `model`) its tune.trials trials, here or on the workers `workers` names."""
    if workers.address is not None:
        check_listening(workers.address)  # in seconds, before any storage or run is opened
    prepared = prepared_data(params) if params.tune.trials else None
    results = []
    for name in [model] if model else params.models:
        result = tune_model(params, name, prepared, workers, say)
        results.append(result)
        if not result.tuned:
            say(f"tune: {name} not tuned (tune.trials is 0: the shared recipe) -> {result.path}")
            continue
        baseline = "n/a" if result.baseline_value is None else f"{result.baseline_value:.4f}"
        say(
            f"tune: {name} best val_accuracy {result.best_value:.4f} (trial {result.best_trial} of "
            f"{params.tune.trials}; shared recipe {baseline}; {result.ran} trial(s) run now) -> {result.path}"
        )
    return results


def tune_model(
    params: Params,
    model: str,
    prepared: PreparedData | None,
    workers: Workers = Workers(),
    echo: Echo = print,
    quiet: bool = False,
) -> TuneResult:
    """Give `model` its tune.trials trials (resuming a killed run), then write its best recipe to tuned/.

    `prepared` may be None only with tune.trials 0, where no data is read (the CLI then loads none).
    """
    out_path = paths.tuned_recipe(params.data.name, model)
    if params.tune.trials == 0:
        recipes.write_not_tuned(model, out_path)
        return TuneResult(model, False, out_path)
    if prepared is None:
        raise ValueError(f"tune_model: tuning '{model}' needs the prepared data (tune.trials is {params.tune.trials})")
    quiet_optuna()
    models.resolve(params, prepared.input_shape, prepared.num_classes, [model])  # a bad model stops before any trial
    storage = study_storage(workers.storage, prepared.name, model)
    name = study_name(params, model, prepared)
    probe = open_study(storage, name, params, params.tune.sampler_seed)
    stale, finished_before = resume(probe, model, params.tune.trials, echo)
    tags = {
        "convbench.kind": "tune",
        "convbench.model": model,
        "convbench.dataset": prepared.name,
        "convbench.dataset_sha256": prepared.sha256,
        "convbench.study": name,
    }
    started = time.perf_counter()
    with tracking.run(
        params.tracking, prepared.name, f"tune-{model}", tags, probe.user_attrs.get("mlflow_run_id")
    ) as parent:
        if stale:  # their MLflow runs (if a trial got as far as opening one) end FAILED too
            tracking.fail_running_children(params.tracking, prepared.name, parent.run_id)
        _link_parent(parent, probe, params, model, storage)
        spec = WorkerSpec.of(params, model, prepared, storage, name, parent.run_id)
        ran = _run_trials(spec, params, prepared, probe, finished_before, workers, echo, quiet)
        tuned = summarize(params, model, prepared, probe, storage)
        _log_summary(parent, tuned, time.perf_counter() - started)
        tuned.save(out_path)
        parent.log_artifact(out_path, "tuned")
    best, baseline = _scores(tuned)
    return TuneResult(
        model,
        True,
        out_path,
        best_value=best.val_accuracy,
        best_trial=best.trial,
        baseline_value=baseline.val_accuracy,
        ran=ran,
    )


def _link_parent(parent: tracking.RunLogger, study: optuna.Study, params: Params, model: str, storage: str) -> None:
    """Record the tune-<model> run in the study (a resumed run continues it) and log the budget and space once."""
    if study.user_attrs.get("mlflow_run_id") == parent.run_id:
        return
    study.set_user_attr("mlflow_run_id", parent.run_id)
    parent.log_params(
        {
            "model": model,
            "trials": params.tune.trials,
            "study": study.study_name,
            "storage": tracking.redact(storage),
            "tune": params.tune.model_dump(mode="json", exclude={"trials"}),
            "shared_recipe": params.train.recipe(),
        }
    )


def _run_trials(  # 8 parameters: one study's state and where its remaining trials run
    spec: WorkerSpec,
    params: Params,
    prepared: PreparedData,
    probe: optuna.Study,
    finished_before: int,
    workers: Workers,
    echo: Echo,
    quiet: bool,
) -> int:
    """Run what is left of the budget (the shared recipe first, here), the rest here or on workers; returns how many."""
    queued_or_done = probe.get_trials(deepcopy=False, states=(*FINISHED, TrialState.WAITING))
    if not any(t.user_attrs.get("baseline") for t in queued_or_done):
        probe.enqueue_trial(shared_point(params, spec.model), user_attrs={"baseline": True})
    remaining = max(0, params.tune.trials - finished_before)
    with TrialProgress(spec.model, params.tune.trials, quiet) as progress:
        progress.refresh(probe)
        # Optuna's SQL storage can hand one enqueued (WAITING) trial to two workers at once, and the second then
        # fails with "Cannot tell a COMPLETE trial": enqueued trials (the shared recipe) run here, before any fan-out.
        waiting = len(probe.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        here = min(remaining, waiting) if workers.parallel else remaining
        if here:
            seed = sampler_seed(params.tune.sampler_seed, finished_before, 0)
            study = open_study(spec.storage, spec.study, params, seed)
            objective = Objective(params, spec.model, prepared, spec.parent_run_id)
            study.optimize(
                objective, n_trials=here, gc_after_trial=False, callbacks=[lambda s, _t: progress.refresh(s)]
            )
        finished = finished_before + here
        specs = [
            replace(spec, n_trials=n, seed=sampler_seed(params.tune.sampler_seed, finished, index))
            for index, n in enumerate(shares(remaining - here, workers.count))
        ]
        if specs:
            run_workers(specs, workers, run_worker, probe, progress, echo)
        progress.refresh(probe)
    return remaining


def _log_summary(parent: tracking.RunLogger, tuned: TunedRecipe, seconds: float) -> None:
    """The study's outcome on the tune-<model> run: best and shared-recipe scores, counts, best-so-far by trial."""
    best, baseline = _scores(tuned)
    values = {
        "best_val_accuracy": best.val_accuracy,
        "shared_recipe_val_accuracy": baseline.val_accuracy,
        "trials_complete": tuned.counts["complete"],
        "trials_pruned": tuned.counts["pruned"],
        "tune_seconds": seconds,
    }
    parent.log_metrics({key: float(value) for key, value in values.items() if value is not None})
    for row in tuned.history:
        if row.best_so_far is not None:  # trials before the first complete one have no best yet
            parent.log_metrics({"best_so_far": row.best_so_far}, step=row.trial)


def _scores(tuned: TunedRecipe) -> tuple[Scored, Scored]:
    """The best and the shared-recipe trial of a tuned record (summarize always sets both)."""
    if tuned.best is None or tuned.baseline is None:
        raise ValueError(f"the tuned record of '{tuned.model}' has no best or baseline trial")
    return tuned.best, tuned.baseline


def summarize(params: Params, model: str, prepared: PreparedData, study: optuna.Study, storage: str) -> TunedRecipe:
    """tuned/<dataset>/<model>.yaml: the budget, the best recipe, the shared recipe's score, every trial's score."""
    finished = sorted(study.get_trials(deepcopy=False, states=FINISHED), key=lambda t: t.number)[: params.tune.trials]
    if not finished:
        raise ConvbenchError(f"tune: {model}: no trial finished; see the errors above and run `convbench tune` again")
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    if not complete:
        raise ConvbenchError(
            f"tune: {model}: every trial was pruned; lower tune.startup_trials or set tune.pruner: none"
        )
    best = max(complete, key=lambda t: (t.value, -t.number))
    baseline = next((t for t in finished if t.user_attrs.get("baseline")), None)
    recipe, shape = split_point(best.params)
    full_recipe = {knob: recipe.get(knob, getattr(params.train, knob)) for knob in RECIPE_KNOBS}
    config = trial_cell(params, model, prepared, full_recipe, shape, params.tune.seeds[0]).config
    return TunedRecipe(
        model=model,
        tuned=True,
        trials=params.tune.trials,
        fingerprint=recipes.fingerprint(params, model),
        dataset=prepared.name,
        dataset_sha256=prepared.sha256,
        study={"name": study.study_name, "storage": tracking.redact(storage)},
        scored_on={"split": "val", "seeds": list(params.tune.seeds), "score": "mean final validation accuracy"},
        counts={"complete": len(complete), "pruned": len(finished) - len(complete)},
        best=Scored(trial=finished.index(best), val_accuracy=best.value),
        baseline=Scored(
            trial=finished.index(baseline) if baseline else None,
            val_accuracy=baseline.value if baseline and baseline.state == TrialState.COMPLETE else None,
        ),
        recipe=full_recipe,
        model_settings=shape,
        architecture={key: value for key, value in config.settings.items() if not isinstance(value, (list, dict))},
        history=_history(finished),
    )


def _history(finished: list[FrozenTrial]) -> list[TrialRow]:
    """Every finished trial in order with its score (a pruned one's last report) and the best complete score so far."""
    rows, best_so_far = [], float("-inf")
    for index, trial in enumerate(finished):
        value = trial.value if trial.state == TrialState.COMPLETE else _last_report(trial)
        if trial.state == TrialState.COMPLETE and value is not None:
            best_so_far = max(best_so_far, value)
        rows.append(
            TrialRow(
                trial=index,
                number=trial.number,
                state=trial.state.name,
                val_accuracy=value,
                best_so_far=best_so_far if best_so_far > float("-inf") else None,
                params=dict(trial.params),
            )
        )
    return rows


def _last_report(trial: FrozenTrial) -> float | None:
    """A pruned trial's score: the running mean it last reported before it was stopped."""
    values = trial.intermediate_values
    return values[max(values)] if values else None
