"""How long the whole pipeline takes next to the training it exists for: wall time of `dvc repro -f` over the
training steps' own time, with a per-stage breakdown.

The project's pipeline files are copied into a fresh temporary git repository (nothing cached, so every
stage runs), `dvc repro -f` runs there, and the time between consecutive "Running stage" lines of its
output is each stage's share. The training time is the sum of `train_seconds` (training steps only,
no validation) over every cell's metrics file.

    .venv/bin/python benchmarks/pipeline.py            # the default params.yaml
    .venv/bin/python benchmarks/pipeline.py --keep     # keep the temporary project to look at
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ("dvc.yaml", "params.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore", ".gitignore")


def copy_project(target: Path) -> None:
    """The pipeline files and code in a fresh git repository, as a clone would have them."""
    for name in FILES:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target / name)
    shutil.copytree(ROOT / "pipeline", target / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    for args in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "bench"],
    ):
        subprocess.run(args, cwd=target, check=True, capture_output=True)


def timed_repro(project: Path) -> tuple[float, list[tuple[str, float]]]:
    """Wall seconds of `dvc repro -f`, and (stage, seconds) from one "Running stage" line to the next."""
    env = {
        **os.environ,
        "PYTHONPATH": str(project),
        "MLFLOW_TRACKING_URI": "",
        "MPLBACKEND": "Agg",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    started = time.perf_counter()
    marks: list[tuple[str, float]] = []
    with subprocess.Popen(
        ["dvc", "repro", "-f"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        output = []
        for line in process.stdout:
            output.append(line)
            found = re.match(r"Running stage '([^']+)'", line)
            if found:
                marks.append((found.group(1), time.perf_counter()))
    wall = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"dvc repro -f failed:\n{''.join(output[-40:])}")
    ends = [at for _stage, at in marks[1:]] + [started + wall]
    return wall, [(stage, end - at) for (stage, at), end in zip(marks, ends)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary project")
    args = parser.parse_args()
    project = Path(tempfile.mkdtemp(prefix="convbench-pipeline-"))
    try:
        copy_project(project)
        wall, stages = timed_repro(project)
        training = sum(
            json.loads(path.read_text())["train_seconds"] for path in (project / "metrics" / "cells").glob("*.json")
        )
        print(f"dvc repro -f: {wall:.1f} s wall; training steps {training:.1f} s; ratio {wall / training:.2f}")
        groups: dict[str, list[float]] = {}
        for stage, seconds in stages:
            groups.setdefault(stage.split("@")[0], []).append(seconds)
        for stage, seconds in groups.items():
            print(
                f"  {stage:<9} {sum(seconds):6.1f} s in {len(seconds)} process(es), "
                f"{sum(seconds) / len(seconds):.1f} s each"
            )
    finally:
        if args.keep:
            print(f"project kept in {project}")
        else:
            shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
