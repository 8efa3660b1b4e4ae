"""MLflow tracking against real sqlite stores: where runs go, failures kept, runs resumed."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.artifacts import paths
from pipeline.errors import ConvbenchError
from pipeline.ops import tracking
from pipeline.params import TrackingParams, load_params, validate_params
from pipeline.stages.download import download
from pipeline.stages.prepare import prepare
from tests.conftest import Workspace
from tests.helpers import env, free_port, mlflow_rest, params_with, run, write_params


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


def test_four_processes_train_into_one_sqlite_store_without_losing_runs(tmp_path: Path) -> None:
    write_params(
        tmp_path / "params.yaml",
        {"data.name": "digits", "train.epochs": 4, "train.seeds": [0, 1], "tracking.log_model": False},
    )
    for args in (["download"], ["prepare"]):
        assert run(["convbench", *args], tmp_path).returncode == 0
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    cells = [("cnn", 0), ("cnn", 1), ("mlp", 0), ("mlp", 1)]
    processes = [
        subprocess.Popen(
            ["convbench", "train", "-m", m, "-s", str(s)],
            cwd=tmp_path,
            env=env(MLFLOW_TRACKING_URI=store),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m, s in cells
    ]
    outcomes = [(p.communicate(timeout=400), p.returncode) for p in processes]
    assert [code for _out, code in outcomes] == [0, 0, 0, 0], [out[1][-2000:] for out, _ in outcomes]
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("convbench-digits").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["cnn-s0", "cnn-s1", "mlp-s0", "mlp-s1"]
    for finished in runs:
        assert finished.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(finished.info.run_id, "val_accuracy")] == [1, 2, 3, 4]
        assert {"train_images_per_second", "train_seconds", "seconds_to_final_accuracy"} <= set(finished.data.metrics)


def test_credentials_in_the_tracking_uri_never_reach_messages(tmp_path: Path) -> None:
    secret_uri = "http://alice:s3cr3t-token@127.0.0.1:9"
    with pytest.raises(ConvbenchError) as caught:
        with tracking.run(tracking_params(secret_uri), "digits", "cnn-s0", {}):
            pass
    assert "s3cr3t-token" not in str(caught.value) and "alice:***@127.0.0.1:9" in str(caught.value)


SECRET = "s3cr3t-pw"


def test_params_dumps_mask_the_password_in_the_tracking_uri() -> None:
    """The report's params block and every MLflow param come from dumps; the password is never in them."""
    import yaml

    params = validate_params(params_with({"tracking.uri": f"http://alice:{SECRET}@tracking.internal:5000"}))
    assert params.tracking.uri == f"http://alice:{SECRET}@tracking.internal:5000", "convbench itself still needs it"
    for dumped in (params.model_dump(), params.model_dump(mode="json"), params.tracking.model_dump()):
        assert SECRET not in str(dumped) and "alice:***@tracking.internal" in str(dumped)
    assert SECRET not in yaml.safe_dump(params.model_dump(mode="json"))  # the report's params block
    assert SECRET not in params.model_dump_json()


def _server_project(tmp_path: Path, **overrides: object) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    write_params(
        project / "params.yaml",
        {
            "data.name": "digits",
            "train.epochs": 2,
            "train.seeds": [0],
            "evaluate.min_run_time": 0.05,
            "tracking.log_model": False,
            **overrides,
        },
    )
    params = load_params(project / "params.yaml")
    with contextlib.chdir(project):  # the real stage functions, in-process: the CLI runs below are what is tested
        download(params)
        prepare(params)
    return project


def test_pipeline_logs_to_a_real_tracking_server_and_fails_early_once_it_stops(
    tmp_path: Path, mlflow_server: tuple[str, subprocess.Popen]
) -> None:
    uri, server = mlflow_server
    secret_uri = uri.replace("http://", f"http://alice:{SECRET}@")  # the server ignores it; MLflow would print it
    project = _server_project(tmp_path)
    for args in (["train", "-m", "mlp", "-s", "0"], ["evaluate", "-m", "mlp", "-s", "0"]):
        result = run(["convbench", *args], project, MLFLOW_TRACKING_URI=secret_uri)
        assert result.returncode == 0, result.stderr
        assert SECRET not in result.stdout + result.stderr
        shown = re.escape(f"View run mlp-s0 at: {uri.replace('http://', 'http://alice:***@')}/#/experiments/")
        assert re.search(rf"{shown}\d+/runs/[0-9a-f]{{32}}\?workflowType=machine_learning\n", result.stdout), (
            result.stdout
        )
    experiment = mlflow_rest(uri, "experiments/get-by-name?experiment_name=convbench-digits")["experiment"]
    runs = mlflow_rest(uri, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    (found,) = [r for r in runs if r["info"]["run_name"] == "mlp-s0"]
    assert found["info"]["status"] == "FINISHED"
    assert any(m["key"] == "test_accuracy" for m in found["data"]["metrics"])

    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
    started = time.monotonic()
    stopped = run(["convbench", "train", "-m", "cnn", "-s", "0"], project, MLFLOW_TRACKING_URI=secret_uri)
    assert time.monotonic() - started < 60, "fails in seconds, not after retries"
    assert stopped.returncode == 1 and "Traceback" not in stopped.stderr
    assert stopped.stderr.strip() == (
        f"convbench: error: MLflow tracking server '{uri.replace('http://', 'http://alice:***@')}' is unreachable "
        "([Errno 111] Connection refused); "
        "start it (`make server`) or point tracking.uri / $MLFLOW_TRACKING_URI at a running one"
    )
    assert (
        not (project / paths.checkpoint("digits", "cnn", 0)).exists()
        and not (project / paths.resume_state("digits", "cnn", 0)).exists()
    )


def test_unreachable_server_with_tracking_not_required_trains_and_warns(tmp_path: Path) -> None:
    project = _server_project(tmp_path, **{"tracking.required": False})
    uri = f"http://127.0.0.1:{free_port()}"
    result = run(["convbench", "train", "-m", "mlp", "-s", "0"], project, MLFLOW_TRACKING_URI=uri)
    assert result.returncode == 0, result.stderr
    assert "convbench: warning: MLflow tracking server" in result.stderr and "is not tracked" in result.stderr
    assert (project / paths.checkpoint("digits", "mlp", 0)).is_file() and (
        project / paths.curves("digits", "mlp", 0)
    ).is_file()


def test_experiment_is_marked_for_model_training_and_a_kind_set_by_hand_stays(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    params = tracking_params(uri)
    with tracking.run(params, "digits", "cnn-s0", {}) as logger:
        experiment_id = MlflowClient(uri).get_run(logger.run_id).info.experiment_id
    client = MlflowClient(uri)
    assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    client.set_experiment_tag(experiment_id, "mlflow.experimentKind", "classification")  # the user's pick in the UI
    with tracking.run(params, "digits", "cnn-s1", {}):
        pass
    assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "classification"
    assert tracking.training_runs_url(params, "digits", "http://127.0.0.1:5000/") == (
        f"http://127.0.0.1:5000/#/experiments/{experiment_id}?workflowType=machine_learning"
    )
    assert tracking.training_runs_url(params, "cifar10", "http://h:1").endswith(
        "/#/experiments?workflowType=machine_learning"
    )


def test_rounded_keeps_seven_significant_digits_and_counts_whole() -> None:
    assert tracking.rounded((0.975 + 0.973 + 0.974) / 3) == 0.974  # 0.9739999999999999 as computed
    assert tracking.rounded(0.9111111164093018) == 0.9111111  # a float32 accuracy widened to float64
    assert str(tracking.rounded(0.02160604053625562)) == "0.02160604"
    assert (
        tracking.rounded(-0.001388888888888889) == -0.001388889 and tracking.rounded(1.6765693647e-05) == 1.676569e-05
    )
    assert (
        tracking.rounded(12345.678) == 12345.68 and tracking.rounded(1234567.8) == 1234568.0
    )  # the integer part stays
    assert tracking.rounded(123456789.0) == 123456789.0 and tracking.rounded(0.0) == 0.0  # counts are exact
    assert math.isnan(tracking.rounded(math.nan)) and tracking.rounded(math.inf) == math.inf
    exact = (
        [k / 360 for k in range(1, 361)] + [1 + k / 7e6 for k in range(100)] + [0.1 + k * 1.3e-8 for k in range(100)]
    )
    assert all(tracking.rounded(v) == pytest.approx(v) for v in exact), "within one part in a million"


def test_comparison_link_opens_this_cells_newest_finished_comparison_on_the_training_pages(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    mine = validate_params(params_with({"tracking.uri": uri, "tracking.tags": {"sweep_cell": "it's-a"}})).tracking
    other = validate_params(params_with({"tracking.uri": uri, "tracking.tags": {"sweep_cell": "b"}})).tracking
    comparison = {"convbench.kind": "comparison"}
    assert tracking.comparison_run_url(mine, "digits", "http://h:1") is None
    assert not (tmp_path / "store.db").exists(), "looking for a link creates no store"
    with tracking.run(mine, "digits", "comparison", comparison) as logger:
        older = logger.run_id
    with tracking.run(mine, "digits", "cnn-s0", {"convbench.kind": "train"}) as logger:
        pass
    with tracking.run(other, "digits", "comparison", comparison) as logger:  # another sweep cell's, newer
        theirs = logger.run_id
    with pytest.raises(RuntimeError), tracking.run(mine, "digits", "comparison", comparison):  # failed: no link
        raise RuntimeError("report failed")
    experiment_id = MlflowClient(uri).get_run(older).info.experiment_id

    link = tracking.comparison_run_url(mine, "digits", "http://127.0.0.1:5000/")
    assert link == f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{older}?workflowType=machine_learning"
    page = urllib.parse.urlsplit(urllib.parse.urlsplit(link).fragment)
    assert page.path == f"/experiments/{experiment_id}/runs/{older}"
    assert urllib.parse.parse_qs(page.query) == {"workflowType": ["machine_learning"]}
    assert tracking.comparison_run_url(other, "digits", "http://h:1") == tracking.run_url(
        "http://h:1", experiment_id, theirs
    )
    with tracking.run(mine, "digits", "comparison", comparison) as logger:
        newest = logger.run_id
    assert tracking.comparison_run_url(mine, "digits", "http://h:1").endswith(
        f"/runs/{newest}?workflowType=machine_learning"
    )
    assert tracking.comparison_run_url(mine, "cifar10", "http://h:1") is None, "no experiment for that dataset"


def test_comparison_run_carries_the_params_the_verdict_and_rounded_figures(workspace: Workspace) -> None:
    client = MlflowClient(workspace.tracking_uri)
    experiment = client.get_experiment_by_name("convbench-digits")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`convbench.kind` = 'comparison'")
    manifest = json.loads((workspace.root / paths.prepared_manifest("digits")).read_text())
    params = run.data.params
    assert {k: params[k] for k in ("models", "reference", "seeds", "data.name", "train.epochs", "tune.trials")} == {
        "models": "['cnn', 'mlp']",
        "reference": "cnn",
        "seeds": "[0, 1]",
        "data.name": "digits",
        "train.epochs": "3",
        "tune.trials": "0",
    }
    assert params["data.sha256"] == manifest["sha256"] and params["report.confidence"] == "0.95"
    assert (
        params["architecture.cnn.settings.conv.0.channels"] == "32"
        and params["architecture.mlp.settings.match"] == "params"
    )
    assert params["evaluate.rounds"] == "3" and params["probes.run"] == "['permutation']"
    assert not any(key.startswith(("tracking", "recipe.")) for key in params), "no store address; no tuned recipes"

    description = run.data.tags["mlflow.note.content"]
    report = (workspace.root / paths.report_markdown("digits")).read_text()
    assert "McNemar's test" in description and description in report, "the description is the report's verdict"

    metrics = run.data.metrics
    assert len(metrics) > 20 and all(tracking.rounded(v) == v for v in metrics.values()), metrics
    accuracies = [
        json.loads((workspace.root / paths.metrics("digits", "cnn", s)).read_text())["test_accuracy"] for s in (0, 1)
    ]
    assert metrics["cnn_accuracy_mean"] == tracking.rounded(sum(accuracies) / 2) == pytest.approx(sum(accuracies) / 2)
    assert (
        metrics["cnn_parameters"]
        == json.loads((workspace.root / paths.metrics("digits", "cnn", 0)).read_text())["params"]
    )


def test_report_prints_the_link_to_its_comparison_run(workspace: Workspace, tmp_path: Path) -> None:
    """`convbench report` on a copy of the workspace, logging to a store of its own: its line ends with the link."""
    project = tmp_path / "project"
    shutil.copytree(workspace.root, project, ignore=shutil.ignore_patterns("mlflow.db*", "mlruns"))
    store = f"sqlite:///{project / 'mlflow.db'}"
    values = workspace.params.model_dump(mode="json")
    values["data"]["root"], values["tracking"]["uri"] = str(project / "data" / "raw"), store
    (project / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))

    result = run(["convbench", "report"], project)
    assert result.returncode == 0, result.stderr
    client = MlflowClient(store)
    experiment_id = client.get_experiment_by_name("convbench-digits").experiment_id
    (comparison,) = client.search_runs([experiment_id], "tags.`convbench.kind` = 'comparison'")
    assert result.stdout.splitlines()[-1] == (
        f"report: {paths.report_html('digits')} (and comparison.md); summary for DVC in {paths.summary('digits')}; "
        f"MLflow run: http://127.0.0.1:5000/#/experiments/"
        f"{experiment_id}/runs/{comparison.info.run_id}?workflowType=machine_learning (while `convbench ui` runs)"
    )


def test_report_link_on_a_tracking_server_is_the_servers_own_without_credentials(
    mlflow_server: tuple[str, subprocess.Popen],
) -> None:
    from pipeline.ops.comparison_run import link_words

    uri, _ = mlflow_server
    params = validate_params(
        params_with({"data.name": "digits", "tracking.uri": uri.replace("//", f"//alice:{SECRET}@")})
    )
    assert link_words(params) == "", "no comparison run yet"
    with tracking.run(params.tracking, "digits", "comparison", {"convbench.kind": "comparison"}) as logger:
        run_id = logger.run_id
    experiment = mlflow_rest(uri, "experiments/get-by-name?experiment_name=convbench-digits")["experiment"]
    assert link_words(params) == (
        f"; MLflow run: {uri}/#/experiments/{experiment['experiment_id']}/runs/{run_id}?workflowType=machine_learning"
    )


def test_cell_runs_record_their_dataset_as_an_mlflow_input(workspace: Workspace) -> None:
    import mlflow

    sha256 = json.loads((workspace.root / paths.prepared_manifest("digits")).read_text())["sha256"]
    mlflow.set_tracking_uri(workspace.tracking_uri)
    cells = mlflow.search_runs(
        experiment_names=["convbench-digits"], filter_string="tags.`convbench.kind` = 'train'", output_format="list"
    )
    assert sorted(r.info.run_name for r in cells) == ["cnn-s0", "cnn-s1", "mlp-s0", "mlp-s1"]
    for cell in cells:
        (used,) = cell.inputs.dataset_inputs
        assert (used.dataset.name, used.dataset.digest) == ("digits", sha256[:36])
        assert (
            json.loads(used.dataset.source) == {"uri": str(workspace.root / "data" / "raw" / "digits")}
            and used.dataset.source_type == "local"
        )
        assert {t.key: t.value for t in used.tags} == {"mlflow.data.context": "train"}
        assert cell.data.tags["convbench.dataset_sha256"] == sha256, "the run's tag keeps the whole hash"
    found = mlflow.search_runs(
        experiment_names=["convbench-digits"],
        output_format="list",
        filter_string=f"dataset.name = 'digits' AND dataset.digest = '{sha256[:36]}'",
    )
    assert {r.info.run_id for r in found} == {r.info.run_id for r in cells}, "MLflow's dataset search finds the cells"


def _logged_an_epoch(uri: str, run_name: str) -> bool:
    experiment = mlflow_rest(uri, "experiments/get-by-name?experiment_name=convbench-digits")["experiment"]
    runs = mlflow_rest(uri, "runs/search", {"experiment_ids": [experiment["experiment_id"]]}).get("runs", [])
    return any(
        r["info"]["run_name"] == run_name and any(m["key"] == "val_accuracy" for m in r["data"].get("metrics", []))
        for r in runs
    )


def test_server_lost_mid_training_finishes_training_writes_the_checkpoint_and_stops_in_seconds(
    tmp_path: Path, mlflow_server: tuple[str, subprocess.Popen]
) -> None:
    """Kill the server once both cells logged an epoch: required tracking fails in one line, optional warns."""
    uri, server = mlflow_server
    secret_uri = uri.replace("http://", f"http://alice:{SECRET}@")
    epochs = 200  # of a tiny CNN (and its matched MLP): seconds of training left when the server dies
    tiny = {
        "model.cnn.conv": [{"channels": 4, "kernel": 3, "padding": 0, "pool": 2}],
        "model.cnn.hidden": [16],
        "model.mlp.match": "none",
        "model.mlp.width": 16,
    }
    project = _server_project(tmp_path, **{"train.epochs": epochs, **tiny})
    (project / "optional.yaml").write_text((project / "params.yaml").read_text())
    write_params(project / "optional.yaml", {"tracking.required": False}, edit_existing=True)
    mlflow_rest(uri, "experiments/create", {"name": "convbench-digits"})  # not created by two processes at once
    commands = {
        "cnn": ["convbench", "train", "-m", "cnn", "-s", "0"],
        "mlp": ["convbench", "train", "-p", "optional.yaml", "-m", "mlp", "-s", "0"],
    }
    processes = {
        model: subprocess.Popen(
            args,
            cwd=project,
            env=env(MLFLOW_TRACKING_URI=secret_uri, OMP_NUM_THREADS="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for model, args in commands.items()
    }
    try:
        deadline = time.monotonic() + 180
        while not all(_logged_an_epoch(uri, f"{m}-s0") for m in processes) and time.monotonic() < deadline:
            ended_early = {m: p.communicate()[1] for m, p in processes.items() if p.poll() is not None}
            assert not ended_early, f"a training ended before the server was killed: {ended_early}"
            time.sleep(0.2)
        assert all(not (project / paths.checkpoint("digits", m, 0)).exists() for m in processes), (
            "killed while training"
        )
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        outputs = {model: p.communicate(timeout=300) for model, p in processes.items()}
        ended = time.time()
    finally:
        for p in processes.values():
            p.kill()
    for model, (stdout, stderr) in outputs.items():
        assert "Traceback" not in stderr and SECRET not in stdout + stderr, stderr
        checkpoint = project / paths.checkpoint("digits", model, 0)
        assert checkpoint.is_file(), f"{model}: training finished and wrote its checkpoint"
        assert torch_load(checkpoint)["train"]["epochs"] == epochs
        assert ended - checkpoint.stat().st_mtime < 30, f"{model}: ends in seconds once the checkpoint is written"
    cnn_err = outputs["cnn"][1].strip().splitlines()
    assert processes["cnn"].returncode == 1 and len(cnn_err) == 1, cnn_err
    killed = "Connection refused|Connection reset by peer|Remote end closed connection without response|Broken pipe"
    assert re.match(
        re.escape(f"convbench: error: MLflow tracking at '{uri.replace('http://', 'http://alice:***@')}' failed (")
        + f"({killed})"
        + re.escape("), so run 'cnn-s0' is incomplete in MLflow"),
        cnn_err[0],
    ), cnn_err
    assert "run the stage again, or set tracking.required: false" in cnn_err[0]
    mlp_err = outputs["mlp"][1].strip().splitlines()
    assert processes["mlp"].returncode == 0 and len(mlp_err) == 1, mlp_err
    assert mlp_err[0].startswith("convbench: warning: MLflow tracking at") and mlp_err[0].endswith(
        "tracking.required is false, so the stage succeeds"
    ), mlp_err
    assert not (project / paths.resume_state("digits", "mlp", 0)).exists()


def test_a_server_killed_mid_request_is_named_in_a_few_words() -> None:
    """A request the kill cuts off reads as short as one the dead server refuses, never urllib3's chain."""
    import http.client

    import requests
    from mlflow.exceptions import MlflowException
    from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

    def failed(cause: Exception) -> MlflowException:
        chain = requests.exceptions.ConnectionError(MaxRetryError(None, "/api/2.0/mlflow/runs/log-batch", cause))
        return MlflowException(f"API request to http://alice:pw@127.0.0.1:9/api failed with exception {chain}")

    refused = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    reset = ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer"))
    closed = ProtocolError("Connection aborted.", http.client.RemoteDisconnected("Remote end closed connection"))
    assert tracking._reason(failed(refused)) == "Connection refused"
    assert tracking._reason(failed(reset)) == "Connection reset by peer"
    assert tracking._reason(failed(closed)) == "Remote end closed connection"
    assert tracking._reason(MlflowException("API request to /x failed\nsecond line")) == "API request to /x failed"


def torch_load(path: Path) -> dict:
    import torch

    return torch.load(path, weights_only=True, map_location="cpu")


def test_mlflow_log_records_are_redacted(capfd: pytest.CaptureFixture[str]) -> None:
    """MLflow's own logger (its handler writes to the real stderr) never shows a password."""
    import logging

    logging.getLogger("mlflow.store.tracking.rest_store").warning(
        "API request to %s failed", f"http://alice:{SECRET}@127.0.0.1:9/api/2.0"
    )
    err = capfd.readouterr().err
    assert SECRET not in err and "http://alice:***@127.0.0.1:9/api/2.0" in err
