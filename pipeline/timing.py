"""Bench stage: every model's speed measured side by side in one process, round by round.

Speed measured in separate processes at separate times compares the machine's load as much as the
models. Here inference at each batch size, batch-1 latency and the training step are timed model A,
then B, then C, then again, so load and drift fall on every model alike, and each comparison is the
median of per-round ratios. Each case records what shows interference and is marked noisy past a
threshold; `convbench bench` re-measures on an idle machine without retraining.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import atomic, models, paths, recipes, tracking
from pipeline import checkpoint as checkpoints
from pipeline.bench import (
    NOISY_SPREAD,
    PairedCase,
    count_flops,
    device_context,
    matmul_flops_per_second,
    resolve_device,
    time_interleaved,
)
from pipeline.data import PreparedData
from pipeline.params import Params
from pipeline.runtime import execution_plan, inference_call, normalize, place_model, repeat_to, train_step_call
from pipeline.stats import median_interval

FIX = "run `convbench bench` on an idle machine"
MATMUL_SIZE = {"cpu": 2048, "cuda": 8192, "mps": 4096}


def summarize(case: PairedCase, reference: str, confidence: float, seed: int) -> dict[str, Any]:
    """Per model: median images/s and relative spread; per model against the reference: the median per-round
    ratio with a bootstrap interval; and whether the case is noisy (interference or spread past a threshold)."""
    out: dict[str, Any] = {"items": case.items, "interference": asdict(case.interference), "models": {}, "ratios": {}}
    spreads = []
    for model in case.seconds:
        speeds = np.asarray(case.per_second(model))
        q1, q3 = np.percentile(speeds, [25, 75])
        median = float(np.median(speeds))
        spreads.append((q3 - q1) / median)
        out["models"][model] = {"images_per_second": median, "relative_iqr": float((q3 - q1) / median),
                                "ms_per_call": float(np.median(case.seconds[model]) * 1e3),
                                "samples": [float(v) for v in speeds]}
    for model in case.seconds:
        if model == reference:
            continue
        median, low, high = median_interval(case.ratios(model, reference), confidence, seed)
        out["ratios"][model] = {"median": median, "low": low, "high": high}
    out["noisy"] = bool(case.interference.noisy or max(spreads) > NOISY_SPREAD)
    return out


def bench(params: Params, prepared: PreparedData, output: Path) -> dict[str, Any]:
    """Time every model of params.models side by side; write metrics/bench.json and log a `bench` MLflow run."""
    device = resolve_device(params.train.device)
    plan = execution_plan(params.train, device, prepared.input_shape)
    seed = params.train.seeds[0]
    trained = {}
    for name in params.models:
        own = recipes.params_for(params, name, prepared.sha256)  # the recipe (and shape) this model trained with
        config = models.resolve(own, prepared.input_shape, prepared.num_classes, [name])[name]
        path = paths.checkpoint(name, seed)
        checkpoint = checkpoints.load(path, name)
        checkpoints.check_current(checkpoint, path, config, prepared.name, prepared.sha256,
                                  own.train.model_dump(mode="json", exclude={"seeds"}))
        trained[name] = place_model(checkpoints.restore(checkpoint, path), plan)
    test_x = normalize(prepared.splits.test.x, prepared.mean, prepared.std, device)
    test_y = prepared.splits.test.y.to(device)
    settings = params.evaluate
    timed: dict[str, PairedCase] = {}
    for size in settings.throughput_batch_sizes:
        batch = repeat_to(test_x, size)
        work = {name: inference_call(model, batch, plan) for name, model in trained.items()}
        timed[f"inference_batch_{size}"] = time_interleaved(work, f"inference_batch_{size}", size, settings.rounds,
                                                            settings.min_run_time, device)
    train_batch = params.train.batch_size
    x, y = repeat_to(test_x, train_batch), repeat_to(test_y, train_batch)
    steps = {name: train_step_call(model, x, y, plan) for name, model in trained.items()}
    timed[f"training_step_batch_{train_batch}"] = time_interleaved(steps, "training_step", train_batch, settings.rounds,
                                                                   settings.min_run_time, device)
    reference = params.reference_model
    cases = {key: summarize(case, reference, params.report.confidence, params.report.bootstrap_seed)
             for key, case in timed.items()}
    peak = matmul_flops_per_second(device, plan.autocast_dtype or torch.float32, MATMUL_SIZE[device.type],
                                   settings.min_run_time)
    flops = {name: count_flops(model, repeat_to(test_x, 8), repeat_to(test_y, 8)) for name, model in trained.items()}
    largest = f"inference_batch_{max(settings.throughput_batch_sizes)}"
    train_key = f"training_step_batch_{train_batch}"
    mfu = {name: {"inference": flops[name].forward * cases[largest]["models"][name]["images_per_second"] / peak,
                  "train": flops[name].train_step * cases[train_key]["models"][name]["images_per_second"] / peak}
           for name in trained}
    noisy = [key for key, case in cases.items() if case["noisy"]]
    result = {"dataset": prepared.name, "models": list(params.models), "reference": reference, "rounds": settings.rounds,
              "seconds_per_sample": settings.min_run_time, "checkpoint_seed": seed, "cases": cases,
              "matmul_flops_per_second": peak, "mfu": mfu, "noisy": noisy,
              "fix": FIX if noisy else "", "context": device_context(device, plan.dtype_name)}
    tags = {"convbench.kind": "bench", "convbench.dataset": prepared.name, "convbench.noisy": bool(noisy),
            **{f"convbench.context.{key}": value for key, value in result["context"].items()}}
    with tracking.run(params.tracking, prepared.name, "bench", tags) as logger:
        logger.log_metrics(bench_metrics(result))
        atomic.write_json(output, result)
        logger.log_artifact(output, "bench")
    return result


def bench_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Flat MLflow metrics: images/s per model and case, ratios to the reference, and a 0/1 noisy flag per case."""
    values: dict[str, float] = {}
    for key, case in result["cases"].items():
        values[f"{key}_noisy"] = float(case["noisy"])
        for model, figures in case["models"].items():
            values[f"{model}_{key}_images_per_second"] = figures["images_per_second"]
            values[f"{model}_{key}_relative_iqr"] = figures["relative_iqr"]
        for model, ratio in case["ratios"].items():
            values[f"{model}_{key}_ratio_to_reference"] = ratio["median"]
    for model, mfu in result["mfu"].items():
        values |= {f"{model}_mfu_inference": mfu["inference"], f"{model}_mfu_train": mfu["train"]}
    return values
