"""The benchmarks run end to end and print their ratio lines (speed targets live in benchmarks/README.md)."""

from __future__ import annotations

import re
import sys

from tests.helpers import ROOT, run


def test_train_loop_benchmark_prints_one_ratio_line_per_model() -> None:
    result = run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "train_loop.py"),
            "--rounds",
            "1",
            "--epochs",
            "1",
            "--dataset",
            "digits",
        ],
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for model in ("cnn", "mlp"):
        (line,) = [row for row in lines if row.startswith(f"{model} convbench ")]
        match = re.fullmatch(
            rf"{model} convbench ([\d,]+) img/s tutorial ([\d,]+) img/s ([\d.]+)x \(per-round .*\)", line
        )
        assert match, line
        ours, theirs, ratio = (float(g.replace(",", "")) for g in match.groups())
        assert abs(ours / theirs - ratio) <= 0.01 + 0.02 * ratio
        (overhead,) = [row for row in lines if row.startswith(f"{model} tracking overhead ")]
        assert re.fullmatch(rf"{model} tracking overhead [\d.]+ ms per epoch = [\d.]+% of an epoch", overhead)


def test_augment_benchmark_prints_its_share_of_a_training_step() -> None:
    result = run(
        [sys.executable, str(ROOT / "benchmarks" / "augment.py"), "--rounds", "1", "--min-run-time", "0.05"], cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    shares = re.findall(
        r"^augment shift ±\d+(?: \+ flips)?: [\d.]+ ms = ([\d.]+)% of a training step", result.stdout, re.M
    )
    assert len(shares) == 2 and all(0 < float(share) < 100 for share in shares), result.stdout


def test_prepare_benchmark_prints_images_per_second_per_variant() -> None:
    result = run(
        [sys.executable, str(ROOT / "benchmarks" / "prepare.py"), "--images", "300", "--rounds", "1"], cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    for variant in ("load_folder", "load_folder, 1 process", "torchvision serial"):
        match = re.search(rf"^{variant} +median ([\d,]+) images/s \(rounds [\d,]+-[\d,]+\)$", result.stdout, re.M)
        assert match and float(match.group(1).replace(",", "")) > 0, result.stdout
    assert re.search(r"^round 1: load_folder [\d,]+ images/s, ", result.stdout, re.M), result.stdout
    assert re.search(r"^goal: at least 10,000 images/s .*: (met|not met) ", result.stdout, re.M), result.stdout


def test_scale_benchmark_runs_the_pipeline_on_a_cifar_sized_set_and_prints_every_stage() -> None:
    result = run([sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--quick"], cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    head = re.search(
        r"^dvc repro \(2,000 \+ 500 images\): ([\d.]+) s wall; training steps ([\d.]+) s; ratio ([\d.]+)$",
        result.stdout,
        re.M,
    )
    assert head, result.stdout
    wall, training, ratio = (float(value) for value in head.groups())
    assert (
        0 < training < wall
        and (wall - 0.05) / (training + 0.05) - 0.01 <= ratio <= (wall + 0.05) / (training - 0.05) + 0.01
    )
    splits = re.search(
        r"^float32 splits: ([\d.]+) GiB; a process with a stage's imports only: ([\d.]+) GiB$", result.stdout, re.M
    )
    assert splits and float(splits.group(2)) > 0, result.stdout
    rows = dict(
        (name, (float(seconds), float(peak)))
        for name, seconds, peak in re.findall(r"^  (\w+) +([\d.]+) s +([\d.]+) GiB ", result.stdout, re.M)
    )
    stages = ("download", "prepare", "tune", "train", "evaluate", "bench", "report", "overview")
    assert set(rows) == set(stages), result.stdout
    assert all(peak > 0 for seconds, peak in rows.values()), "every stage's peak memory was read"
    assert sum(seconds for seconds, _ in rows.values()) <= wall + 1
