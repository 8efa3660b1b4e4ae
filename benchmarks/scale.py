"""The pipeline at the size users run it: `dvc repro` on a CIFAR-10-sized set, stage by stage, in time and memory.

A fresh copy of the project (a temporary git repository: nothing cached, every stage runs) gets a CIFAR-10-sized
set in torchvision's `cifar-10-batches-py` files (benchmarks/gpu/cifar.py: 50,000 + 10,000 32x32 colour images)
and the default models, and `dvc repro` runs there. It prints each stage's seconds (from one "Running stage" line
to the next), each stage's peak resident memory (the kernel's high-water mark, VmHWM, of the stage's largest
process: a process's fork for `git` shares its pages, so summing resident sizes would count them twice) against
the float32 splits and against the same process with only its imports done, the training steps' own seconds (`train_seconds` over every cell) and the ratio of wall time to
them. The goals (benchmarks/README.md): the ratio at most 1.3 at the full setting, every stage's peak at most
twice the float32 splits.

    .venv/bin/python benchmarks/scale.py            # full: 50,000 + 10,000 images, 12 epochs, 3 seeds
    .venv/bin/python benchmarks/scale.py --quick    # 2,000 + 500 images, 1 epoch, 1 seed (make test runs it)
    .venv/bin/python benchmarks/scale.py --default  # the project's own params.yaml (mnist5k), as it is
    .venv/bin/python benchmarks/scale.py --train 100000 --test 20000 --epochs 1 --seeds 1   # another size
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the pipeline package; benchmarks/gpu for the generator
sys.path.insert(1, str(ROOT / "benchmarks" / "gpu"))

import cifar  # noqa: E402 - benchmarks/gpu/cifar.py, on the path set just above

from pipeline.artifacts import records  # noqa: E402 - the project root is on the path only from here
from pipeline.artifacts.paths import cells_dir  # noqa: E402 - as above

FILES = ("dvc.yaml", "params.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore", ".gitignore")
FULL = {"train": 50_000, "test": 10_000, "epochs": 12, "seeds": 3}
QUICK = {"train": 2_000, "test": 500, "epochs": 1, "seeds": 1}
SAMPLE = 0.05  # seconds between memory samples


def copy_project(target: Path, settings: dict[str, object]) -> None:
    """The pipeline files and code in a fresh git repository, as a clone would have them, with `settings` (dotted
    keys) written into its params.yaml."""
    for name in FILES:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target / name)
    shutil.copytree(ROOT / "pipeline", target / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((target / "params.yaml").read_text())
    for dotted, value in settings.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for args in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "bench"],
    ):
        subprocess.run(args, cwd=target, check=True, capture_output=True)


@dataclass
class Stage:
    """One stage's run: when it started and ended, and the largest high-water mark (VmHWM) of any of its processes."""

    name: str
    started: float
    ended: float = 0.0
    peak_rss: int = 0

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Watch:
    """The stages of one `dvc repro` as its output names them, with a sampler thread reading memory."""

    root: psutil.Process
    stages: list[Stage] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        """The largest high-water mark of any process under `dvc repro` (not dvc itself), into the stage running now."""
        while not self.done.wait(SAMPLE):
            if not self.stages:
                continue
            try:
                children = self.root.children(recursive=True)
            except psutil.Error:
                continue
            current = self.stages[-1]
            for child in children:
                current.peak_rss = max(current.peak_rss, high_water_mark(child.pid))


def high_water_mark(pid: int) -> int:
    """The peak resident bytes of a process so far (VmHWM), 0 once it has ended."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else 0


def imports_only() -> int:
    """The high-water mark of a process that imports what a stage does (torch, MLflow, the train stage) and nothing
    more: what every stage holds before it reads a byte of data."""
    code = "import pipeline.stages.train, pipeline.ops.tracking, mlflow, torch._dynamo, re; from pathlib import Path; "
    code += "print(re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1))"
    found = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return int(found.stdout.strip()) * 1024


def timed_repro(project: Path) -> tuple[float, list[Stage]]:
    """Wall seconds of `dvc repro`, and each stage's seconds and peak memory."""
    env = {
        **os.environ,
        "PYTHONPATH": str(project),
        "MLFLOW_TRACKING_URI": "",
        "MPLBACKEND": "Agg",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    started = time.perf_counter()
    output: list[str] = []
    with subprocess.Popen(
        ["dvc", "repro"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        watch = Watch(psutil.Process(process.pid))
        sampler = threading.Thread(target=watch.sample, daemon=True)
        sampler.start()
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            found = re.match(r"Running stage '([^']+)'", line)
            if found:
                now = time.perf_counter()
                if watch.stages:
                    watch.stages[-1].ended = now
                watch.stages.append(Stage(found.group(1), now))
        watch.done.set()
        sampler.join()
    wall = time.perf_counter() - started
    if watch.stages:
        watch.stages[-1].ended = started + wall
    if process.returncode != 0:
        sys.exit(f"dvc repro failed:\n{''.join(output[-40:])}")
    return wall, watch.stages


def training_seconds(project: Path, dataset: str) -> float:
    """train_seconds (training steps only, no validation) summed over every cell's metrics record."""
    found = sorted((project / cells_dir(dataset)).glob("*.json"))
    if not found:
        sys.exit(f"no cell metrics under {project / cells_dir(dataset)}: did the evaluate stage run?")
    return sum(records.load_json(records.CellMetrics, path, "").train_seconds for path in found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="2,000 + 500 images, 1 epoch, 1 seed")
    mode.add_argument("--default", action="store_true", help="the project's own params.yaml, as it is")
    for knob in FULL:
        parser.add_argument(f"--{knob}", type=int, help=f"{knob} instead of the mode's ({FULL[knob]:,} in full)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project")
    args = parser.parse_args()
    size = {knob: getattr(args, knob) or value for knob, value in (QUICK if args.quick else FULL).items()}
    project = Path(tempfile.mkdtemp(prefix="convbench-scale-"))
    try:
        if args.default:
            copy_project(project, {})
            dataset, images = str(yaml.safe_load((ROOT / "params.yaml").read_text())["data"]["name"][0]), 0
        else:
            dataset, images = "cifar10", size["train"] + size["test"]
            copy_project(
                project,
                {
                    "data.name": [dataset],
                    "data.verify_checksums": False,  # generated files: torchvision's md5s are the real CIFAR-10's
                    "train.epochs": size["epochs"],
                    "train.seeds": list(range(size["seeds"])),
                },
            )
            cifar.write(project / "data" / "raw" / dataset, size["train"], size["test"])
        floor = imports_only()
        wall, stages = timed_repro(project)
        training = training_seconds(project, dataset)
        splits = images * 3 * 32 * 32 * 4
        what = "the project's params.yaml" if args.default else f"{size['train']:,} + {size['test']:,} images"
        print(f"dvc repro ({what}): {wall:.1f} s wall; training steps {training:.1f} s; ratio {wall / training:.2f}")
        print(
            f"float32 splits: {splits / 2**30:.2f} GiB; a process with a stage's imports only: {floor / 2**30:.2f} GiB"
        )
        groups: dict[str, list[Stage]] = {}
        for stage in stages:
            groups.setdefault(stage.name.split("@")[0], []).append(stage)
        print(f"  {'stage':<9} {'seconds':>9}  {'peak':>9}  {'x splits':>8}  {'above imports':>13}  {'x splits':>8}")
        for name, runs in groups.items():
            peak = max(run.peak_rss for run in runs)
            above = max(0, peak - floor)
            ratios = (f"{peak / splits:8.2f}", f"{above / splits:8.2f}") if splits else ("", "")
            print(
                f"  {name:<9} {sum(run.seconds for run in runs):7.1f} s  {peak / 2**30:5.2f} GiB  {ratios[0]}  "
                f"{above / 2**30:9.2f} GiB  {ratios[1]}"
            )
    finally:
        if args.keep:
            print(f"project kept in {project}")
        else:
            shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
