"""What the augmentation probe's batch augmentation costs next to the training step it feeds.

The default CNN of params.yaml on mnist5k at batch 128 (convbench's thread choice for it): one AdamW
training step, and one call of the augment probe's `Augment` on the same batch at the strongest shift of
probes.augment.shifts (and with flips too, for datasets that allow them). Rounds alternate the calls, each
timed by torch.utils.benchmark; the printed share is the median of per-round ratios, with their range.

Run: python benchmarks/augment.py [--rounds 7] [--min-run-time 0.3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils import benchmark

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.train_loop import load_dataset
from pipeline.core import models
from pipeline.core.runtime import (
    device_splits,
    execution_plan,
    intra_op_threads,
    place_model,
    train_step_call,
    with_threads,
)
from pipeline.core.transforms import Augment
from pipeline.params import load_params

ROOT = Path(__file__).resolve().parents[1]


def seconds(call: object, min_run_time: float) -> float:
    """Median seconds per call, as torch.utils.benchmark measures it."""
    timer = benchmark.Timer(stmt="call()", globals={"call": call})
    return timer.blocked_autorange(min_run_time=min_run_time).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--min-run-time", type=float, default=0.3, help="seconds of timed calls per sample")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    with tempfile.TemporaryDirectory() as scratch:
        prepared = load_dataset(params, Path(scratch))
    device = torch.device("cpu")
    data = device_splits(prepared, device)
    batch_size = params.train.batch_size
    config = models.resolve(params, prepared.input_shape, prepared.num_classes)[params.reference_model]
    plan = execution_plan(params.train, device, prepared.input_shape)
    torch.manual_seed(0)
    model = place_model(models.build(config), plan)
    plan = with_threads(plan, model, data.train, params.train)
    batch, labels = data.train.x[:batch_size].contiguous(), data.train.y[:batch_size]
    fill = tuple(-m / s for m, s in zip(prepared.mean, prepared.std))
    strongest = max(params.probes.augment.shifts)
    augments = {
        f"shift ±{strongest}": Augment(strongest, False, fill),
        f"shift ±{strongest} + flips": Augment(strongest, True, fill),
    }
    generator = torch.Generator(device=device).manual_seed(0)
    step = train_step_call(model, batch, labels, plan)
    calls = {"step": step} | {name: (lambda a=a: a(batch, generator)) for name, a in augments.items()}
    threads = plan.threads.count if plan.threads else torch.get_num_threads()
    print(f"# {params.data.name}, {params.reference_model} ({config.arch}), batch {batch_size}, {threads} thread(s)")
    times: dict[str, list[float]] = {name: [] for name in calls}
    with intra_op_threads(threads):
        for call in calls.values():
            seconds(call, 0.1)  # warm-up
        for index in range(args.rounds):
            order = list(calls) if index % 2 == 0 else list(reversed(calls))
            for name in order:
                times[name].append(seconds(calls[name], args.min_run_time))
    print(
        f"training step {statistics.median(times['step']) * 1e3:.2f} ms (rounds {min(times['step']) * 1e3:.2f}-{max(times['step']) * 1e3:.2f})"
    )
    for name in augments:
        shares = [a / s for a, s in zip(times[name], times["step"])]
        print(
            f"augment {name}: {statistics.median(times[name]) * 1e3:.3f} ms = {statistics.median(shares):.1%} of a "
            f"training step (rounds {min(shares):.1%}-{max(shares):.1%}; goal at most 10%)",
            flush=True,
        )


if __name__ == "__main__":
    main()
