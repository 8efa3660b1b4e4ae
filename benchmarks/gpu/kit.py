"""The GPU kit: convbench's CUDA path run for real, in one go, into one output folder (run.sh calls this).

Steps, each in scratch projects under --work, each logged to <out>/logs/<n>-<step>.log and timed:

- default: `convbench run` (every stage in one process) on mnist5k with train.device, precision auto (bf16
  autocast on CUDA) and compile false: the project's own params.yaml otherwise.
- tests: `pytest -m gpu` on the test files that use the marker (they skip without CUDA).
- cifar: a CIFAR-10-sized set generated in cifar-10-batches-py format (benchmarks/gpu/cifar.py), `convbench run`
  for the CNN and the MLP: images/s, MFU against the bench stage's matmul peak, time to accuracy, peak memory.
- compile: the CNN cells of the default run again with train.compile true (train and evaluate), against eager.
- ladder: the 4-model ladder (linear, mlp, lcn, cnn) and the augment probe on mnist5k, a few epochs, with
  train.workers cells at once (one GPU each; on one GPU they share it).
- torchrun: one cell under torchrun with NCCL, one process per GPU; needs two or more GPUs, else skipped.

Every step's reports, metrics, results, params and MLflow store are copied into <out>/<step>/ by globbing (reports/**,
metrics/**, results/**), so outputs that move to other folders still come along. A failed step does not stop the others.
It ends with a summary table (printed, and in <out>/summary.md and summary.json); exit 1 if any step failed.

Run: benchmarks/gpu/run.sh --device cuda --out DIR   (run.sh first installs the carried wheels; see README.md)
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STEPS = ("default", "tests", "cifar", "compile", "ladder", "torchrun")
LADDER = ["linear", "mlp", "lcn", "cnn"]
KEEP = (
    "params.yaml",
    "reports/**/*",
    "metrics/**/*",
    "results/**/*",
    "tuned/**/*.yaml",
    "mlflow.db",
)  # what each project leaves
# top-level modules the steps import; the GPU machine's image lacks pydantic, mlflow, sqlalchemy, alembic, mako and
# mlxtend (benchmarks/gpu/wheels.txt carries them with what they need)
NEEDED = ["yaml", "typer", "rich", "pandas", "matplotlib", "sklearn", "scipy", "torchvision", "pydantic", "mlflow"]
NEEDED += ["sqlalchemy", "alembic", "mako", "mlxtend"]


@dataclass
class Step:
    """One step's outcome."""

    name: str
    status: str = "skipped"  # ok | failed | timeout | skipped
    seconds: float = 0.0
    detail: str = ""
    log: str = ""


@dataclass
class Kit:
    """Where the kit works and writes, and how large its runs are."""

    args: argparse.Namespace
    out: Path
    work: Path
    env: dict[str, str]
    started: float = field(default_factory=time.perf_counter)

    def project(self, name: str) -> Path:
        folder = self.work / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def params(self, project: Path, overrides: dict[str, Any]) -> Path:
        """The project's params.yaml: this repo's params.yaml with the kit's settings and `overrides` (dotted keys)."""
        params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
        common = {
            "data.root": str(project / "data" / "raw"),
            "train.device": self.args.device,
            "train.precision": "auto",
            "train.compile": False,
            "tune.trials": 0,
            "probes.run": [],
            "evaluate.rounds": self.args.rounds,
            "evaluate.min_run_time": self.args.min_run_time,
            "tracking.uri": f"sqlite:///{project / 'mlflow.db'}",
        }
        for dotted, value in {**common, **overrides, **self.args.set}.items():
            *parents, last = dotted.split(".")
            node = params
            for key in parents:
                node = node.setdefault(key, {})
            node[last] = value
        path = project / "params.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
        return path

    def remaining(self) -> float:
        return self.args.budget - (time.perf_counter() - self.started)


def convbench(*args: str | Path) -> list[str]:
    """A convbench command as the GPU machine runs it: the package from PYTHONPATH, no console script."""
    return [sys.executable, "-m", "pipeline", *map(str, args)]


def run_commands(kit: Kit, step: Step, commands: list[tuple[list[str], Path]], extra_env: dict[str, str]) -> None:
    """Run commands in turn, appending to the step's log; stop at the first failure or past the step's time."""
    deadline = time.perf_counter() + min(kit.args.step_timeout, max(kit.remaining(), 30.0))
    env = {**kit.env, **extra_env}
    with open(step.log, "a", encoding="utf-8") as log:
        for command, cwd in commands:
            log.write(f"$ {' '.join(command)}   (in {cwd})\n")
            log.flush()
            process = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                code = process.wait(timeout=max(deadline - time.perf_counter(), 1.0))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: the command and the workers it started
                process.wait()
                step.status, step.detail = "timeout", f"stopped at its time limit: {' '.join(command[-4:])}"
                return
            if code != 0:
                step.status, step.detail = "failed", f"exit {code}: {last_line(Path(step.log))}"
                return
    step.status = "ok"


def last_line(log: Path) -> str:
    """The last non-empty line of a log, where a convbench error's one line is."""
    lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def keep(project: Path, destination: Path) -> None:
    """Copy what the project wrote that a person reads (reports, metrics, params, the MLflow store) into `out`."""
    for pattern in KEEP:
        for source in glob.glob(str(project / pattern), recursive=True):
            path = Path(source)
            if path.is_file():
                target = destination / path.relative_to(project)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)


def copy_data(source: Path, project: Path) -> bool:
    """Reuse another project's raw and prepared data (same params.data), so only training reruns."""
    if not (source / "data").is_dir():
        return False
    shutil.copytree(source / "data", project / "data", dirs_exist_ok=True)
    return True


# --- the steps -------------------------------------------------------------------------------------------------


def step_default(kit: Kit, step: Step) -> None:
    project = kit.project("default")
    params = kit.params(
        project,
        {"data.name": kit.args.dataset, "train.epochs": kit.args.epochs, "train.seeds": list(range(kit.args.seeds))},
    )
    run_commands(kit, step, [(convbench("run", "-p", params), project)], {})


def step_compile(kit: Kit, step: Step) -> None:
    project = kit.project("compile")
    settings = {
        "data.name": kit.args.dataset,
        "train.epochs": kit.args.epochs,
        "train.seeds": list(range(kit.args.seeds)),
        "train.compile": True,
        "models": ["cnn"],
        "reference": "cnn",
    }
    params = kit.params(project, settings)
    commands = (
        []
        if copy_data(kit.work / "default", project)
        else [(convbench(s, "-p", params), project) for s in ("download", "prepare")]
    )
    commands += [(convbench(stage, "-p", params), project) for stage in ("train", "evaluate")]
    # the rehearsal runs the step's plumbing without inductor's minutes of compiling
    extra = {"TORCH_COMPILE_DISABLE": "1"} if kit.args.compile_disabled else {}
    run_commands(kit, step, commands, extra)
    if step.status == "ok" and extra:
        step.detail = "TORCH_COMPILE_DISABLE=1: plumbing only, nothing compiled"


def step_ladder(kit: Kit, step: Step) -> None:
    project = kit.project("ladder")
    settings = {
        "data.name": kit.args.dataset,
        "models": LADDER,
        "reference": "cnn",
        "train.epochs": kit.args.ladder_epochs,
        "train.seeds": list(range(kit.args.ladder_seeds)),
        "train.workers": kit.args.ladder_workers,
        "probes.run": ["augment"],
        "probes.augment.shifts": kit.args.augment_shifts,
    }
    params = kit.params(project, settings)
    copy_data(kit.work / "default", project)
    run_commands(kit, step, [(convbench("run", "-p", params), project)], {})


def step_cifar(kit: Kit, step: Step) -> None:
    project = kit.project("cifar")
    settings = {
        "data.name": "cifar10",
        "data.verify_checksums": False,  # generated files: torchvision's md5s are those of the real CIFAR-10
        "models": ["cnn", "mlp"],
        "reference": "cnn",
        "train.epochs": kit.args.cifar_epochs,
        "train.seeds": list(range(kit.args.cifar_seeds)),
    }
    params = kit.params(project, settings)
    generate = [
        sys.executable,
        str(HERE / "cifar.py"),
        str(project / "data" / "raw" / "cifar10"),
        "--train",
        str(kit.args.cifar_train),
        "--test",
        str(kit.args.cifar_test),
    ]
    run_commands(kit, step, [(generate, project), (convbench("run", "-p", params), project)], {})


def gpu_test_files() -> list[str]:
    """The test files that use the gpu marker (pytest collects only these: other files import dvc or optuna,
    which the GPU machine lacks)."""
    return sorted(str(p) for p in (ROOT / "tests").glob("test_*.py") if "mark.gpu" in p.read_text(encoding="utf-8"))


def step_tests(kit: Kit, step: Step) -> None:
    files = gpu_test_files()
    if not files:
        step.status, step.detail = "failed", "no test file uses the gpu marker"
        return
    (kit.out / "tests").mkdir(exist_ok=True)
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "-q", "-rs"]
    command += ["--junitxml", str(kit.out / "tests" / "junit.xml"), *files]
    run_commands(kit, step, [(command, ROOT)], {})
    counts = last_line(Path(step.log))
    step.detail = counts if step.status == "ok" else step.detail


def step_torchrun(kit: Kit, step: Step) -> None:
    import torch

    gpus = torch.cuda.device_count() if kit.args.device == "cuda" else 0
    if gpus < 2:
        step.detail = (
            f"needs 2+ GPUs for NCCL, found {gpus} (torchrun with one process never starts a process group; "
            f"tests/test_train.py covers gloo on CPU)"
        )
        return
    project = kit.project("torchrun")
    params = kit.params(project, {"data.name": kit.args.dataset, "train.epochs": kit.args.epochs, "train.seeds": [0]})
    commands = (
        []
        if copy_data(kit.work / "default", project)
        else [(convbench(s, "-p", params), project) for s in ("download", "prepare")]
    )
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus)]
    commands.append(([*torchrun, "-m", "pipeline", "train", "-p", str(params), "-m", "cnn", "-s", "0"], project))
    run_commands(kit, step, commands, {})
    step.detail = f"{gpus} processes, NCCL" if step.status == "ok" else step.detail


RUNNERS = {
    "default": step_default,
    "tests": step_tests,
    "cifar": step_cifar,
    "compile": step_compile,
    "ladder": step_ladder,
    "torchrun": step_torchrun,
}


# --- the summary ---------------------------------------------------------------------------------------------


def read_json(pattern: str) -> list[dict[str, Any]]:
    return [json.loads(Path(p).read_text(encoding="utf-8")) for p in sorted(glob.glob(pattern, recursive=True))]


def curves(folder: Path) -> dict[str, list[list[dict[str, float]]]]:
    """Per model, each seed's per-epoch rows (results/**/curves/<model>-s<seed>.csv)."""
    found: dict[str, list[list[dict[str, float]]]] = {}
    for path in sorted(glob.glob(str(folder / "results" / "**" / "curves" / "*.csv"), recursive=True)):
        model = Path(path).stem.rsplit("-s", 1)[0]
        with open(path, encoding="utf-8") as handle:
            found.setdefault(model, []).append(
                [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
            )
    return found


def time_to(rows: list[dict[str, float]], target: float) -> float | None:
    """Seconds (training and validation) until val accuracy first reached `target`; None when it never did."""
    return next((row["elapsed_seconds"] for row in rows if row["val_accuracy"] >= target), None)


def project_rows(folder: Path, target: float) -> list[dict[str, Any]]:
    """One row per model of one project: accuracy, speeds, MFU, memory, time to target, from its copied metrics."""
    cells = read_json(str(folder / "results" / "**" / "cells" / "*.json"))
    benches = read_json(str(folder / "results" / "**" / "bench.json"))
    bench = benches[0] if benches else {}
    histories = curves(folder)
    rows = []
    for model in dict.fromkeys(c["model"] for c in cells):
        mine = [c for c in cells if c["model"] == model]
        row: dict[str, Any] = {
            "model": model,
            "seeds": len(mine),
            "test_accuracy": statistics.mean(c["test_accuracy"] for c in mine),
            "train_images_per_second": statistics.mean(c["train_images_per_second"] for c in mine),
            "peak_memory_mb_train_step": max(c["peak_memory_mb"]["train_step"] for c in mine),
            "peak_memory_mb_inference": max(c["peak_memory_mb"]["inference"] for c in mine),
            "device": mine[0].get("context", {}).get("device_name", ""),
            "dtype": mine[0].get("context", {}).get("dtype", ""),
        }
        for case, speeds in bench.get("cases", {}).items():
            if model in speeds.get("models", {}) and case.startswith("training_step"):
                row["bench_train_step_images_per_second"] = speeds["models"][model]["images_per_second"]
        largest = max(
            (c for c in bench.get("cases", {}) if c.startswith("inference")),
            key=lambda c: int(c.rsplit("_", 1)[1]),
            default=None,
        )
        if largest and model in bench["cases"][largest].get("models", {}):
            row["bench_inference_images_per_second"] = bench["cases"][largest]["models"][model]["images_per_second"]
            row["bench_inference_batch"] = int(largest.rsplit("_", 1)[1])
        if model in bench.get("mfu", {}):
            row["mfu_train"] = bench["mfu"][model]["train"]
            row["mfu_inference"] = bench["mfu"][model]["inference"]
        seeds = histories.get(model, [])
        reached = [t for t in (time_to(rows_, target) for rows_ in seeds) if t is not None]
        row["target_accuracy"] = target
        row["seconds_to_target"] = statistics.mean(reached) if reached else None
        row["seeds_reaching_target"] = f"{len(reached)}/{len(seeds)}"
        epoch_seconds = [r["seconds"] for history in seeds for r in history]
        later = [r["seconds"] for history in seeds for r in history[1:]]
        row["first_epoch_seconds"] = statistics.mean(h[0]["seconds"] for h in seeds) if seeds else None
        row["later_epoch_seconds"] = (
            statistics.median(later) if later else (statistics.median(epoch_seconds) if epoch_seconds else None)
        )
        rows.append(row)
    return rows


def summarize(kit: Kit, steps: list[Step]) -> dict[str, Any]:
    targets = {"default": kit.args.target_mnist, "compile": kit.args.target_mnist, "ladder": kit.args.target_mnist}
    targets["cifar"] = kit.args.target_cifar
    projects = {
        name: project_rows(kit.out / name, target) for name, target in targets.items() if (kit.out / name).is_dir()
    }
    peak = {}
    for name in projects:
        benches = read_json(str(kit.out / name / "results" / "**" / "bench.json"))
        if benches:
            peak[name] = benches[0].get("matmul_flops_per_second")
    probes = {}
    for path in sorted(glob.glob(str(kit.out / "ladder" / "results" / "**" / "probes" / "*.json"), recursive=True)):
        result = json.loads(Path(path).read_text(encoding="utf-8"))
        table: dict[str, dict[str, list[float]]] = {}
        for row in result.get("rows", []):
            table.setdefault(str(row["setting"]), {}).setdefault(row["model"], []).append(row["test_accuracy"])
        probes[result.get("probe", Path(path).stem)] = {
            setting: {model: statistics.mean(values) for model, values in models.items()}
            for setting, models in table.items()
        }
    return {
        "steps": [asdict(s) for s in steps],
        "projects": projects,
        "matmul_flops_per_second": peak,
        "probes": probes,
        "total_seconds": time.perf_counter() - kit.started,
    }


def fmt(value: Any, spec: str = ",.0f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def markdown(summary: dict[str, Any], environment: dict[str, Any]) -> str:
    lines = [
        "# GPU kit summary",
        "",
        f"{environment['device_name']} ({environment['device']}), torch {environment['torch']}, CUDA {environment['cuda']}, "
        f"Python {environment['python']}; {summary['total_seconds']:.0f} s in all",
        "",
        "| step | status | seconds | detail |",
        "|---|---|---:|---|",
    ]
    lines += [f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {s['detail']} |" for s in summary["steps"]]
    for name, rows in summary["projects"].items():
        peak = summary["matmul_flops_per_second"].get(name)
        lines += [
            "",
            f"## {name}" + (f" (bench matmul peak {peak / 1e12:,.3g} TFLOP/s)" if peak else ""),
            "",
            "| model | seeds | test acc | train img/s | bench step img/s | bench infer img/s | MFU train | MFU infer "
            "| peak MiB step | peak MiB infer | 1st epoch s | later epoch s | s to target |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['model']} | {r['seeds']} | {r['test_accuracy']:.4f} | {fmt(r['train_images_per_second'])} "
                f"| {fmt(r.get('bench_train_step_images_per_second'))} | {fmt(r.get('bench_inference_images_per_second'))} "
                f"| {fmt(r.get('mfu_train'), '.2%')} | {fmt(r.get('mfu_inference'), '.2%')} "
                f"| {fmt(r['peak_memory_mb_train_step'], ',.1f')} | {fmt(r['peak_memory_mb_inference'], ',.1f')} "
                f"| {fmt(r['first_epoch_seconds'], '.2f')} | {fmt(r['later_epoch_seconds'], '.3f')} "
                f"| {fmt(r['seconds_to_target'], '.2f')} ({r['target_accuracy']:.0%}: {r['seeds_reaching_target']}) |"
            )
    eager = {r["model"]: r for r in summary["projects"].get("default", [])}.get("cnn")
    compiled = {r["model"]: r for r in summary["projects"].get("compile", [])}.get("cnn")
    if eager and compiled and eager["later_epoch_seconds"] and compiled["later_epoch_seconds"]:
        lines += [
            "",
            f"compile: cnn epochs after the first {eager['later_epoch_seconds']:.3f} s eager, "
            f"{compiled['later_epoch_seconds']:.3f} s compiled ({eager['later_epoch_seconds'] / compiled['later_epoch_seconds']:.2f}x); "
            f"first epoch {eager['first_epoch_seconds']:.2f} s vs {compiled['first_epoch_seconds']:.2f} s",
        ]
    for probe, table in summary["probes"].items():
        models = list(dict.fromkeys(m for row in table.values() for m in row))
        lines += [
            "",
            f"## probe {probe} (ladder project, test accuracy)",
            "",
            "| setting | " + " | ".join(models) + " |",
        ]
        lines.append("|---|" + "---:|" * len(models))
        lines += [f"| {s} | " + " | ".join(fmt(row.get(m), ".4f") for m in models) + " |" for s, row in table.items()]
    return "\n".join(lines) + "\n"


# --- the whole run -------------------------------------------------------------------------------------------


def environment(device: str) -> dict[str, Any]:
    import torch

    cuda = device == "cuda"
    return {
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
        "gpus": torch.cuda.device_count() if cuda else 0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "commit": _commit(),
    }


def _commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except OSError:
        return ""
    return done.stdout.strip()


def preflight(device: str) -> str | None:
    """One line saying why the kit cannot run here, or None."""
    try:
        import torch
    except ImportError as exc:
        return f"gpu-kit: torch cannot be imported ({exc}); run with the Python that holds torch (PYTHON=...)"
    if device == "cuda" and not torch.cuda.is_available():
        return (
            f"gpu-kit: --device cuda, but torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() "
            f"is False); run on a GPU machine, or rehearse with --device cpu"
        )
    import importlib.util

    missing = []
    for module in NEEDED:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # benchmarks/gpu/simulate.py refuses modules the GPU machine lacks
            found = False
        if not found:
            missing.append(module)
    if missing:
        return (
            f"gpu-kit: cannot import {', '.join(missing)}; fetch the wheels with `make gpu-wheels`, carry .whl "
            f"(run.sh installs them), or add what is missing to benchmarks/gpu/wheels.txt"
        )
    return None


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--out", type=Path, required=True, help="folder for every figure, report, metric and log")
    parser.add_argument("--work", type=Path, help="scratch projects (default: a temporary folder, removed at the end)")
    parser.add_argument(
        "--steps", default=",".join(STEPS), help=f"comma-separated, in order (default: {','.join(STEPS)})"
    )
    parser.add_argument("--budget", type=float, default=480, help="seconds; steps not started by then are skipped")
    parser.add_argument(
        "--step-timeout", type=float, default=300, help="seconds one step may take before it is stopped"
    )
    parser.add_argument(
        "--dataset", default="mnist5k", help="data.name of every step but cifar (the rehearsal: digits)"
    )
    parser.add_argument("--epochs", type=int, default=12, help="default and compile runs (params.yaml: 12)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 of the default and compile runs")
    parser.add_argument("--rounds", type=int, default=7, help="bench rounds (evaluate.rounds, at least 3)")
    parser.add_argument("--min-run-time", type=float, default=0.05, help="bench seconds per sample")
    parser.add_argument("--ladder-epochs", type=int, default=3)
    parser.add_argument("--ladder-seeds", type=int, default=2)
    parser.add_argument("--ladder-workers", type=int, help="train.workers of the ladder (default: 2 on cuda, 1 on cpu)")
    parser.add_argument("--augment-shifts", default="0,1,2,3", help="probes.augment.shifts (0 is the baseline)")
    parser.add_argument("--cifar-train", type=int, default=50_000, help="generated training images (CIFAR-10: 50,000)")
    parser.add_argument("--cifar-test", type=int, default=10_000, help="generated test images (CIFAR-10: 10,000)")
    parser.add_argument("--cifar-epochs", type=int, default=5)
    parser.add_argument("--cifar-seeds", type=int, default=1)
    parser.add_argument("--target-mnist", type=float, default=0.95, help="val accuracy for time to accuracy on mnist5k")
    parser.add_argument(
        "--target-cifar", type=float, default=0.9, help="val accuracy for time to accuracy on the CIFAR set"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="params of every project (dotted key, YAML value), after the kit's own, e.g. --set evaluate.shifts=[0]",
    )
    parser.add_argument(
        "--compile-disabled", action="store_true", help="run the compile step with TORCH_COMPILE_DISABLE=1 (rehearsal)"
    )
    args = parser.parse_args(argv)
    args.steps = [s for s in args.steps.split(",") if s]
    unknown = [s for s in args.steps if s not in RUNNERS]
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}; pick from {', '.join(STEPS)}")
    args.augment_shifts = [int(s) for s in args.augment_shifts.split(",")]
    settings = {}
    for item in args.set:
        key, equals, value = item.partition("=")
        if not equals or not key:
            parser.error(f"--set {item}: write KEY=VALUE, e.g. --set evaluate.rounds=5")
        settings[key.strip()] = yaml.safe_load(value)
    args.set = settings
    args.ladder_workers = args.ladder_workers or (2 if args.device == "cuda" else 1)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    problem = preflight(args.device)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    out = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)  # every project names its own store
    scratch = None if args.work else tempfile.mkdtemp(prefix="gpu-kit-")
    work = (args.work or Path(scratch or ".")).resolve()
    kit = Kit(args, out, work, env)
    info = environment(args.device)
    if args.device == "cuda" and shutil.which("nvidia-smi"):  # the driver, clocks and memory before anything runs
        with open(out / "logs" / "nvidia-smi.txt", "w", encoding="utf-8") as smi:
            subprocess.run(["nvidia-smi"], stdout=smi, stderr=subprocess.STDOUT, timeout=60, check=False)
    (out / "environment.json").write_text(
        json.dumps({**info, "args": vars(args)}, indent=2, default=str), encoding="utf-8"
    )
    print(
        f"gpu-kit: {info['device_name']} ({args.device}), torch {info['torch']}; steps {', '.join(args.steps)}; out {out}",
        flush=True,
    )
    steps: list[Step] = []
    try:
        for index, name in enumerate(args.steps, start=1):
            step = Step(name, log=str(out / "logs" / f"{index:02d}-{name}.log"))
            steps.append(step)
            if kit.remaining() <= 0:
                step.detail = f"over the {args.budget:.0f} s budget"
            else:
                began = time.perf_counter()
                try:
                    RUNNERS[name](kit, step)
                except Exception as exc:  # noqa: BLE001 - one step's bug must not cost the other steps their turn
                    step.status, step.detail = "failed", f"{type(exc).__name__}: {exc}"
                step.seconds = time.perf_counter() - began
                if (work / name).is_dir():
                    keep(work / name, out / name)
            print(f"gpu-kit: {name}: {step.status} in {step.seconds:.1f} s {step.detail}".rstrip(), flush=True)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    summary = summarize(kit, steps)
    (out / "summary.json").write_text(json.dumps({**summary, "environment": info}, indent=2), encoding="utf-8")
    text = markdown(summary, info)
    (out / "summary.md").write_text(text, encoding="utf-8")
    print(text, flush=True)
    failed = [s.name for s in steps if s.status in ("failed", "timeout")]
    if failed:
        print(f"gpu-kit: failed: {', '.join(failed)} (logs in {out / 'logs'})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
