"""The one module that times and counts things: devices, FLOPs, memory, the matmul peak and paired timing.

Models are timed side by side, round by round (`time_interleaved`), so load and drift fall on every
model alike; the matmul peak goes through torch.utils.benchmark and every FLOP count through
torch.utils.flop_counter, so those numbers are the ones PyTorch itself would give.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import platform
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


def _benchmark() -> ModuleType:
    """torch.utils.benchmark, imported quietly (its cpp_extension import warns on CPU-only machines)."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    return benchmark


def _timer(stmt: str, env: dict[str, object]) -> object:
    return _benchmark().Timer(stmt=stmt, globals=env, num_threads=torch.get_num_threads())


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
    return 2 * size**3 / timer.blocked_autorange(min_run_time=min_run_time).median  # type: ignore[attr-defined]  # Measurement.median exists; its stub lacks it


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


# --- paired, interleaved timing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interference:
    """What shows that something else used the machine while a timing ran.

    wait_share is the time this process's threads spent runnable but waiting for a core (Linux schedstat),
    over the wall time: about 0 when the timed work had the cores to itself, and it grows with every other
    process that takes turns on them. cpu_share is CPU seconds over (wall seconds x threads); load averages
    come from the kernel. All are recorded; wait_share (or, without schedstat, the load) decides `noisy`.
    """

    wait_share: float | None
    cpu_share: float
    load_before: float
    load_after: float
    cpus: int

    @property
    def noisy(self) -> bool:
        """Whether other work competed for the cores while this timing ran."""
        if self.wait_share is not None:
            return self.wait_share > NOISY_WAIT_SHARE
        return self.load_before > self.cpus


NOISY_WAIT_SHARE = 0.10  # idle here: under 0.02; with one busy process per core: 0.5 and more
NOISY_SPREAD = 0.15  # relative interquartile range of a model's samples


def runqueue_wait_seconds() -> float | None:
    """Seconds this process's threads have spent waiting on a run queue (None where /proc has no schedstat)."""
    total = 0
    try:
        for task in os.scandir("/proc/self/task"):
            with open(f"{task.path}/schedstat", encoding="ascii") as handle:
                total += int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def load_average() -> float:
    """The kernel's 1-minute load average (0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


@dataclass(frozen=True)
class PairedCase:
    """One timed case (e.g. inference at batch 256) for every model: seconds per call, one sample per round."""

    name: str
    items: int  # images per call, to turn seconds into images/s
    seconds: dict[str, list[float]]
    interference: Interference

    def per_second(self, model: str) -> list[float]:
        """Images/s of `model` in each round."""
        return [self.items / s for s in self.seconds[model]]

    def ratios(self, model: str, reference: str) -> list[float]:
        """Per-round speed of `model` over `reference` (both timed in the same round, back to back)."""
        return [r / m for m, r in zip(self.seconds[model], self.seconds[reference])]


def time_interleaved(
    work: dict[str, Callable[[], object]],
    name: str,
    items: int,
    rounds: int,
    min_sample_seconds: float,
    device: torch.device,
) -> PairedCase:
    """Time every model's `work` round by round (A, B, C, then again, each round in rotated order), so that load
    and drift over the run fall on every model alike; each sample is the mean over enough calls to last
    `min_sample_seconds`, with a warm-up and a calibration of the call count per model before the first round."""
    calls: dict[str, int] = {}
    for model, fn in work.items():
        fn()  # warm-up outside the measurement (allocator, kernel selection)
        synchronize(device)
        started, count = time.perf_counter(), 0
        while count < 3 or time.perf_counter() - started < min_sample_seconds / 4:
            fn()
            count += 1
        synchronize(device)
        per_call = (time.perf_counter() - started) / count
        calls[model] = max(1, int(min_sample_seconds / max(per_call, 1e-9)))
    seconds: dict[str, list[float]] = {model: [] for model in work}
    order = list(work)
    load_before, waited = load_average(), runqueue_wait_seconds()
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    for round_index in range(rounds):
        shift = round_index % len(order)
        for model in order[shift:] + order[:shift]:
            synchronize(device)
            started = time.perf_counter()
            for _ in range(calls[model]):
                work[model]()
            synchronize(device)
            seconds[model].append((time.perf_counter() - started) / calls[model])
    wall = time.perf_counter() - wall_started
    cpu_share = (time.process_time() - cpu_started) / (wall * torch.get_num_threads())
    waited_after = runqueue_wait_seconds()
    wait_share = None if waited is None or waited_after is None else (waited_after - waited) / wall
    interference = Interference(wait_share, cpu_share, load_before, load_average(), os.cpu_count() or 1)
    return PairedCase(name, items, seconds, interference)


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
