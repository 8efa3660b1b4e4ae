"""The GPU kit (benchmarks/gpu/): its CPU rehearsal, its failure lines, its CIFAR files and wheel list; and the CUDA
tests it runs on a GPU machine (marked `gpu`: they skip without CUDA, and `benchmarks/gpu/run.sh` runs them with
`pytest -m gpu`)."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.artifacts import paths
from pipeline.core import catalog
from pipeline.params import Params
from tests.conftest import tiny_params
from tests.helpers import ROOT, run, write_params

KIT = ROOT / "benchmarks" / "gpu"
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (benchmarks/gpu/run.sh runs these on a GPU)")


def kit(*args: str, simulated: bool = False, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """benchmarks/gpu/run.sh with this venv's Python (and, simulated, only the GPU machine's packages importable)."""
    command = ["bash", str(KIT / "run.sh"), *args]
    if simulated:
        command = [sys.executable, str(KIT / "simulate.py"), "--", *command]
    return run(command, ROOT, timeout=timeout, PYTHON=sys.executable, PYTHONPATH=str(ROOT))


@pytest.mark.timeout(900)
def test_cpu_rehearsal_runs_every_step_with_only_the_gpu_machines_packages(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = kit("--device", "cpu", "--tiny", "--no-wheels", "--out", str(out), simulated=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    status = {step["name"]: step["status"] for step in summary["steps"]}
    assert status == {
        "default": "ok",
        "tests": "ok",
        "cifar": "ok",
        "compile": "ok",
        "ladder": "ok",
        "torchrun": "skipped",
    }, summary["steps"]
    assert "skipped" in next(s["detail"] for s in summary["steps"] if s["name"] == "tests"), "gpu tests skip on CPU"
    for project, models in (("default", {"cnn", "mlp"}), ("cifar", {"cnn", "mlp"}), ("compile", {"cnn"})):
        rows = {row["model"]: row for row in summary["projects"][project]}
        assert set(rows) == models, project
        assert all(row["train_images_per_second"] > 0 and row["test_accuracy"] > 0 for row in rows.values())
    assert set(row["model"] for row in summary["projects"]["ladder"]) == {"linear", "mlp", "lcn", "cnn"}
    cifar = {row["model"]: row for row in summary["projects"]["cifar"]}["cnn"]
    assert (
        cifar["mfu_train"] > 0
        and cifar["peak_memory_mb_train_step"] > 0
        and cifar["bench_inference_images_per_second"] > 0
    )
    assert set(summary["probes"]["augment"]) == {"none", "±1"}
    for project in ("default", "ladder", "cifar"):  # outputs found by globbing, wherever the report lands
        assert list((out / project).glob("reports/**/comparison.html")), project
        assert list((out / project).glob("reports/**/*.png")), project
        assert (out / project / "mlflow.db").is_file()
    assert (out / "tests" / "junit.xml").is_file()
    logs = ["01-default.log", "02-tests.log", "03-cifar.log", "04-compile.log", "05-ladder.log"]
    assert sorted(p.name for p in (out / "logs").iterdir()) == logs, "the skipped torchrun step ran nothing to log"
    table = (out / "summary.md").read_text()
    assert "| default | ok |" in table and "## cifar" in table and "compile: cnn epochs after the first" in table
    assert table in result.stdout, "the summary table is printed too"


@pytest.mark.skipif(CUDA, reason="checks the line a machine without CUDA prints")
def test_without_a_gpu_the_kit_stops_with_one_line(tmp_path: Path) -> None:
    result = kit("--device", "cuda", "--no-wheels", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.startswith("gpu-kit: --device cuda, but torch ") and "sees no CUDA device" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_the_kit_refuses_missing_out_and_wheels_for_another_python(tmp_path: Path) -> None:
    result = kit("--device", "cpu")
    assert result.returncode == 2 and result.stderr.strip() == (
        "gpu-kit: give --out DIR, the folder for every report, figure and log"
    )
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "pydantic-2.14.4-py3-none-any.whl").write_bytes(b"")
    result = kit("--device", "cpu", "--wheels", str(wheels), "--out", str(tmp_path / "out"))
    if sys.version_info[:2] != (3, 12):
        assert result.returncode == 2 and "are for CPython 3.12, but" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    else:  # an empty file is no wheel: the install fails with one line naming its log
        assert result.returncode == 2 and "installing the wheels from" in result.stderr, result.stderr


def test_simulation_hides_what_the_gpu_machine_lacks() -> None:
    probe = "import yaml, torch, pydantic, mlflow\ntry:\n    import dvc\nexcept ImportError as e:\n    print(e)"
    result = run([sys.executable, str(KIT / "simulate.py"), "--", sys.executable, "-c", probe], ROOT)
    assert result.returncode == 0, result.stderr
    assert "No module named 'dvc' on the GPU machine" in result.stdout


def test_generated_cifar_loads_as_cifar10_balanced_and_learnable(tmp_path: Path) -> None:
    sys.path.insert(0, str(KIT))
    try:
        import cifar
    finally:
        sys.path.remove(str(KIT))
    folder = tmp_path / "cifar10"
    base = cifar.write(folder, train=503, test=60, seed=1)
    assert sorted(p.name for p in base.iterdir()) == sorted(
        [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
    )
    raw = catalog.spec("cifar10").load(folder)
    assert (
        raw.images.shape == (503, 3, 32, 32)
        and raw.test_images is not None
        and raw.test_images.shape == (60, 3, 32, 32)
    )
    assert raw.images.dtype == np.uint8 and raw.classes[0] == "airplane" and len(raw.classes) == 10
    assert np.bincount(raw.labels).min() >= 50 and 40 < raw.images.mean() < 215
    means = np.stack([raw.images[raw.labels == c].mean(axis=0) for c in range(10)])  # classes differ, on average
    assert np.abs(means - means.mean(axis=0)).mean() > 5
    assert not catalog.spec("cifar10").missing(folder, False), "every file convbench reads is there"


def test_wheel_list_pins_one_version_of_each() -> None:
    names = []
    for line in (KIT / "wheels.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][0-9A-Za-z.+!-]*", line), line
            names.append(re.sub(r"[-_.]+", "-", line.split("==")[0]).lower())
    assert len(names) == len(set(names)), "one version of each: two stop the whole install"
    assert {"pydantic", "pydantic-core", "mlflow-skinny", "sqlalchemy", "alembic", "mlxtend"} <= set(names)


# --- CUDA: run on a GPU machine by `benchmarks/gpu/run.sh` (pytest -m gpu) ----------------------------------------


@pytest.fixture(scope="module")
def cuda_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Params]:
    """digits trained and scored in-process on CUDA (cnn and mlp, 2 seeds, 3 epochs), bf16 autocast by default."""
    if not CUDA:
        pytest.skip("needs a CUDA device")
    from pipeline.stages.download import download
    from pipeline.stages.evaluate import evaluate
    from pipeline.stages.prepare import prepare
    from pipeline.stages.train import train

    root = tmp_path_factory.mktemp("cuda")
    params = tiny_params(root, **{"train.device": "cuda", "train.precision": "auto"})
    with contextlib.chdir(root):
        download(params)
        prepare(params)
        train(params)
        evaluate(params)
    return root, params


@pytest.mark.gpu
@needs_cuda
def test_cuda_cells_train_in_bf16_on_the_gpu_and_learn(cuda_project: tuple[Path, Params]) -> None:
    root, params = cuda_project
    for model in params.models:
        for seed in params.train.seeds:
            metrics = json.loads((root / paths.metrics(model, seed)).read_text())
            assert (
                metrics["context"]["device"].startswith("cuda") and metrics["context"]["dtype"] == "bfloat16 autocast"
            )
            assert metrics["test_accuracy"] > 0.5, (model, seed, metrics["test_accuracy"])
            assert metrics["peak_memory_mb"]["train_step"] > 0, "CUDA's max_memory_allocated saw the step"
            assert np.isfinite(metrics["train_images_per_second"]) and metrics["train_images_per_second"] > 0


@pytest.mark.gpu
@needs_cuda
def test_checkpoint_trained_on_cuda_restores_on_the_cpu_with_float32_weights(cuda_project: tuple[Path, Params]) -> None:
    root, params = cuda_project
    from pipeline.core import cell as cells

    with contextlib.chdir(root):
        prepared = cells.prepared_data(params)
        model = cells.one(params, "cnn", params.train.seeds[0], prepared).restore(prepared)
    parameters = list(model.parameters())
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in parameters)
    x = prepared.splits.test.x[:16].float()
    assert torch.isfinite(model(x)).all()


@pytest.mark.gpu
@needs_cuda
def test_cuda_fast_paths_channels_last_fused_adamw_and_gpu_resident_data(cuda_project: tuple[Path, Params]) -> None:
    root, params = cuda_project
    from pipeline.core import cell as cells
    from pipeline.core.runtime import device_splits, place_model, train_step_call
    from pipeline.core.timing import matmul_flops_per_second

    with contextlib.chdir(root):
        prepared = cells.prepared_data(params)
        cell = cells.one(params, "cnn", params.train.seeds[0], prepared)
        device = cell.device()
        plan = cell.plan(device, prepared.input_shape)
        model = place_model(cell.restore(prepared), plan)
    assert (
        device.type == "cuda" and plan.autocast_dtype == torch.bfloat16 and plan.fused_optimizer and plan.channels_last
    )
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    splits = device_splits(prepared, device)
    assert splits.train.x.device.type == "cuda" and splits.train.y.device.type == "cuda"
    step = train_step_call(model, splits.train.x[:64], splits.train.y[:64], plan)
    losses = [float(step()) for _ in range(3)]  # type: ignore[arg-type]
    assert all(np.isfinite(losses))
    peak = matmul_flops_per_second(device, torch.bfloat16, 4096, 0.05)
    assert peak > 1e13, f"bf16 matmul at {peak / 1e12:.1f} TFLOP/s: is this really a datacenter GPU?"


@pytest.mark.gpu
@needs_cuda
@pytest.mark.timeout(300)
def test_two_workers_train_cells_on_cuda(tmp_path: Path) -> None:
    params = write_params(
        tmp_path / "params.yaml",
        {
            "data.name": "digits",
            "data.root": str(tmp_path / "data" / "raw"),
            "train.device": "cuda",
            "train.epochs": 2,
            "train.seeds": [0, 1],
            "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        },
    )
    python = [sys.executable, "-m", "pipeline"]
    for stage in ("download", "prepare"):
        assert run([*python, stage, "-p", str(params)], tmp_path).returncode == 0
    result = run([*python, "train", "-p", str(params), "--workers", "2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for model in ("cnn", "mlp"):
        for seed in (0, 1):
            checkpoint = torch.load(tmp_path / paths.checkpoint(model, seed), weights_only=True, map_location="cpu")
            assert checkpoint["train"]["final_val_accuracy"] > 0.3


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA or torch.cuda.device_count() < 2, reason="NCCL needs two or more GPUs")
@pytest.mark.timeout(300)
def test_torchrun_nccl_on_two_gpus_saves_one_checkpoint(tmp_path: Path) -> None:
    params = write_params(
        tmp_path / "params.yaml",
        {
            "data.name": "digits",
            "data.root": str(tmp_path / "data" / "raw"),
            "train.device": "cuda",
            "train.epochs": 3,
            "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        },
    )
    python = [sys.executable, "-m", "pipeline"]
    for stage in ("download", "prepare"):
        assert run([*python, stage, "-p", str(params)], tmp_path).returncode == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = run([*torchrun, "-m", "pipeline", "train", "-p", str(params), "-m", "cnn", "-s", "0"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["cnn-s0.pt"], "rank 0 alone writes"
    checkpoint = torch.load(tmp_path / paths.checkpoint("cnn", 0), weights_only=True, map_location="cpu")
    assert checkpoint["train"]["world_size"] == 2


def test_gpu_tests_are_marked_and_collected_by_the_kit() -> None:
    sys.path.insert(0, str(KIT))
    try:
        import kit as gpu_kit
    finally:
        sys.path.remove(str(KIT))
    assert str(Path(__file__)) in gpu_kit.gpu_test_files()
