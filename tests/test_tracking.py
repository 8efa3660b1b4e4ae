"""MLflow tracking against real sqlite stores: where runs go, failures kept, runs resumed."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline import tracking
from pipeline.errors import ConvbenchError
from pipeline.params import TrackingParams, validate_params
from tests.helpers import params_with


def tracking_params(uri: str | None) -> TrackingParams:
    return validate_params(params_with({"tracking.uri": uri})).tracking


def test_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri(tracking_params(None), tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/env.db")
    assert tracking.tracking_uri(tracking_params(None), tmp_path) == "sqlite:////elsewhere/env.db"
    assert tracking.tracking_uri(tracking_params("sqlite:////x/params.db"), tmp_path) == "sqlite:////x/params.db"


def test_flatten_names_nested_keys() -> None:
    flat = tracking.flatten({"a": {"b": 1, "c": [{"d": 2}, {"d": 3}]}, "e": [1, 2]})
    assert flat == {"a.b": 1, "a.c.0.d": 2, "a.c.1.d": 3, "e": [1, 2]}


def test_failed_block_marks_run_failed_and_keeps_what_was_logged(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    params = tracking_params(uri)
    run_id = ""
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.run(params, "digits", "cnn-s0", {"convbench.kind": "train"}) as logger:
            run_id = logger.run_id
            logger.log_params({"train": {"epochs": 3}})
            for epoch in (1, 2):
                logger.log_metrics({"val_accuracy": 0.5 + epoch / 10}, step=epoch)
            raise RuntimeError("boom")
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.params["train.epochs"] == "3"
    assert [m.value for m in client.get_metric_history(run_id, "val_accuracy")] == [0.6, 0.7]
    assert client.get_experiment(run.info.experiment_id).name == "convbench-digits"


def test_resume_logs_into_the_same_run_and_recreates_a_lost_one(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    params = tracking_params(uri)
    with tracking.run(params, "digits", "mlp-s1", {"convbench.kind": "train"}) as logger:
        logger.log_metrics({"val_accuracy": 0.9}, step=1)
        first = logger.run_id
    with tracking.run(params, "digits", "mlp-s1", {"convbench.kind": "train"}, resume_run_id=first) as logger:
        logger.log_metrics({"test_accuracy": 0.88})
        assert logger.run_id == first
    run = MlflowClient(uri).get_run(first)
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"val_accuracy": 0.9, "test_accuracy": 0.88}
    with tracking.run(params, "digits", "mlp-s1", {}, resume_run_id="0" * 32) as logger:
        assert logger.run_id != first


def test_unusable_store_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ConvbenchError) as caught:
        with tracking.run(tracking_params("bogus://nowhere"), "digits", "cnn-s0", {}):
            pass
    message = str(caught.value)
    assert message.startswith("MLflow tracking at 'bogus://nowhere' failed (")
    assert message.endswith("check tracking.uri in params.yaml or $MLFLOW_TRACKING_URI") and "\n" not in message
