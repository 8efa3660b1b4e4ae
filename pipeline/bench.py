"""The one module that times things: device choice, synchronisation and throughput measurement."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

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


def inference_throughput(model: nn.Module, batch: torch.Tensor, min_run_time: float) -> Throughput:
    """Images/s of `model` on `batch` in eval mode without autograd (warm-up and sync by torch.utils.benchmark)."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime" noise on CPU
    from torch.utils import benchmark  # imports cpp_extension, which warns at import on CPU-only machines

    model.eval()
    timer = benchmark.Timer(
        stmt="with torch.inference_mode(): model(batch)",
        globals={"model": model, "batch": batch, "torch": torch},
        num_threads=torch.get_num_threads(),
    )
    with torch.inference_mode():
        model(batch)  # warm-up outside the measurement (allocator, kernel selection)
    measurement = timer.blocked_autorange(min_run_time=min_run_time)
    median = measurement.median
    return Throughput(
        batch_size=int(batch.shape[0]),
        images_per_second=batch.shape[0] / median,
        median_seconds=median,
        iqr_seconds=measurement.iqr,
        runs=len(measurement.times),
    )
