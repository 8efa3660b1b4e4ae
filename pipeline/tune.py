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
Every trial is an MLflow run nested under one `tune-<model>` run. The best recipe goes to tuned/<model>.yaml.
"""

from __future__ import annotations

import ctypes
import hashlib
import multiprocessing
import os
import signal
import socket
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from optuna.trial import FrozenTrial, TrialState
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline import atomic, models, paths, recipes, tracking
from pipeline.bench import resolve_device
from pipeline.cluster import connect, is_local_address
from pipeline.data import PreparedData, load_prepared, tensors_sha256
from pipeline.errors import ConvbenchError
from pipeline.params import RECIPE_KNOBS, Params, validate_params
from pipeline.runtime import device_splits, execution_plan, fit, place_model

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SHAPE_PREFIX = "model."
Echo = Callable[[str], None]


@dataclass(frozen=True)
class TuneResult:
    """What tuning one model produced."""

    model: str
    tuned: bool
    path: Path
    best_value: float | None = None
    best_trial: int | None = None
    baseline_value: float | None = None
    finished_before: int = 0
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
        recipe["label_smoothing"] = trial.suggest_float("label_smoothing", space.label_smoothing.low,
                                                        space.label_smoothing.high)
    for knob in ("epochs", "batch_size"):
        choices = getattr(space, knob)
        if choices is not None:
            recipe[knob] = trial.suggest_categorical(knob, choices)
    shape = {key: trial.suggest_categorical(f"{SHAPE_PREFIX}{key}", choices)
             for key, choices in shape_space(params, model).items()}
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


class Objective:
    """Train a trial's recipe on the train split once per tune seed; its score is the mean final validation accuracy."""

    def __init__(self, params: Params, model: str, prepared: PreparedData, parent_run_id: str | None) -> None:
        self.params, self.model, self.prepared, self.parent_run_id = params, model, prepared, parent_run_id
        self.device = resolve_device(params.train.device)
        self.data = device_splits(prepared, self.device)  # train and val only: the test split is never moved or read

    def __call__(self, trial: optuna.Trial) -> float:
        recipe, shape = suggest(trial, self.params, self.model)
        trial_params = recipes.with_recipe(self.params, self.model, recipe, shape)
        config = models.resolve(trial_params, self.prepared.input_shape, self.prepared.num_classes)[self.model]
        baseline = bool(trial.user_attrs.get("baseline"))
        seeds = list(self.params.tune.seeds)
        tags = {"convbench.kind": "tune-trial", "convbench.model": self.model, "convbench.trial": trial.number,
                "convbench.study": trial.study.study_name, "convbench.dataset": self.prepared.name,
                "convbench.baseline": baseline, "convbench.worker": f"{socket.gethostname()}:{os.getpid()}"}
        scores: list[float] = []
        pruned = False
        with tracking.child_run(self.params.tracking, self.prepared.name, f"tune-{self.model}-t{trial.number}",
                                self.parent_run_id, tags) as logger:
            trial.set_user_attr("mlflow_run_id", logger.run_id)
            size = models.count_params(models.build(config))
            logger.log_params({"model": self.model, "trial": trial.number, "baseline": baseline, "seeds": seeds,
                               **recipe, **{f"{SHAPE_PREFIX}{k}": v for k, v in shape.items()},
                               "architecture": config.settings, "parameters": size})
            for index, seed in enumerate(seeds):
                scores.append(self.score(config, trial_params, seed, trial))
                running = statistics.fmean(scores)
                logger.log_metrics({f"val_accuracy_seed_{seed}": scores[-1], "val_accuracy_running": running}, step=index)
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

    def score(self, config: models.ModelConfig, trial_params: Params, seed: int, trial: optuna.Trial) -> float:
        """Final validation accuracy of one seed; a run whose loss diverges scores 0 (it learned nothing usable)."""
        recipe = trial_params.train
        plan = execution_plan(recipe, self.device, self.prepared.input_shape)
        torch.manual_seed(seed)  # as the train stage does: the same seed gives the same initial weights
        net = place_model(models.build(config), plan)
        try:
            history, _seconds = fit(net, self.data, recipe, seed, lambda _stats: None, plan)
        except ConvbenchError as exc:
            if not str(exc).startswith("training diverged"):
                raise
            trial.set_user_attr("diverged", True)
            return 0.0
        return history[-1].val_accuracy


# --- studies and workers -----------------------------------------------------------------------------------------------


def default_storage(model: str) -> str:
    """SQLite under tuned/: every finished trial is committed before the next starts, so a kill loses none."""
    return f"sqlite:///{paths.study_storage(model).resolve()}"


def study_name(params: Params, model: str, prepared: PreparedData) -> str:
    """The study of exactly these settings and this train/val data (the test split is not part of its identity)."""
    seen = {f"{split}_{part}": getattr(getattr(prepared.splits, split), part) for split in ("train", "val") for part in "xy"}
    digest = hashlib.sha256((recipes.fingerprint(params, model) + tensors_sha256(seen)).encode()).hexdigest()
    return f"{model}-{digest[:16]}"


def sampler_seed(base: int, finished: int, worker: int) -> int:
    """tune.sampler_seed for an uninterrupted single worker; distinct derived seeds for other workers and resumed runs.

    A resumed run or a second worker with the very same seed would draw the same random startup points again.
    """
    if finished == 0 and worker == 0:
        return base
    return int(hashlib.sha256(f"{base}:{finished}:{worker}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def open_study(storage: str, name: str, params: Params, seed: int) -> optuna.Study:
    """Create or load the study with a seeded TPE sampler and the configured pruner."""
    tune = params.tune
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=tune.startup_trials)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials, n_warmup_steps=0)
              if tune.pruner == "median" else optuna.pruners.NopPruner())
    try:
        engine = {"connect_args": {"timeout": 60}} if storage.startswith("sqlite:") else None
        rdb = optuna.storages.RDBStorage(storage, engine_kwargs=engine)
        return optuna.create_study(storage=rdb, study_name=name, direction="maximize", sampler=sampler, pruner=pruner,
                                   load_if_exists=True)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy and Optuna raise many kinds for a bad URL
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConvbenchError(f"cannot open the study storage '{tracking.redact(storage)}' ({tracking.redact(first)}); "
                             f"pass --storage sqlite:///PATH or a database URL every worker can reach") from None


def quiet_optuna() -> None:
    """Optuna's per-trial log lines would drown the progress bar; warnings stay."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def run_worker(spec: dict[str, Any]) -> int:
    """One Optuna worker: load the study from the shared storage and run `n_trials` trials (a process or a Ray task).

    Everything arrives as plain values (params, absolute paths, URLs), so the same function runs in a spawned
    process on this machine or on any Ray node that can reach the storage, the data and the tracking store.
    """
    if spec.get("die_with_parent") and sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: no orphans after a kill
    if spec.get("project") and Path(spec["project"]).is_dir():
        os.chdir(spec["project"])  # user builders import from the project folder
    torch.set_num_threads(max(1, int(spec["threads"])))
    quiet_optuna()
    params = validate_params(spec["params"], "params.yaml")
    prepared = load_prepared(Path(spec["tensors"]), Path(spec["manifest"]))
    study = open_study(spec["storage"], spec["study"], params, spec["seed"])
    objective = Objective(params, spec["model"], prepared, spec["parent_run_id"])
    study.optimize(objective, n_trials=spec["n_trials"], gc_after_trial=False)
    return spec["n_trials"]


def shares(remaining: int, workers: int) -> list[int]:
    """Split the remaining trials as evenly as possible over the workers (workers without a trial are not started)."""
    return [n for n in (remaining // workers + (1 if i < remaining % workers else 0) for i in range(workers)) if n]


# --- the stage ---------------------------------------------------------------------------------------------------------


def tune_model(params: Params, model: str, prepared: PreparedData, out_path: Path, storage: str | None = None,
               workers: int = 1, ray_address: str | None = None, cpus_per_worker: float = 1.0,
               echo: Echo = print, quiet: bool = False) -> TuneResult:
    """Give `model` its tune.trials trials (resuming a killed run), then write its best recipe to `out_path`."""
    if params.tune.trials == 0:
        recipes.write_not_tuned(model, out_path)
        return TuneResult(model, False, out_path)
    quiet_optuna()
    models.resolve(params, prepared.input_shape, prepared.num_classes, [model])  # a bad model stops before any trial
    storage = storage or default_storage(model)
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    name = study_name(params, model, prepared)
    probe = open_study(storage, name, params, params.tune.sampler_seed)
    stale = probe.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:  # left RUNNING by a killed run: they did not finish, so they do not count
        probe._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    finished_before = len(probe.get_trials(deepcopy=False, states=FINISHED))
    if stale:
        echo(f"tune: {model}: {len(stale)} trial(s) a killed run left unfinished marked FAIL (not counted)")
    if finished_before:
        echo(f"tune: {model}: resuming study {name}: {min(finished_before, params.tune.trials)} of "
             f"{params.tune.trials} trials already finished")
    tags = {"convbench.kind": "tune", "convbench.model": model, "convbench.dataset": prepared.name,
            "convbench.dataset_sha256": prepared.sha256, "convbench.study": name}
    started = time.perf_counter()
    with tracking.run(params.tracking, prepared.name, f"tune-{model}", tags, probe.user_attrs.get("mlflow_run_id")) as parent:
        if stale:  # their MLflow runs (if a trial got as far as opening one) end FAILED too
            tracking.fail_running_children(params.tracking, prepared.name, parent.run_id)
        if probe.user_attrs.get("mlflow_run_id") != parent.run_id:
            probe.set_user_attr("mlflow_run_id", parent.run_id)
            parent.log_params({"model": model, "trials": params.tune.trials, "study": name,
                               "storage": tracking.redact(storage), "tune": params.tune.model_dump(mode="json", exclude={"trials"}),
                               "shared_recipe": params.train.model_dump(mode="json", exclude={"seeds"})})
        if not any(t.user_attrs.get("baseline") for t in probe.get_trials(deepcopy=False, states=(*FINISHED, TrialState.WAITING))):
            probe.enqueue_trial(shared_point(params, model), user_attrs={"baseline": True})
        remaining = max(0, params.tune.trials - finished_before)
        spec = {"params": _portable(params), "model": model, "tensors": str(paths.prepared_tensors(prepared.name).resolve()),
                "manifest": str(paths.prepared_manifest(prepared.name).resolve()), "storage": storage, "study": name,
                "parent_run_id": parent.run_id, "project": str(Path.cwd().resolve())}
        with TrialProgress(model, params.tune.trials, quiet) as progress:
            progress.refresh(probe)
            parallel = ray_address is not None or workers > 1
            # Optuna's SQL storage can hand one enqueued (WAITING) trial to two workers at once, and the second then
            # fails with "Cannot tell a COMPLETE trial": enqueued trials (the shared recipe) run here, before any fan-out.
            waiting = len(probe.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
            here = min(remaining, waiting) if parallel else remaining
            if here:
                study = open_study(storage, name, params, sampler_seed(params.tune.sampler_seed, finished_before, 0))
                objective = Objective(params, model, prepared, parent.run_id)
                study.optimize(objective, n_trials=here, gc_after_trial=False,
                               callbacks=[lambda s, _t: progress.refresh(s)])
            rest, finished = remaining - here, finished_before + here
            if rest and ray_address is not None:
                _on_ray(spec, rest, workers, finished, ray_address, cpus_per_worker, probe, progress, params, echo)
            elif rest:
                _on_processes(spec, rest, workers, finished, probe, progress, params)
            progress.refresh(probe)
        summary = summarize(params, model, prepared, probe, storage)
        parent.log_metrics({"best_val_accuracy": summary["best"]["val_accuracy"],
                            "shared_recipe_val_accuracy": summary["baseline"]["val_accuracy"],
                            "trials_complete": summary["counts"]["complete"], "trials_pruned": summary["counts"]["pruned"],
                            "tune_seconds": time.perf_counter() - started})
        for row in summary["history"]:
            parent.log_metrics({"best_so_far": row["best_so_far"]}, step=row["trial"])
        atomic.write_text(out_path, recipes.HEADER + yaml.safe_dump(summary, sort_keys=False))
        parent.log_artifact(out_path, "tuned")
    return TuneResult(model, True, out_path, summary["best"]["val_accuracy"], summary["best"]["trial"],
                      summary["baseline"]["val_accuracy"], finished_before, remaining)


def summarize(params: Params, model: str, prepared: PreparedData, study: optuna.Study, storage: str) -> dict[str, Any]:
    """The content of tuned/<model>.yaml: the budget, the best recipe, the shared recipe's score, every trial's score."""
    finished = sorted(study.get_trials(deepcopy=False, states=FINISHED), key=lambda t: t.number)[: params.tune.trials]
    if not finished:
        raise ConvbenchError(f"tune: {model}: no trial finished; see the errors above and run `convbench tune` again")
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    if not complete:
        raise ConvbenchError(f"tune: {model}: every trial was pruned; lower tune.startup_trials or set tune.pruner: none")
    best = max(complete, key=lambda t: (t.value, -t.number))
    baseline = next((t for t in finished if t.user_attrs.get("baseline")), None)
    recipe, shape = split_point(best.params)
    full_recipe = {knob: recipe.get(knob, getattr(params.train, knob)) for knob in RECIPE_KNOBS}
    tuned_params = recipes.with_recipe(params, model, full_recipe, shape)
    config = models.resolve(tuned_params, prepared.input_shape, prepared.num_classes)[model]
    history, best_so_far = [], float("-inf")
    for index, trial in enumerate(finished):
        value = trial.value if trial.state == TrialState.COMPLETE else _last_report(trial)
        if trial.state == TrialState.COMPLETE:
            best_so_far = max(best_so_far, value)
        history.append({"trial": index, "number": trial.number, "state": trial.state.name, "val_accuracy": value,
                        "best_so_far": best_so_far if best_so_far > float("-inf") else None,
                        "params": dict(trial.params)})
    return {
        "model": model, "tuned": True, "trials": params.tune.trials,
        "fingerprint": recipes.fingerprint(params, model),
        "dataset": prepared.name, "dataset_sha256": prepared.sha256,
        "study": {"name": study.study_name, "storage": tracking.redact(storage)},
        "scored_on": {"split": "val", "seeds": list(params.tune.seeds), "score": "mean final validation accuracy"},
        "counts": {"complete": len(complete), "pruned": len(finished) - len(complete)},
        "best": {"trial": finished.index(best), "val_accuracy": best.value},
        "baseline": {"trial": finished.index(baseline) if baseline else None,
                     "val_accuracy": baseline.value if baseline and baseline.state == TrialState.COMPLETE else None},
        "recipe": full_recipe,
        "model_settings": shape,
        "architecture": {key: value for key, value in config.settings.items() if not isinstance(value, (list, dict))},
        "history": history,
    }


def _last_report(trial: FrozenTrial) -> float | None:
    values = trial.intermediate_values
    return values[max(values)] if values else None


def _portable(params: Params) -> dict[str, Any]:
    """params as plain values another process re-validates, with the tracking URI resolved to an absolute one."""
    raw = params.model_dump(mode="json")
    raw["tracking"]["uri"] = tracking.tracking_uri(params.tracking)
    root = Path(raw["data"]["root"])
    raw["data"]["root"] = str(root if root.is_absolute() else root.resolve())
    return raw


def _on_processes(spec: dict[str, Any], remaining: int, workers: int, finished: int, study: optuna.Study,
                  progress: TrialProgress, params: Params) -> None:
    """Optuna workers in spawned processes on this machine, sharing the study storage; each gets its share of threads."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(run_worker, {**spec, "n_trials": n, "threads": threads, "die_with_parent": True,
                                            "seed": sampler_seed(params.tune.sampler_seed, finished, index)})
                   for index, n in enumerate(shares(remaining, workers))]
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_EXCEPTION)
            progress.refresh(study)
            for future in done:
                future.result()  # a worker's error stops the stage with its own message


def _on_ray(spec: dict[str, Any], remaining: int, workers: int, finished: int, address: str, cpus_per_worker: float,
            study: optuna.Study, progress: TrialProgress, params: Params, echo: Echo) -> None:
    """Optuna workers as Ray tasks on the cluster at `address`, sharing the study storage."""
    if not is_local_address(address):
        for what, url in (("study storage", spec["storage"]), ("tracking store", spec["params"]["tracking"]["uri"])):
            if url.startswith("sqlite:"):
                echo(f"convbench: warning: workers on other Ray nodes cannot reach the {what} {tracking.redact(url)}; "
                     f"use a database or server URL every node reaches")
    ray = connect(address)
    from ray.exceptions import RayError, RayTaskError

    try:
        task = ray.remote(num_cpus=cpus_per_worker, max_retries=0)(run_worker)
        refs = [task.remote({**spec, "n_trials": n, "threads": max(1, int(cpus_per_worker)),
                             "seed": sampler_seed(params.tune.sampler_seed, finished, index)})
                for index, n in enumerate(shares(remaining, workers))]
        echo(f"tune: {spec['model']}: {len(refs)} Optuna worker(s) on Ray at {address}")
        while refs:
            done, refs = ray.wait(refs, num_returns=1, timeout=1.0)
            progress.refresh(study)
            for ref in done:
                try:
                    ray.get(ref)
                except RayTaskError as exc:
                    cause = exc.cause if isinstance(getattr(exc, "cause", None), ConvbenchError) else None
                    raise ConvbenchError(str(cause) if cause else f"a tuning worker failed on Ray ({_last_line(str(exc))})") from None
                except RayError as exc:
                    raise ConvbenchError(f"a tuning worker failed on Ray ({_last_line(str(exc))})") from None
    finally:
        ray.shutdown()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


class TrialProgress:
    """A rich progress bar over one model's trials, with the best validation score so far (read from the storage)."""

    def __init__(self, model: str, trials: int, quiet: bool = False) -> None:
        self.trials = trials
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeElapsedColumn(), disable=quiet)
        self.task = self.progress.add_task(f"tune {model}", total=trials, status="")

    def __enter__(self) -> TrialProgress:
        self.progress.start()
        return self

    def refresh(self, study: optuna.Study) -> None:
        """Count the finished trials and show the best complete one."""
        finished = sorted(study.get_trials(deepcopy=False, states=FINISHED), key=lambda t: t.number)[: self.trials]
        complete = [t for t in finished if t.state == TrialState.COMPLETE]
        status = ""
        if complete:
            best = max(complete, key=lambda t: t.value)
            status = f"best val_acc {best.value:.4f} (trial {finished.index(best)})"
        self.progress.update(self.task, completed=len(finished), status=status)

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

