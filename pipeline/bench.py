"""The one module that times and counts things: devices, FLOPs, throughput, latency, memory and MFU.

Every timing goes through torch.utils.benchmark (warm-up, CUDA synchronisation, repeats), every
FLOP count through torch.utils.flop_counter, so the numbers are the ones PyTorch itself would give.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn

from pipeline.errors import ConvbenchError


def resolve_device(name: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an explicit device that is absent is an error."""
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "cpu": True,
    }
    if name == "auto":
        return torch.device(next(kind for kind in ("cuda", "mps", "cpu") if available[kind]))
    if not available[name]:
        raise ConvbenchError(f"train.device is '{name}' but no {name} device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for queued device work so wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class Stopwatch:
    """Wall-clock seconds between start() and stop(), synchronising the device at both ends."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.elapsed = 0.0
        self._started = 0.0

    def start(self) -> None:
        """Begin a timed interval."""
        synchronize(self.device)
        self._started = time.perf_counter()

    def stop(self) -> float:
        """End the interval; adds it to `elapsed` and returns its length."""
        synchronize(self.device)
        interval = time.perf_counter() - self._started
        self.elapsed += interval
        return interval


@dataclass(frozen=True)
class Throughput:
    """Inference speed at one batch size, from torch.utils.benchmark's blocked autorange."""

    batch_size: int
    images_per_second: float
    median_seconds: float
    iqr_seconds: float
    runs: int


def _benchmark() -> ModuleType:
    """torch.utils.benchmark, imported quietly (its cpp_extension import warns on CPU-only machines)."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    return benchmark


def _timer(stmt: str, env: dict[str, object]) -> object:
    return _benchmark().Timer(stmt=stmt, globals=env, num_threads=torch.get_num_threads())


def inference_throughput(
    model: nn.Module, batch: torch.Tensor, min_run_time: float, autocast: contextlib.AbstractContextManager | None = None
) -> Throughput:
    """Images/s of `model` on `batch` in eval mode without autograd (warm-up and sync by torch.utils.benchmark)."""
    model.eval()
    env = {"model": model, "batch": batch, "torch": torch, "autocast": autocast or contextlib.nullcontext()}
    timer = _timer("with torch.inference_mode(), autocast: model(batch)", env)
    with torch.inference_mode(), env["autocast"]:  # type: ignore[attr-defined]
        model(batch)  # warm-up outside the measurement (allocator, kernel selection)
    measurement = timer.blocked_autorange(min_run_time=min_run_time)  # type: ignore[attr-defined]
    median = measurement.median
    return Throughput(
        batch_size=int(batch.shape[0]),
        images_per_second=batch.shape[0] / median,
        median_seconds=median,
        iqr_seconds=measurement.iqr,
        runs=len(measurement.times),
    )


@dataclass(frozen=True)
class Latency:
    """Per-call latency of one forward pass: every sample is a single timed call."""

    batch_size: int
    median_ms: float
    p95_ms: float
    iqr_ms: float
    calls: int


def inference_latency(
    model: nn.Module,
    batch: torch.Tensor,
    min_run_time: float,
    autocast: contextlib.AbstractContextManager | None = None,
    min_calls: int = 50,
) -> Latency:
    """Median and p95 latency of single forward calls, timed one call at a time so the tail is real."""
    model.eval()
    env = {"model": model, "batch": batch, "torch": torch, "autocast": autocast or contextlib.nullcontext()}
    timer = _timer("with torch.inference_mode(), autocast: model(batch)", env)
    timer.timeit(10)  # type: ignore[attr-defined]  # warm-up
    samples: list[float] = []
    deadline = time.perf_counter() + min_run_time
    while len(samples) < min_calls or time.perf_counter() < deadline:
        samples.append(timer.timeit(1).times[0])  # type: ignore[attr-defined]
    quartiles = statistics.quantiles(samples, n=4)
    return Latency(
        batch_size=int(batch.shape[0]),
        median_ms=statistics.median(samples) * 1e3,
        p95_ms=statistics.quantiles(samples, n=20)[-1] * 1e3,
        iqr_ms=(quartiles[2] - quartiles[0]) * 1e3,
        calls=len(samples),
    )


@dataclass(frozen=True)
class FlopCounts:
    """FLOPs per image (a multiply-add counts 2), as counted by torch.utils.flop_counter."""

    forward: float
    train_step: float


def count_flops(model: nn.Module, batch: torch.Tensor, labels: torch.Tensor) -> FlopCounts:
    """Forward and forward+backward FLOPs per image of `model` on `batch` (optimizer update excluded)."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model).train()
    with torch.no_grad(), FlopCounterMode(display=False) as forward:
        probe(batch)
    with FlopCounterMode(display=False) as step:
        nn.functional.cross_entropy(probe(batch), labels).backward()
    images = batch.shape[0]
    return FlopCounts(forward=forward.get_total_flops() / images, train_step=step.get_total_flops() / images)


def matmul_flops_per_second(device: torch.device, dtype: torch.dtype, size: int, min_run_time: float) -> float:
    """FLOP/s of a size x size matmul on `device` in `dtype`: the roofline MFU is measured against."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    timer = _timer("torch.mm(a, b)", {"a": a, "b": b, "torch": torch})
    return 2 * size**3 / timer.blocked_autorange(min_run_time=min_run_time).median  # type: ignore[attr-defined]


def peak_memory_bytes(work: Callable[[], object], device: torch.device) -> int:
    """Peak bytes of tensor memory `work` allocates beyond what was already allocated.

    CUDA: torch.cuda.max_memory_allocated. Elsewhere: the allocation and free events torch.profiler
    records with profile_memory=True, replayed in time order. (Resident-set growth was the first idea,
    but glibc reuses freed pages, so it read 0 MiB for a 26 MiB inference batch.)
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        work()
        synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # kineto otherwise prints profiler_start/stop lines to stderr
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        work()
        synchronize(device)
    allocated = peak = 0
    for event in sorted(profiler.events(), key=lambda e: e.time_range.start):
        allocated += event.self_cpu_memory_usage  # "[memory]" events carry frees (negative) and stray allocations
        peak = max(peak, allocated)
    return int(peak)


def device_context(device: torch.device, dtype: str) -> dict[str, str | int]:
    """What every timing depends on: device and its name, dtype, threads, torch (and CUDA) version."""
    context: dict[str, str | int] = {
        "device": str(device),
        "device_name": device_name(device),
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count() or 0,
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        context["cuda"] = str(torch.version.cuda)
    return context


def device_name(device: torch.device) -> str:
    """GPU name on CUDA; otherwise the CPU model from /proc/cpuinfo (or the platform's machine name)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
