"""Small models on a shared machine: convbench's time per training step against a plain one-thread eager loop.

For each model of presets/mnist1d-paper.yaml (logistic regression, the authors' MLP and CNN, batch 100),
`pipeline.core.runtime.fit` (threads chosen as `convbench train` chooses them) and the plain loop the
MNIST-1D authors write (one thread, random index batches of tensors in memory, Adam, no schedule) each take
the same number of steps. Rounds alternate the two loops and two conditions: an idle machine, and one
CPU-burning process beside them. The printed ratio is the median of per-round ratios, with their range.

Run: python benchmarks/threads.py [--rounds 5] [--steps 400]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.train_loop import load_dataset
from pipeline.core import models
from pipeline.core.data import Splits
from pipeline.core.runtime import device_splits, execution_plan, fit, intra_op_threads, place_model, with_threads
from pipeline.params import Params, load_params

ROOT = Path(__file__).resolve().parents[1]


def convbench_ms(model: nn.Module, data: Splits, params: Params, steps: int) -> float:
    """Milliseconds per step of `fit` over whole epochs totalling about `steps` steps (validation excluded)."""
    per_epoch = -(-len(data.train) // params.train.batch_size)
    epochs = max(1, round(steps / per_epoch))
    recipe = params.train.model_copy(update={"epochs": epochs})
    _history, seconds = fit(model, data, recipe, seed=0, on_epoch=lambda stats: None)
    return seconds / (epochs * per_epoch) * 1e3


def plain_ms(model: nn.Module, data: Splits, params: Params, steps: int) -> float:
    """Milliseconds per step of the authors' kind of loop, on one thread."""
    x, y = data.train.x, data.train.y
    optimizer = torch.optim.Adam(model.parameters(), lr=params.train.lr)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)
    with intra_op_threads(1):
        started = time.perf_counter()
        for _ in range(steps):
            index = torch.randint(0, len(y), (params.train.batch_size,), generator=generator)
            loss = loss_fn(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        return (time.perf_counter() - started) / steps * 1e3


@contextlib.contextmanager
def burner(on: bool) -> Iterator[None]:
    """One process spinning on a core while the block runs (or nothing)."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if on else None
    try:
        yield
    finally:
        if process is not None:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per condition")
    parser.add_argument("--steps", type=int, default=400, help="training steps per timing")
    args = parser.parse_args()
    params = load_params(ROOT / "presets" / "mnist1d-paper.yaml")
    with tempfile.TemporaryDirectory() as scratch:
        prepared = load_dataset(params, Path(scratch))
    device = torch.device("cpu")
    data = device_splits(prepared, device)
    configs = models.resolve(params, prepared.input_shape, prepared.num_classes)
    plan = execution_plan(params.train, device, prepared.input_shape)

    def fresh(name: str) -> nn.Module:
        torch.manual_seed(0)
        return place_model(models.build(configs[name]), plan)

    print(f"# mnist1d preset, batch {params.train.batch_size}, {args.steps} steps, {torch.get_num_threads()} cores")
    for name in configs:
        threads = with_threads(plan, fresh(name), data.train, params.train).threads
        print(
            f"{name}: convbench trains it with {threads.count if threads else '?'} thread(s) ({threads and threads.reason})"
        )
    for loaded in (False, True):
        results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in configs}
        with burner(loaded):
            for name in configs:  # warm-up
                convbench_ms(fresh(name), data, params, 40)
                plain_ms(fresh(name), data, params, 40)
            for index in range(args.rounds):
                for name in configs:
                    ours, theirs = results[name]
                    if index % 2:  # alternate which loop goes first
                        theirs.append(plain_ms(fresh(name), data, params, args.steps))
                    ours.append(convbench_ms(fresh(name), data, params, args.steps))
                    if not index % 2:
                        theirs.append(plain_ms(fresh(name), data, params, args.steps))
        condition = "with a CPU burner" if loaded else "idle"
        for name, (ours, theirs) in results.items():
            ratios = [o / t for o, t in zip(ours, theirs)]
            print(
                f"{condition:17s} {name:12s} convbench {statistics.median(ours):.2f} ms/step, plain one-thread "
                f"{statistics.median(theirs):.2f} ms/step: {statistics.median(ratios):.2f}x "
                f"(rounds {min(ratios):.2f}-{max(ratios):.2f}; goal at most 1.5x)",
                flush=True,
            )


if __name__ == "__main__":
    main()
