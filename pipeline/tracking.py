"""The only module that talks to MLflow: runs, params, metrics, artifacts and models.

Everything else hands plain values to a RunLogger. Runs that raise are ended FAILED, keeping
whatever was logged before the failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.errors import ConvbenchError
from pipeline.params import TrackingParams

DEFAULT_STORE = "mlflow.db"
MAX_BATCH = 1000
# MLflow 3's experiment type, the tag its UI sets when a user picks "Machine learning" for an experiment;
# without it the UI may take a convbench experiment for a GenAI one and open on an empty traces overview.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
DATASET_CONTEXT_TAG = "mlflow.data.context"  # what MLflow's own log_input(dataset, context=...) writes
MAX_DIGEST = 36  # the longest dataset digest MLflow's stores accept (MAX_DATASET_DIGEST_SIZE)


def tracking_uri(params: TrackingParams, project_root: Path | None = None) -> str:
    """params.tracking.uri, else $MLFLOW_TRACKING_URI, else MLflow's default sqlite:///mlflow.db in the project."""
    if params.uri:
        return params.uri
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    root = (project_root or Path.cwd()).resolve()
    return f"sqlite:///{root / DEFAULT_STORE}"


def experiment_name(params: TrackingParams, dataset: str) -> str:
    """One experiment per dataset, e.g. 'convbench-mnist5k'."""
    return f"{params.experiment_prefix}-{dataset}"


def training_runs_url(params: TrackingParams, dataset: str, address: str) -> str:
    """The page of the MLflow UI served at `address` that lists this dataset's training runs.

    MLflow 3.17's UI chooses between its GenAI pages and its model-training pages by a switch of its own
    (`workflowType`, GenAI unless the browser kept another choice), not by the experiment-kind tag, so a
    plain address opens a convbench experiment on an empty traces overview; this link sets the switch.
    """
    try:
        found = MlflowClient(tracking_uri(params)).get_experiment_by_name(experiment_name(params, dataset))
    except MlflowException:
        found = None
    page = f"experiments/{found.experiment_id}" if found else "experiments"
    return f"{address.rstrip('/')}/#/{page}?workflowType=machine_learning"


def git_commit(cwd: Path | None = None) -> str:
    """HEAD's commit hash (with '-dirty' if the tree has changes), or 'unknown' outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(  # dvc.lock and metrics/ change with every run by design; they are not source changes
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)dvc.lock", ":(exclude)metrics"],
            cwd=cwd, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {'a.b.c': value}; lists of mappings get their index as a key part."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for index, item in enumerate(value):
                flat.update(flatten(item, f"{name}.{index}."))
        else:
            flat[name] = value
    return flat


class RunLogger:
    """Logs to one MLflow run through an explicit client; metrics go in batches, optionally in the background."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self._pending: list[Any] = []

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (flattened) params in one batch."""
        items = [Param(key, str(value)) for key, value in flatten(params).items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0, synchronous: bool = True) -> None:
        """Log numeric metrics in one batch (one database write, not one per metric).

        synchronous=False queues the batch on MLflow's background logger so a training loop never waits
        on the store; flush() (called when the run ends, also on failure) waits for the queue.
        """
        now = int(time.time() * 1000)
        items = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        for start in range(0, len(items), MAX_BATCH):
            operation = self.client.log_batch(self.run_id, metrics=items[start : start + MAX_BATCH], synchronous=synchronous)
            if not synchronous:
                self._pending.append(operation)

    def logged_steps(self, key: str) -> set[int]:
        """Steps of `key` already in the run (to fill gaps a killed process left in its background queue)."""
        return {metric.step for metric in self.client.get_metric_history(self.run_id, key)}

    def flush(self) -> None:
        """Wait until every queued background batch is in the store."""
        pending, self._pending = self._pending, []
        for operation in pending:
            operation.wait()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags in one batch."""
        self.client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def adopt(self, child_run_ids: list[str]) -> None:
        """Nest existing runs under this one (MLflow's parent tag), so the UI groups them by pipeline execution.

        The (model, seed) runs are created by separate DVC stages before the comparison exists; tagging them
        afterwards is how MLflow lets one parent span processes. Runs that were deleted are skipped.
        """
        for run_id in child_run_ids:
            if _run_exists(self.client, run_id):
                self.client.log_batch(run_id, tags=[RunTag("mlflow.parentRunId", self.run_id),
                                                    RunTag("convbench.comparison_run", self.run_id)])

    def log_dataset(self, name: str, digest: str, source: str, context: str) -> None:
        """Record the data the run used as an MLflow dataset input (the runs table's Dataset column, `dataset.*` search).

        `digest` is cut to MLflow's 36-character limit (a sha256's first 36 hex digits); the run's own
        tags keep the whole hash. `source` is a local path, recorded as MLflow's "local" source type.
        """
        dataset = Dataset(name=name, digest=digest[:MAX_DIGEST], source_type="local", source=json.dumps({"uri": source}))
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, [InputTag(DATASET_CONTEXT_TAG, context)])])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Copy a local file into the run's artifacts."""
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_model(self, model: Any, input_example: Any) -> None:
        """Log a torch model with an input example (MLflow infers the signature from it)."""
        import mlflow.pytorch
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mlflow.pytorch.log_model(
                model,
                name="model",
                input_example=input_example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            )


class UntrackedLogger(RunLogger):
    """Stands in for a run when tracking.required is false and the server is down: every call is a no-op."""

    def __init__(self) -> None:
        self.run_id = None  # type: ignore[assignment]
        self._pending = []

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Not tracked."""

    def logged_steps(self, key: str) -> set[int]:
        """Nothing is logged."""
        return set()

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0, synchronous: bool = True) -> None:
        """Not tracked."""

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Not tracked."""

    def adopt(self, child_run_ids: list[str]) -> None:
        """Not tracked."""

    def log_dataset(self, name: str, digest: str, source: str, context: str) -> None:
        """Not tracked."""

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Not tracked."""

    def log_model(self, model: Any, input_example: Any) -> None:
        """Not tracked."""


@contextmanager
def run(
    params: TrackingParams,
    dataset: str,
    run_name: str,
    tags: Mapping[str, Any],
    resume_run_id: str | None = None,
) -> Iterator[RunLogger]:
    """Open (or resume) a run in the dataset's experiment; it ends FINISHED, or FAILED if the block raises.

    MLflow's own errors (unreachable store, deleted experiment) become one-line ConvbenchErrors.
    """
    uri = tracking_uri(params)
    try:
        check_reachable(uri)
    except ConvbenchError as exc:
        if params.required:
            raise
        print(f"convbench: warning: {exc}; tracking.required is false, so this run is not tracked", file=sys.stderr)
        yield UntrackedLogger()
        return
    all_tags = {"convbench.git_commit": git_commit(), **params.tags, **{k: str(v) for k, v in tags.items()}}
    try:
        with _store_lock(uri):  # processes starting together must not both create the schema or the experiment
            mlflow.set_tracking_uri(uri)
            client = MlflowClient(uri)
            experiment = mlflow.set_experiment(experiment_name(params, dataset))
            if EXPERIMENT_KIND_TAG not in experiment.tags:  # a kind the user picked in the UI stays
                client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
            run_id = resume_run_id if resume_run_id and _run_exists(client, resume_run_id) else None
            active = mlflow.start_run(
                run_id=run_id,
                experiment_id=None if run_id else experiment.experiment_id,
                run_name=None if run_id else run_name,
                tags=None if run_id else all_tags,
            )
    except MlflowException as exc:
        raise _tracking_error(uri, exc) from None
    with active:
        logger = RunLogger(client, active.info.run_id)
        try:
            if run_id:
                logger.set_tags(all_tags)
            yield logger
            logger.flush()
        except MlflowException as exc:
            raise _tracking_error(uri, exc) from None
        except BaseException:
            _flush_quietly(logger)  # the run ends FAILED with every epoch that was logged
            raise


PARENT_TAG = "mlflow.parentRunId"


@contextmanager
def child_run(params: TrackingParams, dataset: str, run_name: str, parent_run_id: str | None,
              tags: Mapping[str, Any]) -> Iterator[RunLogger]:
    """A run nested under `parent_run_id` (MLflow's parent tag), opened through the client alone.

    Unlike `run`, it never touches MLflow's process-wide active run, so a tuning trial can open one inside
    the tune run's process, in a worker process, or on a Ray node. It ends FINISHED, or FAILED if the block raises.
    """
    uri = tracking_uri(params)
    if parent_run_id is None:  # the parent is untracked (tracking.required false and no server): so is the child
        yield UntrackedLogger()
        return
    all_tags = {"convbench.git_commit": git_commit(), **params.tags, **{k: str(v) for k, v in tags.items()},
                PARENT_TAG: parent_run_id}
    try:
        with _store_lock(uri):
            client = MlflowClient(uri)
            experiment = client.get_experiment_by_name(experiment_name(params, dataset))
            if experiment is None:
                raise ConvbenchError(f"MLflow experiment '{experiment_name(params, dataset)}' is gone from "
                                     f"'{redact(uri)}'; run `convbench tune` again")
            created = client.create_run(experiment.experiment_id, tags=all_tags, run_name=run_name)
    except MlflowException as exc:
        raise _tracking_error(uri, exc) from None
    logger = RunLogger(client, created.info.run_id)
    try:
        yield logger
        logger.flush()
    except BaseException:
        _flush_quietly(logger)
        _terminate_quietly(client, logger.run_id, "FAILED")
        raise
    try:
        client.set_terminated(logger.run_id, "FINISHED")
    except MlflowException as exc:
        raise _tracking_error(uri, exc) from None


def fail_running_children(params: TrackingParams, dataset: str, parent_run_id: str | None) -> int:
    """End as FAILED every run under `parent_run_id` still RUNNING (left so by a killed process); returns how many."""
    if parent_run_id is None:
        return 0
    client = MlflowClient(tracking_uri(params))
    stale = [run for run in child_runs(params, dataset, parent_run_id) if run["status"] == "RUNNING"]
    for run in stale:
        _terminate_quietly(client, run["run_id"], "FAILED")
    return len(stale)


def child_runs(params: TrackingParams, dataset: str, parent_run_id: str) -> list[dict[str, Any]]:
    """Name, status, params, metrics and tags of every run nested under `parent_run_id`."""
    client = MlflowClient(tracking_uri(params))
    experiment = client.get_experiment_by_name(experiment_name(params, dataset))
    if experiment is None:
        return []
    found = client.search_runs([experiment.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=5000)
    return [{"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status, "params": dict(r.data.params),
             "metrics": dict(r.data.metrics), "tags": dict(r.data.tags)} for r in found]


def _terminate_quietly(client: MlflowClient, run_id: str, status: str) -> None:
    try:
        client.set_terminated(run_id, status)
    except Exception:  # noqa: BLE001 - the error on its way out matters more
        pass


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive file lock next to a SQLite store (`<db>.lock`) while a run is opened; other stores need none."""
    if not uri.startswith("sqlite:///") or os.name != "posix":
        yield
        return
    import fcntl

    lock_path = Path(uri.removeprefix("sqlite:///")).with_suffix(".db.lock")
    if not lock_path.parent.is_dir():
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _flush_quietly(logger: RunLogger) -> None:
    """Flush queued metrics while another error is on its way out; that error is the one to report."""
    try:
        logger.flush()
    except Exception:  # noqa: BLE001 - the original failure matters more than a lost epoch row
        pass


def redact(text: str) -> str:
    """Hide the password or token in any 'scheme://user:secret@host' inside `text`."""
    return re.sub(r"(//[^/:@\s]+):[^@/\s]+@", r"\1:***@", text)


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not after MLflow's minutes of retries, when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    health = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1], path=parts.path.rstrip("/") + "/health")
    try:
        with urllib.request.urlopen(urllib.parse.urlunsplit(health), timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered; whatever the status, MLflow's own calls will report real problems
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConvbenchError(
            f"MLflow tracking server '{redact(uri)}' is unreachable ({redact(str(reason))}); start it (`make server`) or "
            f"point tracking.uri / $MLFLOW_TRACKING_URI at a running one"
        ) from None


def _tracking_error(uri: str, exc: MlflowException) -> ConvbenchError:
    first_line = str(exc.message if hasattr(exc, "message") else exc).strip().splitlines()[0]
    return ConvbenchError(
        f"MLflow tracking at '{redact(uri)}' failed ({redact(first_line)}); check tracking.uri in params.yaml or "
        f"$MLFLOW_TRACKING_URI"
    )


def _run_exists(client: MlflowClient, run_id: str) -> bool:
    try:
        client.get_run(run_id)
    except MlflowException:
        return False
    return True
