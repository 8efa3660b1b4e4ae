"""The bench stage's clocks: paired, interleaved timing and the matmul peak, both through torch.utils.benchmark's ways.

Models are timed side by side, round by round (`time_interleaved`), so load and drift fall on every model alike;
the matmul peak goes through torch.utils.benchmark, so it is the number PyTorch itself would give. Only the bench
stage (and benchmarks/) import this module, so rewording a timing never recomputes a trained or scored cell.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch

from pipeline.core.measure import synchronize


def _benchmark() -> ModuleType:
    """torch.utils.benchmark, imported quietly (its cpp_extension import warns on CPU-only machines)."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    return benchmark


def _timer(stmt: str, env: dict[str, object]) -> object:
    return _benchmark().Timer(stmt=stmt, globals=env, num_threads=torch.get_num_threads())


def matmul_flops_per_second(device: torch.device, dtype: torch.dtype, size: int, min_run_time: float) -> float:
    """FLOP/s of a size x size matmul on `device` in `dtype`: the roofline MFU is measured against."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    timer = _timer("torch.mm(a, b)", {"a": a, "b": b, "torch": torch})
    return 2 * size**3 / timer.blocked_autorange(min_run_time=min_run_time).median  # type: ignore[attr-defined]  # Measurement.median exists; its stub lacks it


@dataclass(frozen=True)
class Interference:
    """What shows that something else used the machine while a timing ran.

    wait_share is the time this process's threads spent runnable but waiting for a core (Linux schedstat),
    over the wall time: about 0 when the timed work had the cores to itself, and it grows with every other
    process that takes turns on them. cpu_share is CPU seconds over (wall seconds x the most threads a model ran
    with); load averages come from the kernel. All are recorded; wait_share (or, without schedstat, the load)
    decides `noisy`.
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
    threads: dict[str, int]  # the intra-op threads each model's calls ran with

    def per_second(self, model: str) -> list[float]:
        """Images/s of `model` in each round."""
        return [self.items / s for s in self.seconds[model]]

    def ratios(self, model: str, reference: str) -> list[float]:
        """Per-round speed of `model` over `reference` (both timed in the same round, back to back)."""
        return [r / m for m, r in zip(self.seconds[model], self.seconds[reference])]


def time_interleaved(  # 7 parameters: the work, what it is, how long to time it, and each model's threads
    work: dict[str, Callable[[], object]],
    name: str,
    items: int,
    rounds: int,
    min_sample_seconds: float,
    device: torch.device,
    threads: dict[str, int] | None = None,
) -> PairedCase:
    """Time every model's `work` round by round (A, B, C, then again, each round in rotated order), so that load
    and drift over the run fall on every model alike; each sample is the mean over enough calls to last
    `min_sample_seconds`, with a warm-up and a calibration of the call count per model before the first round.
    `threads` (by model; default: this process's count) are the intra-op threads each model's calls run with."""
    budget = torch.get_num_threads()
    own = {model: (threads or {}).get(model, budget) for model in work}
    calls: dict[str, int] = {}
    seconds: dict[str, list[float]] = {model: [] for model in work}
    try:
        for model, fn in work.items():
            torch.set_num_threads(own[model])
            fn()  # warm-up outside the measurement (allocator, kernel selection)
            synchronize(device)
            started, count = time.perf_counter(), 0
            while count < 3 or time.perf_counter() - started < min_sample_seconds / 4:
                fn()
                count += 1
            synchronize(device)
            per_call = (time.perf_counter() - started) / count
            calls[model] = max(1, int(min_sample_seconds / max(per_call, 1e-9)))
        order = list(work)
        load_before, waited = load_average(), runqueue_wait_seconds()
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        for round_index in range(rounds):
            shift = round_index % len(order)
            for model in order[shift:] + order[:shift]:
                torch.set_num_threads(own[model])
                synchronize(device)
                started = time.perf_counter()
                for _ in range(calls[model]):
                    work[model]()
                synchronize(device)
                seconds[model].append((time.perf_counter() - started) / calls[model])
        wall = time.perf_counter() - wall_started
    finally:
        torch.set_num_threads(budget)
    cpu_share = (time.process_time() - cpu_started) / (wall * max(own.values()))
    waited_after = runqueue_wait_seconds()
    wait_share = None if waited is None or waited_after is None else (waited_after - waited) / wall
    interference = Interference(wait_share, cpu_share, load_before, load_average(), os.cpu_count() or 1)
    return PairedCase(name, items, seconds, interference, own)
