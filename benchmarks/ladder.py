"""The 4-model ladder trained with train.workers 1 and 2, interleaved in one run, and the LCN's training step.

A scratch project trains linear, mlp, lcn and cnn (2 seeds, a few epochs) with `convbench train --workers 1`
and `--workers 2` in alternating order, round by round, from an empty models/ folder each time, and prints
each round's wall times, the median of the per-round ratios (workers 1 / workers 2) and their range. Then
`convbench bench` times every model side by side on the trained cells and the LCN/CNN training-step ratio is
read from metrics/bench.json (the median of its per-round paired ratios).

Run: python benchmarks/ladder.py [--rounds 3] [--epochs 3] [--dataset mnist5k]
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
    for name in ("models", "curves"):
        shutil.rmtree(folder / name, ignore_errors=True)
    return convbench("train", folder, "--workers", str(workers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (each trains the ladder twice)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per cell")
    parser.add_argument("--dataset", default="mnist5k", help="data.name (an offline set)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ladder") as scratch:
        folder = Path(scratch)
        scratch_project(folder, args.dataset, args.epochs)
        print(
            f"# {args.dataset}: linear, mlp, lcn, cnn x 2 seeds x {args.epochs} epochs, {os.cpu_count()} CPUs, "
            f"{args.rounds} rounds",
            flush=True,
        )
        ratios = []
        walls: dict[int, list[float]] = {1: [], 2: []}
        for index in range(args.rounds):
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
        bench = json.loads((folder / "metrics" / "bench.json").read_text())
        step = next(case for name, case in bench["cases"].items() if name.startswith("training_step"))
        lcn = step["ratios"]["lcn"]
        rates = {name: model["images_per_second"] for name, model in step["models"].items()}
        print(
            f"LCN/CNN training step: {lcn['median']:.2f} [{lcn['low']:.2f}, {lcn['high']:.2f}] "
            f"({rates['lcn']:,.0f} vs {rates['cnn']:,.0f} img/s, bench stage, {bench['rounds']} rounds)"
        )


if __name__ == "__main__":
    main()
