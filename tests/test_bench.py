"""Timing helpers: device choice, stopwatch, and torch.utils.benchmark throughput."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from pipeline.bench import Stopwatch, inference_throughput, resolve_device
from pipeline.errors import ConvbenchError


def test_auto_prefers_cuda_then_mps_then_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"


def test_absent_device_is_a_clear_error() -> None:
    absent = "cuda" if not torch.cuda.is_available() else "mps" if not torch.backends.mps.is_available() else None
    if absent is None:
        pytest.fail("this check needs a machine lacking cuda or mps")
    with pytest.raises(ConvbenchError, match=f"train.device is '{absent}' but no {absent} device is available"):
        resolve_device(absent)


def test_stopwatch_accumulates_intervals() -> None:
    watch = Stopwatch(torch.device("cpu"))
    for _ in range(2):
        watch.start()
        time.sleep(0.02)
        watch.stop()
    assert 0.04 <= watch.elapsed < 0.5


def test_inference_throughput_is_images_over_median_time() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    result = inference_throughput(model, torch.randn(32, 1, 8, 8), min_run_time=0.05)
    assert result.batch_size == 32 and result.runs >= 1
    assert result.images_per_second == pytest.approx(32 / result.median_seconds)
