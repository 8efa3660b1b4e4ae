"""What a cell's numbers are measured with: devices, the training stopwatch, FLOPs, memory and the first conv's maps.

Every FLOP count goes through torch.utils.flop_counter, so those numbers are the ones PyTorch itself would give.
The bench stage's paired timing lives in core/timing.py, outside the identity of the stages that train and score.
"""

from __future__ import annotations

import contextlib
import copy
import os
import platform
import time
from collections.abc import Callable
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


def device_context(
    device: torch.device, dtype: str, threads: int | None = None, threads_reason: str | None = None
) -> dict[str, str | int]:
    """What every timing depends on: device and its name, dtype, threads (and why), torch (and CUDA) version."""
    context: dict[str, str | int] = {
        "device": str(device),
        "device_name": device_name(device),
        "dtype": dtype,
        "threads": threads or torch.get_num_threads(),
        **({"threads_reason": threads_reason} if threads_reason else {}),
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


def first_conv_maps(model: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The first convolution anywhere in the module tree: its weights and ReLU feature maps of one (C, ...) image.

    None for a model without a convolution. The maps come from that layer alone, applied to the input image.
    """
    conv = next((layer for layer in model.modules() if isinstance(layer, (nn.Conv1d, nn.Conv2d))), None)
    if conv is None or conv.in_channels != image.shape[0]:
        return None
    with torch.no_grad():
        maps = torch.relu(conv(image.unsqueeze(0).to(device=conv.weight.device, dtype=conv.weight.dtype)))[0]
    return conv.weight.detach().float().cpu(), maps.float().cpu()
