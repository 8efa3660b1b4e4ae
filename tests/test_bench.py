"""Bench stage on the digits workspace: every model timed side by side, written to metrics/bench.json and MLflow."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from pipeline.artifacts import paths
from tests.conftest import Workspace


def test_bench_times_every_model_in_every_case_round_by_round(workspace: Workspace) -> None:
    bench = json.loads((workspace.root / paths.bench("digits")).read_text())
    assert bench["models"] == ["cnn", "mlp"] and bench["reference"] == "cnn" and bench["rounds"] == 3
    assert set(bench["cases"]) == {
        "inference_batch_1",
        "inference_batch_32",
        "inference_batch_256",
        "training_step_batch_128",
    }
    # training's rule for threads: one per 50 MFLOP of a call; an 8x8 digit at batch 1 is far below it
    assert all(figures["threads"] == 1 for figures in bench["cases"]["inference_batch_1"]["models"].values())
    for key, case in bench["cases"].items():
        assert set(case["models"]) == {"cnn", "mlp"} and set(case["ratios"]) == {"mlp"}
        for figures in case["models"].values():
            assert len(figures["samples"]) == 3 and figures["images_per_second"] > 0 and figures["threads"] >= 1
        ratio = case["ratios"]["mlp"]
        assert ratio["low"] <= ratio["median"] <= ratio["high"]
        interference = case["interference"]
        assert {"wait_share", "cpu_share", "load_before", "load_after", "cpus"} <= set(interference)
        assert case["noisy"] == (key in bench["noisy"])
    assert bench["fix"] == ("run `convbench bench` on an idle machine" if bench["noisy"] else "")
    assert 0 < bench["mfu"]["cnn"]["train"] < 1.5 and bench["matmul_flops_per_second"] > 0


def test_bench_is_an_mlflow_run_with_the_same_numbers(workspace: Workspace) -> None:
    bench = json.loads((workspace.root / paths.bench("digits")).read_text())
    client = MlflowClient(workspace.tracking_uri)
    experiment = client.get_experiment_by_name("convbench-digits")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`convbench.kind` = 'bench'")
    assert run.info.status == "FINISHED" and run.data.tags["convbench.noisy"] == str(bool(bench["noisy"]))
    speed = bench["cases"]["inference_batch_32"]["models"]["mlp"]["images_per_second"]
    assert run.data.metrics["mlp_inference_batch_32_images_per_second"] == pytest.approx(speed)
    assert run.data.metrics["inference_batch_32_noisy"] == float(bench["cases"]["inference_batch_32"]["noisy"])
