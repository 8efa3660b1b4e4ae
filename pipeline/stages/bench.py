"""Bench stage: every model's speed measured side by side in one process, round by round.

Speed measured in separate processes at separate times compares the machine's load as much as the
models. Here inference at each batch size, batch-1 latency and the training step are timed model A,
then B, then C, then again, so load and drift fall on every model alike, and each comparison is the
median of per-round ratios. Each case records what shows interference and is marked noisy past a
threshold; `convbench bench` re-measures on an idle machine without retraining.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from pipeline.artifacts import paths, records
from pipeline.artifacts.bench_record import BenchCase, BenchResult, CaseResult, Mfu, ModelSpeed, Ratio
from pipeline.core import cell as cells
from pipeline.core.measure import FlopCounts, count_flops, device_context
from pipeline.core.runtime import (
    ExecutionPlan,
    inference_call,
    normalize,
    place_model,
    repeat_to,
    threads_for,
    train_step_call,
)
from pipeline.core.stats import median_interval
from pipeline.core.timing import NOISY_SPREAD, PairedCase, matmul_flops_per_second, time_interleaved
from pipeline.ops import tracking
from pipeline.params import Params

FIX = "run `convbench bench` on an idle machine"
MATMUL_SIZE = {"cpu": 2048, "cuda": 8192, "mps": 4096}


def summarize(case: PairedCase, reference: str, confidence: float, seed: int) -> CaseResult:
    """Per model: median images/s and relative spread; per model against the reference: the median per-round
    ratio with a bootstrap interval; and whether the case is noisy (interference or spread past a threshold)."""
    speeds: dict[str, ModelSpeed] = {}
    for model in case.seconds:
        samples = np.asarray(case.per_second(model))
        q1, q3 = np.percentile(samples, [25, 75])
        median = float(np.median(samples))
        speeds[model] = ModelSpeed(
            images_per_second=median,
            relative_iqr=float((q3 - q1) / median),
            ms_per_call=float(np.median(case.seconds[model]) * 1e3),
            samples=[float(v) for v in samples],
            threads=case.threads[model],
        )
    ratios = {}
    for model in case.seconds:
        if model != reference:
            median, low, high = median_interval(case.ratios(model, reference), confidence, seed)
            ratios[model] = Ratio(median=median, low=low, high=high)
    noisy = bool(case.interference.noisy or max(s.relative_iqr for s in speeds.values()) > NOISY_SPREAD)
    return CaseResult(
        items=case.items, interference=dataclasses.asdict(case.interference), models=speeds, ratios=ratios, noisy=noisy
    )


def bench(params: Params, say: Callable[[str], None] = print) -> BenchResult:
    """Time every model of params.models side by side; write results/<dataset>/bench.json and log a `bench` MLflow run."""
    prepared = cells.prepared_data(params)
    seed = params.train.seeds[0]
    first = cells.resolve(params, prepared, seeds=[seed])
    device = first[0].device()
    plan = first[0].plan(device, prepared.input_shape)
    trained = {c.model: place_model(c.restore(prepared), plan) for c in first}
    test_x = normalize(prepared.splits.test.x, prepared.mean, prepared.std, device)
    test_y = prepared.splits.test.y.to(device)
    flops = {name: count_flops(model, repeat_to(test_x, 8), repeat_to(test_y, 8)) for name, model in trained.items()}
    timed = time_cases(params, trained, flops, plan, test_x, test_y)
    reference = params.reference_model
    cases = {
        case: summarize(paired, reference, params.report.confidence, params.report.bootstrap_seed)
        for case, paired in timed.items()
    }
    peak = matmul_flops_per_second(
        device, plan.autocast_dtype or torch.float32, MATMUL_SIZE[device.type], params.evaluate.min_run_time
    )
    largest = BenchCase("inference", max(params.evaluate.throughput_batch_sizes))
    step = BenchCase("training_step", params.train.batch_size)
    mfu = {
        name: Mfu(
            inference=flops[name].forward * cases[largest].models[name].images_per_second / peak,
            train=flops[name].train_step * cases[step].models[name].images_per_second / peak,
        )
        for name in trained
    }
    noisy = [case.key for case, result in cases.items() if result.noisy]
    result = BenchResult(
        dataset=prepared.name,
        models=list(params.models),
        reference=reference,
        rounds=params.evaluate.rounds,
        seconds_per_sample=params.evaluate.min_run_time,
        checkpoint_seed=seed,
        cases={case.key: value for case, value in cases.items()},
        matmul_flops_per_second=peak,
        mfu=mfu,
        noisy=noisy,
        fix=FIX if noisy else "",
        context=device_context(device, plan.dtype_name),
    )
    tags = {
        "convbench.kind": "bench",
        "convbench.dataset": prepared.name,
        "convbench.noisy": bool(noisy),
        **{f"convbench.context.{key}": value for key, value in result.context.items()},
    }
    with tracking.run(params.tracking, prepared.name, "bench", tags) as logger:
        logger.log_metrics(bench_metrics(result))
        records.save_json(paths.bench(prepared.name), result)
        logger.log_artifact(paths.bench(prepared.name), "bench")
    speeds = ", ".join(
        f"{model} {figures.images_per_second:,.0f} img/s" for model, figures in cases[largest].models.items()
    )
    say(f"bench: {largest.key}: {speeds} -> {paths.bench(prepared.name)}")
    return result


def time_cases(  # 6 parameters: the models with their FLOPs, how they run, and the images they run on
    params: Params,
    trained: dict[str, nn.Module],
    flops: dict[str, FlopCounts],
    plan: ExecutionPlan,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
) -> dict[BenchCase, PairedCase]:
    """Inference at each batch size and one training step at the recipe's batch, every model in turn each round,
    each with the threads training's rule gives it for that call (on CPU)."""
    settings = params.evaluate

    def threads(per_image: dict[str, float], batch: int, what: str) -> dict[str, int] | None:
        if plan.device.type != "cpu":
            return None
        return {name: threads_for(flop * batch, what, params.train.threads).count for name, flop in per_image.items()}

    forward = {name: f.forward for name, f in flops.items()}
    timed: dict[BenchCase, PairedCase] = {}
    for size in settings.throughput_batch_sizes:
        case = BenchCase("inference", size)
        batch = repeat_to(test_x, size)
        work = {name: inference_call(model, batch, plan) for name, model in trained.items()}
        timed[case] = time_interleaved(
            work,
            case.key,
            size,
            settings.rounds,
            settings.min_run_time,
            plan.device,
            threads(forward, size, "inference batch"),
        )
    case = BenchCase("training_step", params.train.batch_size)
    x, y = repeat_to(test_x, case.batch), repeat_to(test_y, case.batch)
    steps = {name: train_step_call(model, x, y, plan) for name, model in trained.items()}
    timed[case] = time_interleaved(
        steps,
        "training_step",
        case.batch,
        settings.rounds,
        settings.min_run_time,
        plan.device,
        threads({name: f.train_step for name, f in flops.items()}, case.batch, "training step"),
    )
    return timed


def bench_metrics(result: BenchResult) -> dict[str, float]:
    """Flat MLflow metrics: images/s per model and case, ratios to the reference, and a 0/1 noisy flag per case."""
    values: dict[str, float] = {}
    for key, case in result.cases.items():
        values[f"{key}_noisy"] = float(case.noisy)
        for model, figures in case.models.items():
            values[f"{model}_{key}_images_per_second"] = figures.images_per_second
            values[f"{model}_{key}_relative_iqr"] = figures.relative_iqr
        for model, ratio in case.ratios.items():
            values[f"{model}_{key}_ratio_to_reference"] = ratio.median
    for model, mfu in result.mfu.items():
        values |= {f"{model}_mfu_inference": mfu.inference, f"{model}_mfu_train": mfu.train}
    return values
