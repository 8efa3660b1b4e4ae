"""The 4-model ladder trained with train.workers 1 and 2, interleaved in one run, and the LCN's training step.

For each dataset a scratch project trains linear, mlp, lcn and cnn (2 seeds, a few epochs) with
`convbench train --workers 1` and `--workers 2` in alternating order, round by round, from empty models/ and results/
folder each time, and prints each round's wall times, the median of the per-round ratios (workers 1 /
workers 2) and their range. Then `convbench bench` times every model side by side on the trained cells and
the LCN/CNN training-step ratio is read from results/<dataset>/bench.json (the median of its per-round paired ratios).

Last, the bound: each model's training step is timed with one thread and with the threads a lone cell gets
(interleaved, torch.utils.benchmark), and the line says how much faster two one-thread workers could be than
one process at most, on the training steps alone (no start-up, no logging, both cores fully independent).

Run: python benchmarks/ladder.py [--rounds 3] [--dataset mnist5k mnist1d] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the pipeline package
CONVBENCH = str(Path(sys.executable).with_name("convbench"))


def scratch_project(folder: Path, dataset: str, epochs: int) -> None:
    """params.yaml for the ladder in `folder`, with the dataset downloaded and prepared there."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(name=dataset, root=str(folder / "raw"))
    params["models"] = ["linear", "mlp", "lcn", "cnn"]
    params["train"].update(seeds=[0, 1], epochs=epochs)
    params["tracking"].update(uri=f"sqlite:///{folder / 'mlflow.db'}", log_model=False)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("download", "prepare"):
        convbench(stage, folder)


def convbench(stage: str, folder: Path, *args: str) -> float:
    """Seconds one `convbench <stage>` took; any failure stops the benchmark with its last line."""
    started = time.perf_counter()
    done = subprocess.run([CONVBENCH, stage, *args], cwd=folder, capture_output=True, text=True, env=os.environ)
    if done.returncode != 0:
        raise SystemExit(f"convbench {stage} {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - started


def train_seconds(folder: Path, workers: int) -> float:
    """Wall seconds to train every cell from scratch with `workers` worker processes."""
    for name in ("models", "results"):  # every checkpoint and curve: no cell is current
        shutil.rmtree(folder / name, ignore_errors=True)
    return convbench("train", folder, "--workers", str(workers))


def step_bound(folder: Path) -> str:
    """How much faster two one-thread workers could train the ladder than one process choosing threads per cell,
    from each model's training step timed alone at 1 thread and at its chosen threads, interleaved."""
    import torch

    from pipeline.core import cell as cells
    from pipeline.core import models
    from pipeline.core.runtime import choose_threads
    from pipeline.core.timing import time_interleaved
    from pipeline.params import load_params

    cores = torch.get_num_threads()
    params = load_params(folder / "params.yaml")
    prepared = cells.prepared_data(params)
    x, y = (
        prepared.splits.train.x[: params.train.batch_size].float(),
        prepared.splits.train.y[: params.train.batch_size],
    )
    work, chosen = {}, {}
    for cell in cells.resolve(params, prepared, seeds=[0]):
        model = models.build(cell.config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=params.train.lr)
        chosen[cell.model] = choose_threads(model, x[:2], y[:2], len(x), None).count

        def step(model: torch.nn.Module = model, optimizer: torch.optim.Optimizer = optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()

        for threads in sorted({1, chosen[cell.model]}):
            work[(cell.model, threads)] = lambda step=step, threads=threads: (torch.set_num_threads(threads), step())
    timed = time_interleaved({f"{m}@{t}": fn for (m, t), fn in work.items()}, "step", len(x), 5, 0.2, x.device)
    torch.set_num_threads(cores)
    seconds = {name: statistics.median(values) for name, values in timed.seconds.items()}
    alone = sum(seconds[f"{m}@{t}"] for m, t in chosen.items())
    one_thread = sum(seconds[f"{m}@1"] for m in chosen)
    gains = ", ".join(f"{m} {seconds[f'{m}@1'] / seconds[f'{m}@{t}']:.2f}x on {t}" for m, t in chosen.items())
    return (
        f"bound: one process runs each step with the threads it chooses ({gains} against 1 thread); two one-thread "
        f"workers can be at most {2 * alone / one_thread:.2f}x faster on the training steps"
    )


def ladder(dataset: str, epochs: int, rounds: int) -> None:
    """Print the workers 1 vs 2 walls, the LCN/CNN training step and the bound for one dataset."""
    with tempfile.TemporaryDirectory(prefix="ladder") as scratch:
        folder = Path(scratch)
        scratch_project(folder, dataset, epochs)
        print(
            f"# {dataset}: linear, mlp, lcn, cnn x 2 seeds x {epochs} epochs, {os.cpu_count()} CPUs, {rounds} rounds",
            flush=True,
        )
        ratios = []
        walls: dict[int, list[float]] = {1: [], 2: []}
        for index in range(rounds):
            order = (1, 2) if index % 2 == 0 else (2, 1)
            seconds = {workers: train_seconds(folder, workers) for workers in order}
            for workers, value in seconds.items():
                walls[workers].append(value)
            ratios.append(seconds[1] / seconds[2])
            print(
                f"round {index + 1}: workers 1 {seconds[1]:.1f} s, workers 2 {seconds[2]:.1f} s, {ratios[-1]:.2f}x",
                flush=True,
            )
        print(
            f"workers 2 vs 1: {statistics.median(ratios):.2f}x faster (rounds {min(ratios):.2f}-{max(ratios):.2f}; "
            f"median wall {statistics.median(walls[1]):.1f} s vs {statistics.median(walls[2]):.1f} s)"
        )
        convbench("bench", folder)
        bench = json.loads((folder / "results" / dataset / "bench.json").read_text())  # paths.bench(dataset)
        step = next(case for name, case in bench["cases"].items() if name.startswith("training_step"))
        lcn = step["ratios"]["lcn"]
        rates = {name: model["images_per_second"] for name, model in step["models"].items()}
        print(
            f"LCN/CNN training step: {lcn['median']:.2f} [{lcn['low']:.2f}, {lcn['high']:.2f}] "
            f"({rates['lcn']:,.0f} vs {rates['cnn']:,.0f} img/s, bench stage, {bench['rounds']} rounds)",
            flush=True,
        )
        previous = Path.cwd()
        os.chdir(folder)  # prepared data and params paths are relative to the project
        try:
            print(step_bound(folder), flush=True)
        finally:
            os.chdir(previous)


EPOCHS = {"mnist5k": 3, "mnist1d": 30}  # a few seconds per cell on 2 cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (each trains the ladder twice)")
    parser.add_argument("--dataset", nargs="+", default=list(EPOCHS), help="data.name of offline sets, in turn")
    parser.add_argument("--epochs", type=int, help="epochs per cell (default: 3 on mnist5k, 30 on mnist1d, else 3)")
    args = parser.parse_args()
    for dataset in args.dataset:
        ladder(dataset, args.epochs or EPOCHS.get(dataset, 3), args.rounds)


if __name__ == "__main__":
    main()
