"""Timing and counting: device choice, stopwatch, throughput, latency, FLOPs, memory, MFU roofline."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.core import models
from pipeline.core.measure import Stopwatch, count_flops, device_context, peak_memory_bytes, resolve_device
from pipeline.core.timing import matmul_flops_per_second
from pipeline.errors import ConvbenchError
from pipeline.params import load_params
from tests.helpers import ROOT

CPU = torch.device("cpu")


def default_models() -> dict[str, nn.Module]:
    configs = models.resolve(load_params(ROOT / "params.yaml"), (1, 28, 28), 10)
    return {name: models.build(config) for name, config in configs.items()}


def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 1, 28, 28), torch.zeros(n, dtype=torch.long)


def test_auto_picks_a_usable_device_and_the_cpu_when_gpus_are_hidden() -> None:
    device = resolve_device("auto")
    assert torch.ones(3, device=device).sum().item() == 3, "auto must name a device that runs"
    hidden = subprocess.run(
        [sys.executable, "-c", "from pipeline.core.measure import resolve_device; print(resolve_device('auto'))"],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert hidden.returncode == 0, hidden.stderr
    assert hidden.stdout.strip() in ("cpu", "mps"), "with no visible GPU, auto falls back (never names an absent cuda)"
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


def test_default_cnn_flops_match_the_hand_count() -> None:
    conv = 2 * (1 * 3 * 3) * 32 * 26 * 26  # 2 * (Cin k k) * Cout * Hout * Wout
    dense, head = 2 * (32 * 13 * 13) * 128, 2 * 128 * 10
    flops = count_flops(default_models()["cnn"], *batch(4))
    assert flops.forward == conv + dense + head == 1_776_384
    # Backward: the conv needs only its weight gradient (the input needs none); each dense layer needs
    # the gradient of its weight and of its input, each as costly as its forward matmul.
    assert flops.train_step == flops.forward + conv + 2 * dense + 2 * head == 4_939_776


def test_default_mlp_flops_match_the_hand_count() -> None:
    hidden, head = 2 * 784 * 873, 2 * 873 * 10
    flops = count_flops(default_models()["mlp"], *batch(4))
    assert flops.forward == hidden + head == 1_386_324
    assert flops.train_step == flops.forward + hidden + 2 * head == 2_790_108


def test_flop_count_leaves_the_model_untouched() -> None:
    model = default_models()["mlp"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_flops(model, *batch(2))
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_matmul_roofline_is_plausible() -> None:
    flops = matmul_flops_per_second(CPU, torch.float32, 256, min_run_time=0.05)
    assert 1e8 < flops < 1e14  # between a slow laptop core and far beyond any CPU


def test_peak_memory_sees_a_large_allocation() -> None:
    def two_buffers() -> None:
        first = torch.ones(16 * 2**18)  # 16 MiB of float32
        second = first * 2  # another 16 MiB while the first is alive
        del first, second
        torch.ones(8 * 2**18)  # 8 MiB after both were freed: not a new peak

    assert peak_memory_bytes(two_buffers, CPU) / 2**20 == pytest.approx(32, abs=0.1)
    assert peak_memory_bytes(lambda: None, CPU) == 0


def test_device_context_names_what_timings_depend_on() -> None:
    context = device_context(CPU, "float32")
    assert {"device", "device_name", "dtype", "threads", "torch"} <= set(context)
    assert context["threads"] == torch.get_num_threads() and context["torch"] == torch.__version__
    assert context["device_name"]


def _paired_case(rounds: int = 5):
    """The default CNN and MLP at batch 256, timed side by side."""
    from pipeline.core.timing import time_interleaved

    nets = default_models()
    x = torch.randn(256, 1, 28, 28)
    work = {name: _no_grad_call(net.eval(), x) for name, net in nets.items()}
    return time_interleaved(work, "inference_batch_256", 256, rounds, 0.05, CPU)


def _no_grad_call(net: nn.Module, x: torch.Tensor):
    def call() -> torch.Tensor:
        with torch.inference_mode():
            return net(x)

    return call


def test_interleaved_timing_takes_one_sample_per_model_per_round() -> None:
    from pipeline.stages.bench import summarize

    case = _paired_case(rounds=4)
    assert {name: len(samples) for name, samples in case.seconds.items()} == {"cnn": 4, "mlp": 4}
    ratios = case.ratios("mlp", "cnn")
    assert ratios == pytest.approx([c / m for c, m in zip(case.seconds["cnn"], case.seconds["mlp"])])
    summary = summarize(case, "cnn", 0.95, 0)
    assert summary.models["mlp"].images_per_second == pytest.approx(float(np.median(case.per_second("mlp"))))
    assert summary.ratios["mlp"].low <= summary.ratios["mlp"].median <= summary.ratios["mlp"].high
    assert case.interference.cpus == os.cpu_count() and 0 < case.interference.cpu_share


def test_load_on_every_core_is_marked_noisy_never_reported_as_a_reversed_ordering() -> None:
    """Idle, the MLP infers faster than the CNN (2.3-3x on the 2-core machine). With a CPU burner on every core the
    paired timing must either keep that ordering or mark the case noisy."""
    from pipeline.core.timing import runqueue_wait_seconds
    from pipeline.stages.bench import summarize

    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.5)
        loaded = summarize(_paired_case(), "cnn", 0.95, 0)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    ratio = loaded.ratios["mlp"]
    reversed_finding = not loaded.noisy and ratio.high < 1  # "the CNN is faster", stated as a finding
    assert not reversed_finding, loaded
    assert loaded.noisy or ratio.low > 1, "either noisy, or the idle ordering (MLP faster) backed by its interval"
    if runqueue_wait_seconds() is not None:
        wait_share = loaded.interference["wait_share"]
        assert wait_share is not None and wait_share > 0.1 and loaded.noisy, "busy cores show as run-queue waits"
