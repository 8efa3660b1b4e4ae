"""The only module that talks to MLflow: runs, params, metrics, artifacts and models.

Everything else hands plain values to a RunLogger. Runs that raise are ended FAILED, keeping
whatever was logged before the failure. A store that fails mid-run (a tracking server that died, a
locked SQLite file) does not stop the stage: the logger stops calling it, the stage finishes and
writes its files, and the run ends with one ConvbenchError (or a warning with tracking.required false).
Passwords in the URI never reach a message: MLflow's own "View run" lines and log records are redacted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

# MLflow's defaults retry a failing request 7 times with backoff up to 2 minutes, each waiting up to 120 s:
# a dead server then holds a finished stage for many minutes. convbench gives up in seconds instead
# (a user's own values of these variables win).
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
for _name, _value in HTTP_DEFAULTS.items():
    os.environ.setdefault(_name, _value)
# MLflow prints "View run ... at http://user:password@host/..." when a run ends; convbench prints its own, redacted.
os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"

import mlflow  # noqa: E402 - after the environment above, which MLflow reads
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag  # noqa: E402 - as mlflow
from mlflow.exceptions import MlflowException  # noqa: E402 - as mlflow
from mlflow.tracking import MlflowClient  # noqa: E402 - as mlflow

from pipeline.errors import ConvbenchError, redact, stop_requested  # noqa: E402 - redact is part of this module's API
from pipeline.ops.uris import sqlite_file, sqlite_uri  # noqa: E402 - imports follow the environment set above
from pipeline.params import TrackingParams  # noqa: E402 - imports follow the environment set above

try:
    from sqlalchemy.exc import SQLAlchemyError
except ImportError:  # mlflow-skinny has no SQL stores
    SQLAlchemyError = MlflowException  # type: ignore[assignment,misc]  # a stand-in class when SQLAlchemy is absent
from requests.exceptions import RequestException  # noqa: E402 - imports follow the environment set above

DEFAULT_STORE = "mlflow.db"
MAX_BATCH = 1000
# MLflow 3's experiment type, the tag its UI sets when a user picks "Machine learning" for an experiment;
# without it the UI may take a convbench experiment for a GenAI one and open on an empty traces overview.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
# The query that keeps MLflow 3.17's UI on its model-training pages (see training_runs_url); every link convbench
# prints carries it.
TRAINING_VIEW = "workflowType=machine_learning"
DESCRIPTION_TAG = "mlflow.note.content"  # what the UI shows as a run's Description (Markdown)
MAX_TAG_VALUE = 8000  # the longest tag value MLflow's stores accept (MAX_TAG_VAL_LENGTH)
SIGNIFICANT_DIGITS = 7  # metrics a reader compares by eye are rounded to this many (see `rounded`)
DATASET_CONTEXT_TAG = "mlflow.data.context"  # what MLflow's own log_input(dataset, context=...) writes
MAX_DIGEST = 36  # the longest dataset digest MLflow's stores accept (MAX_DATASET_DIGEST_SIZE)
# What a failing store raises: caught, remembered, and reported once the stage's work is done.
STORE_ERRORS = (MlflowException, SQLAlchemyError, RequestException)
FLUSH_ON_FAILURE_SECONDS = 5.0  # how long a failing stage waits for queued metrics before it gives up on them


class _Redact(logging.Filter):
    """Mask 'user:password@' in every record MLflow (or urllib3 under it) logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


for _handler in logging.getLogger("mlflow").handlers:
    _handler.addFilter(_Redact())
logging.getLogger("urllib3.connectionpool").addFilter(_Redact())
# urllib3 warns once per retry ("Retrying (Retry(total=1 ...)) after connection broken"); the failure itself
# reaches the user as one line, so the retries are not shown.
logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def _make_store_folder(db_uri: str) -> None:
    """MLflow's own step before it opens a SQL store, reading the file's folder as SQLAlchemy does: MLflow makes
    the folder of the URI's text undecoded, so a store in '/tmp/a?b' (written '/tmp/a%3Fb') would leave an empty
    '/tmp/a%3Fb' folder beside the project."""
    path = sqlite_path(db_uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


try:
    import mlflow.store.db.utils as _db_utils

    if hasattr(_db_utils, "_make_parent_dirs_if_sqlite"):
        _db_utils._make_parent_dirs_if_sqlite = _make_store_folder
except ImportError:  # mlflow-skinny has no SQL stores
    pass


def tracking_uri(params: TrackingParams, project_root: Path | None = None) -> str:
    """params.tracking.uri, else $MLFLOW_TRACKING_URI, else MLflow's default sqlite:///mlflow.db in the project."""
    if params.uri:
        return params.uri
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    root = (project_root or Path.cwd()).resolve()
    return sqlite_uri(root / DEFAULT_STORE)


def experiment_name(params: TrackingParams, dataset: str) -> str:
    """One experiment per dataset, e.g. 'convbench-mnist5k'."""
    return f"{params.experiment_prefix}-{dataset}"


def training_runs_url(params: TrackingParams, dataset: str, address: str) -> str:
    """The page of the MLflow UI served at `address` that lists this dataset's training runs.

    MLflow 3.17's UI chooses between its GenAI pages and its model-training pages by a switch of its own: the
    `workflowType` query of the page's address, else the choice the browser kept from the sidebar's switch
    (localStorage `mlflow.workflowType_v1`), else GenAI. It ignores the experiment-kind tag, so a plain address
    opens a convbench experiment on an empty traces overview; this link sets the switch.
    """
    try:
        found = MlflowClient(tracking_uri(params)).get_experiment_by_name(experiment_name(params, dataset))
    except MlflowException:
        found = None
    page = f"experiments/{found.experiment_id}" if found else "experiments"
    return f"{address.rstrip('/')}/#/{page}?{TRAINING_VIEW}"


def run_url(address: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI served at `address`, in the model-training view.

    A run page follows the same switch as the experiment pages. Without it (the links in MLflow's own runs table
    drop it) a run opens on the GenAI pages, and a run with no logged model, such as the comparison, is filed
    under "Evaluations" there.
    """
    return f"{address.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_VIEW}"


def comparison_run_url(params: TrackingParams, dataset: str, address: str) -> str | None:
    """The page (training view) of the dataset's newest finished comparison run with params.tags, or None.

    Matching params.tags keeps a sweep cell on its own comparison when cells share a tracking server. A store
    that cannot answer (or a SQLite file that does not exist yet) gives None: the link is a convenience.
    """
    uri = tracking_uri(params)
    store = sqlite_path(uri)
    if store is not None and not store.is_file():  # MLflow would create an empty store to answer
        return None
    try:
        check_reachable(uri, timeout=2.0)
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(experiment_name(params, dataset))
        if experiment is None:
            return None
        found = client.search_runs(
            [experiment.experiment_id],
            "tags.`convbench.kind` = 'comparison' AND attributes.status = 'FINISHED'",
            max_results=200,
            order_by=["attributes.start_time DESC"],
        )
    except (ConvbenchError, *STORE_ERRORS):
        return None
    wanted = {key: str(value) for key, value in params.tags.items()}
    for candidate in found:  # matched here, not in the filter: a tag value may hold quotes
        if all(candidate.data.tags.get(key) == value for key, value in wanted.items()):
            return run_url(address, experiment.experiment_id, candidate.info.run_id)
    return None


def rounded(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """`value` to `digits` significant digits, never fewer than its integer part (a count stays exact).

    Means and bounds computed in binary floats carry noise in their last digits (0.9739999999999999 for the mean
    of 0.975, 0.973 and 0.974), and float32 values widened to float64 more (0.9111111164093018); MLflow shows them
    as logged. Seven digits, about float32's precision, drop that noise, keep every digit such figures have (an
    accuracy mean over 3 seeds of 10,000 test images moves in steps of 0.0000333), and stay within one part in a
    million of the exact value, so a rounded metric still equals the metrics files' to pytest.approx's default.
    """
    if not math.isfinite(value) or value == 0 or float(value).is_integer():
        return float(value)
    return round(float(value), max(0, digits - 1 - math.floor(math.log10(abs(value)))))


def git_commit(cwd: Path | None = None) -> str:
    """HEAD's commit hash (with '-dirty' if the tree has changes), or 'unknown' outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(  # dvc.lock and metrics/ change with every run by design; they are not source changes
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":(exclude)dvc.lock",
                ":(exclude)metrics",
            ],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
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


MAX_KEY = 250  # the longest metric, param or tag name MLflow's stores accept (MAX_ENTITY_KEY_LENGTH)
_KEY_CHARACTERS = re.compile(r"[^\w.\- /]")  # MLflow's allowed characters, less the colon Windows refuses


def metric_key(key: str) -> str:
    """`key` as a metric name every MLflow store accepts: unchanged when it already is one; else, as a name built
    from a user's class name ("test_accuracy_class_men's"), each refused character (and any '/' or '.' that would
    make the name a file path MLflow refuses) turned into '_', cut to fit, and suffixed with a short hash of the
    original, so two names that differ only in what was replaced never share one metric."""
    cleaned = _KEY_CHARACTERS.sub("_", key)
    cleaned = re.sub(r"/+", "/", cleaned).strip("/")
    cleaned = "/".join("_" if part in (".", "..") else part for part in cleaned.split("/")) or "_"
    if cleaned == key and len(key) <= MAX_KEY:
        return key
    import hashlib

    suffix = "-" + hashlib.sha256(key.encode()).hexdigest()[:8]
    return cleaned[: MAX_KEY - len(suffix)] + suffix


class RunLogger:
    """Logs to one MLflow run through an explicit client; metrics go in batches, optionally in the background.

    The first store error is kept in `failure` and every later call is skipped, so a stage whose tracking
    server died finishes its own work in seconds; `run()` reports the failure when the stage is done.
    """

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self._id = run_id
        self.run_id: str | None = run_id  # None for an untracked run: what callers record and check
        self.failure: BaseException | None = None
        self._queue: queue.Queue[list[Metric]] | None = None

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the store unless it already failed; a store error is remembered, not raised."""
        if self.failure is not None:
            return None
        try:
            return method(*args, **kwargs)
        except STORE_ERRORS as exc:
            if stop_requested():  # the store call was interrupted (MLflow makes that a store error): stop, not go on
                raise KeyboardInterrupt from None
            if self.failure is None:
                self.failure = exc
            return None

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (flattened) params in one batch."""
        items = [Param(key, str(value)) for key, value in flatten(params).items()]
        for start in range(0, len(items), 100):
            self._call(self.client.log_batch, self._id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0, synchronous: bool = True) -> None:
        """Log numeric metrics in one batch (one database write, not one per metric).

        synchronous=False queues the batch for a background thread so a training loop never waits on the
        store; flush() (called when the run ends, also on failure) waits for the queue.
        """
        now = int(time.time() * 1000)
        items = [Metric(metric_key(key), float(value), now, step) for key, value in metrics.items()]
        for start in range(0, len(items), MAX_BATCH):
            batch = items[start : start + MAX_BATCH]
            if synchronous:
                self._call(self.client.log_batch, self._id, metrics=batch)
            elif self.failure is None:
                self._background().put(batch)

    def _background(self) -> queue.Queue[list[Metric]]:
        """The queue a daemon thread writes from, in order (a daemon: a dead store cannot hold the process open)."""
        if self._queue is None:
            self._queue = queue.Queue()
            threading.Thread(
                target=self._write_queued, args=(self._queue,), name="convbench-metrics", daemon=True
            ).start()
        return self._queue

    def _write_queued(self, batches: queue.Queue[list[Metric]]) -> None:
        while True:
            batch = batches.get()
            try:
                self._call(self.client.log_batch, self._id, metrics=batch)  # skipped once the store failed
            finally:
                batches.task_done()

    def logged_steps(self, key: str) -> set[int]:
        """Steps of `key` already in the run (to fill gaps a killed process left in its background queue)."""
        history = self._call(self.client.get_metric_history, self._id, key)
        return {metric.step for metric in history or []}

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued batch is written or skipped (at most `timeout` seconds); False if time ran out."""
        if self._queue is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = 1.0 if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    return False
                self._queue.all_tasks_done.wait(min(left, 1.0))  # short waits: a signal is handled at once
        return True

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags in one batch."""
        self._call(self.client.log_batch, self._id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def describe(self, text: str) -> None:
        """The run's Description in the UI (Markdown), cut to what MLflow's stores accept."""
        if len(text) > MAX_TAG_VALUE:
            text = text[: MAX_TAG_VALUE - 1].rsplit(" ", 1)[0] + "…"
        self.set_tags({DESCRIPTION_TAG: text})

    def adopt(self, child_run_ids: list[str]) -> None:
        """Nest existing runs under this one (MLflow's parent tag), so the UI groups them by pipeline execution.

        The (model, seed) runs are created by separate DVC stages before the comparison exists; tagging them
        afterwards is how MLflow lets one parent span processes. Runs that were deleted are skipped.
        """
        for run_id in child_run_ids:
            if self._call(_run_exists, self.client, run_id):
                self._call(
                    self.client.log_batch,
                    run_id,
                    tags=[RunTag("mlflow.parentRunId", self._id), RunTag("convbench.comparison_run", self._id)],
                )

    def log_dataset(self, name: str, digest: str, source: str, context: str) -> None:
        """Record the data the run used as an MLflow dataset input (the runs table's Dataset column, `dataset.*` search).

        `digest` is cut to MLflow's 36-character limit (a sha256's first 36 hex digits); the run's own
        tags keep the whole hash. `source` is a local path, recorded as MLflow's "local" source type.
        """
        dataset = Dataset(
            name=name, digest=digest[:MAX_DIGEST], source_type="local", source=json.dumps({"uri": source})
        )
        inputs = [DatasetInput(dataset, [InputTag(DATASET_CONTEXT_TAG, context)])]

        def log_inputs() -> None:
            try:
                self.client.log_inputs(self._id, datasets=inputs)
            except MlflowException as exc:
                # MLflow's SQL store creates a dataset row on first use without a lock: two runs logging the same
                # dataset at once (parallel sweep trials) collide on its unique key. The row now exists; log again.
                if "UNIQUE constraint" not in str(exc):
                    raise
                time.sleep(0.5)
                self.client.log_inputs(self._id, datasets=inputs)

        self._call(log_inputs)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Copy a local file into the run's artifacts."""
        self._call(self.client.log_artifact, self._id, str(path), artifact_path)

    def log_model(self, model: Any, input_example: Any) -> None:
        """Log a torch model with an input example (MLflow infers the signature from it)."""
        import mlflow.pytorch
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._call(
                mlflow.pytorch.log_model,
                model,
                name="model",
                input_example=input_example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            )


class UntrackedLogger(RunLogger):
    """Stands in for a run when tracking.required is false and the server is down: every call is a no-op."""

    def __init__(self) -> None:
        self.run_id = None
        self.failure = None
        self._queue = None

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

    MLflow's own errors (unreachable or locked store, deleted experiment) become one-line ConvbenchErrors.
    One that happens inside the block is raised when the block is done (its files written), or, with
    tracking.required false, printed as a warning.
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
    client, experiment, active, run_id = _start_run(
        uri, experiment_name(params, dataset), run_name, all_tags, resume_run_id
    )
    logger = RunLogger(client, active.info.run_id)
    completed = False
    try:
        if run_id:
            logger.set_tags(all_tags)
        yield logger
        logger.flush()
        completed = True
    finally:
        if not completed:
            logger.flush(FLUSH_ON_FAILURE_SECONDS)  # the run ends FAILED with every epoch that was logged
        _end_run(logger, "FINISHED" if completed and logger.failure is None else "FAILED")
    if logger.failure is None:
        if uri.startswith(("http://", "https://")):
            experiment_url = f"{redact(uri).rstrip('/')}/#/experiments/{experiment.experiment_id}"
            print(
                f"🏃 View run {run_name} at: {experiment_url}/runs/{logger.run_id}?{TRAINING_VIEW}"
            )  # MLflow's, redacted
        return
    error = _tracking_error(uri, logger.failure, during=run_name)
    if params.required:
        raise error
    print(f"convbench: warning: {error}; tracking.required is false, so the stage succeeds", file=sys.stderr)


def _start_run(
    uri: str, experiment: str, run_name: str, tags: dict[str, str], resume_run_id: str | None
) -> tuple[MlflowClient, Any, Any, str | None]:
    """Start a new run (or resume `resume_run_id` if the store still has it) as MLflow's active run."""
    try:
        with _store_lock(uri):  # processes starting together must not both create the schema or the experiment
            mlflow.set_tracking_uri(uri)
            client = MlflowClient(uri)
            found = _training_experiment(client, experiment)
            run_id = resume_run_id if resume_run_id and _run_exists(client, resume_run_id) else None
            active = mlflow.start_run(
                run_id=run_id,
                experiment_id=None if run_id else found.experiment_id,
                run_name=None if run_id else run_name,
                tags=None if run_id else tags,
            )
    except STORE_ERRORS as exc:
        raise _tracking_error(uri, exc) from None
    except ImportError as exc:  # postgresql:// or mysql:// without its driver
        raise ConvbenchError(
            f"tracking URI '{redact(uri)}' needs the Python package '{exc.name}', which is not installed; install it "
            f"in this environment (for PostgreSQL: pip install 'psycopg[binary]'), or point tracking.uri / "
            f"$MLFLOW_TRACKING_URI at another store"
        ) from None
    return client, found, active, run_id


def _training_experiment(client: MlflowClient, name: str, attempts: int = 3) -> Any:
    """The dataset's experiment, created and tagged as a training experiment if new.

    Processes sharing a tracking server (a Ray sweep's trials) can create or tag it at the same moment;
    the server's unique keys refuse the second writer, which then finds the first one's rows and goes on.
    """
    for attempt in range(attempts):
        try:
            experiment = mlflow.set_experiment(name)
            if EXPERIMENT_KIND_TAG not in experiment.tags:  # a kind the user picked in the UI stays
                client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
            return experiment
        except MlflowException as exc:
            if attempt + 1 == attempts or not any(
                key in str(exc) for key in ("UNIQUE constraint", "RESOURCE_ALREADY_EXISTS", "already exists")
            ):
                raise
            time.sleep(0.5)


def _end_run(logger: RunLogger, status: str) -> None:
    """End the active run; after a store failure, with one quick attempt instead of MLflow's retries."""
    try:
        with _one_quick_attempt() if logger.failure is not None else nullcontext():
            mlflow.end_run(status)  # pops MLflow's active run before it calls the store
    except STORE_ERRORS as exc:
        if logger.failure is None:
            logger.failure = exc


@contextmanager
def _one_quick_attempt(timeout: int = 3) -> Iterator[None]:
    """MLflow HTTP calls in the block try once, waiting `timeout` seconds (MLflow reads these per request)."""
    names = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout)})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


PARENT_TAG = "mlflow.parentRunId"


@contextmanager
def child_run(
    params: TrackingParams, dataset: str, run_name: str, parent_run_id: str | None, tags: Mapping[str, Any]
) -> Iterator[RunLogger]:
    """A run nested under `parent_run_id` (MLflow's parent tag), opened through the client alone.

    Unlike `run`, it never touches MLflow's process-wide active run, so a tuning trial can open one inside
    the tune run's process, in a worker process, or on a Ray node. It ends FINISHED, or FAILED if the block raises.
    """
    uri = tracking_uri(params)
    if parent_run_id is None:  # the parent is untracked (tracking.required false and no server): so is the child
        yield UntrackedLogger()
        return
    all_tags = {
        "convbench.git_commit": git_commit(),
        **params.tags,
        **{k: str(v) for k, v in tags.items()},
        PARENT_TAG: parent_run_id,
    }
    try:
        with _store_lock(uri):
            client = MlflowClient(uri)
            experiment = client.get_experiment_by_name(experiment_name(params, dataset))
            if experiment is None:
                raise ConvbenchError(
                    f"MLflow experiment '{experiment_name(params, dataset)}' is gone from "
                    f"'{redact(uri)}'; run `convbench tune` again"
                )
            created = client.create_run(experiment.experiment_id, tags=all_tags, run_name=run_name)
    except MlflowException as exc:
        raise _tracking_error(uri, exc) from None
    logger = RunLogger(client, created.info.run_id)
    try:
        yield logger
        logger.flush()
    except BaseException:
        logger.flush(FLUSH_ON_FAILURE_SECONDS)  # the trial's run ends FAILED with what it logged
        _terminate_quietly(client, created.info.run_id, "FAILED")
        raise
    try:
        client.set_terminated(created.info.run_id, "FINISHED")
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
    return [
        {
            "run_id": r.info.run_id,
            "name": r.info.run_name,
            "status": r.info.status,
            "params": dict(r.data.params),
            "metrics": dict(r.data.metrics),
            "tags": dict(r.data.tags),
        }
        for r in found
    ]


def _terminate_quietly(client: MlflowClient, run_id: str, status: str) -> None:
    try:
        client.set_terminated(run_id, status)
    except Exception:  # noqa: BLE001 - the error on its way out matters more
        pass


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive file lock next to a SQLite store (`<db>.lock`) while a run is opened; other stores need none."""
    store = sqlite_path(uri)
    if store is None or os.name != "posix":
        yield
        return
    import fcntl

    lock_path = store.with_suffix(".db.lock")
    if not lock_path.parent.is_dir():
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a 'sqlite:///path' URI (None for other stores)."""
    path = sqlite_file(uri)
    return Path(path) if path is not None else None


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not after MLflow's minutes of retries, when an HTTP tracking server does not answer.

    A SQLite URI without a file ('sqlite:///', 'sqlite://') fails too: MLflow would keep the runs in memory
    and lose them when the process ends.
    """
    if uri.startswith("sqlite:") and sqlite_path(uri) is None:
        raise ConvbenchError(
            f"tracking URI '{redact(uri)}' names no database file, so every run would be lost; set tracking.uri in "
            f"params.yaml or $MLFLOW_TRACKING_URI to a file such as sqlite:///mlflow.db, or unset it"
        )
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.parse
    import urllib.request

    try:
        parts = urllib.parse.urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConvbenchError(
            f"tracking URI '{redact(uri)}' is not a valid URL ({exc}); fix tracking.uri in params.yaml or "
            f"$MLFLOW_TRACKING_URI"
        ) from None
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


def _tracking_error(uri: str, exc: BaseException, during: str | None = None) -> ConvbenchError:
    """One line naming the store, what went wrong and the fix; `during` names a run whose stage did finish."""
    reason = _reason(exc)
    store = sqlite_path(uri)
    lowered = reason.lower()
    if store is not None and "locked" in lowered:
        problem = (
            f"MLflow store {store} is locked by another process ({reason}); wait for that process to finish "
            f"(or stop it) and run again"
        )
    elif store is not None and ("not a database" in lowered or "malformed" in lowered):
        problem = (
            f"MLflow store {store} is damaged ({reason}); move it aside (`mv {store} {store}.broken`) to "
            f"start a new store, or point tracking.uri / $MLFLOW_TRACKING_URI at a good one"
        )
    elif store is not None and ("unable to open" in lowered or "readonly" in lowered or "read-only" in lowered):
        problem = (
            f"cannot write MLflow store {store} ({reason}); make sure its folder exists and is writable, or "
            f"point tracking.uri / $MLFLOW_TRACKING_URI elsewhere"
        )
    elif during is None:
        problem = (
            f"MLflow tracking at '{redact(uri)}' failed ({reason}); check tracking.uri in params.yaml or "
            f"$MLFLOW_TRACKING_URI"
        )
    else:
        problem = f"MLflow tracking at '{redact(uri)}' failed ({reason})"
    if during is None:
        return ConvbenchError(problem)
    return ConvbenchError(
        f"{problem}, so run '{during}' is incomplete in MLflow (the stage's files were written); once tracking works "
        f"again (`make server` for a server), run the stage again, or set tracking.required: false to skip tracking"
    )


def _reason(exc: BaseException) -> str:
    """The short cause of a store error: 'Connection refused', 'database is locked', or its first line."""
    if isinstance(exc, SQLAlchemyError) and getattr(exc, "orig", None) is not None:
        text = str(exc.orig)  # type: ignore[attr-defined]  # DBAPIError's cause, checked just above
    else:
        text = str(getattr(exc, "message", None) or exc)
    errno_cause = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    caused_by = re.findall(r"'([^']+)'\)", text.partition("Caused by")[2])
    if "Max retries exceeded" in text and errno_cause:
        text = errno_cause.group(1)
    elif "Max retries exceeded" in text and caused_by:
        text = caused_by[-1]  # a server killed mid-request: 'Connection reset by peer' or 'Remote end closed ...'
    elif "Read timed out" in text or "timeout exception" in text:
        text = f"no answer within {os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT', '?')} s"
    lines = text.strip().splitlines()
    first = lines[0].strip() if lines else type(exc).__name__
    return redact(first if len(first) <= 240 else first[:240].rsplit(" ", 1)[0] + " ...")


def _run_exists(client: MlflowClient, run_id: str) -> bool:
    """Whether the store has this run; a store that fails to answer raises."""
    try:
        client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True
