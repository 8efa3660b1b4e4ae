"""A stage's code identity: what its numbers depend on (what dvc.yaml lists as its deps) and a hash of those files."""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.artifacts import code


def test_the_closure_follows_the_numbers_and_stops_at_messages_tracking_and_other_stages() -> None:
    train = code.closure("train")
    assert {"stages.train", "core.runtime", "artifacts.checkpoint", "core.models", "core.layers", "core.cell"} <= train
    assert not {"stages.report", "stages.evaluate", "ops.tracking", "ops.cells", "cli", "params", "errors"} & train
    assert "core.models" not in code.closure("download") | code.closure("prepare")
    assert "reporting.render" in code.closure("report") and "reporting.figures" not in code.closure("evaluate")


# What no trained or scored weight depends on, each kept in modules of its own: the report's layer words, the bench's
# clocks and record, the probes' record, the dataset downloaders and readers (prepare turns them into the format).
NOT_NUMBERS = {
    "reporting.architecture": ("describe", "layer_name", "flow_labels"),
    "core.timing": ("time_interleaved", "matmul_flops_per_second", "runqueue_wait_seconds"),
    "artifacts.bench_record": ("BenchResult", "CaseResult"),
    "artifacts.probe_record": ("ProbeResult", "ProbeRow"),
    "core.catalog": ("torchvision_root", "safe_tar_extraction", "check_files"),
    "core.sources": ("declared_paths",),
}


@pytest.mark.parametrize("stage", ["train", "evaluate", "tune"])
def test_the_identity_of_the_stages_that_train_and_score_holds_no_display_bench_or_download_code(stage: str) -> None:
    identity = code.closure(stage)
    assert not identity & set(NOT_NUMBERS), sorted(identity & set(NOT_NUMBERS))
    defined = {
        node.name
        for module in identity
        for node in ast.walk(ast.parse(code.module_path(module).read_text()))
        if isinstance(node, (ast.FunctionDef, ast.ClassDef))
    }
    assert not defined & {name for names in NOT_NUMBERS.values() for name in names}, "defined inside the identity"


@pytest.fixture
def pipeline_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the package that code identity reads instead of the real one; its hash cache cleared around it."""
    copy = tmp_path / "pipeline"
    shutil.copytree(code.PIPELINE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code, "PIPELINE", copy)
    code.source_sha256.cache_clear()
    yield copy
    code.source_sha256.cache_clear()


def test_rewording_display_bench_or_download_code_keeps_the_train_identity(pipeline_copy: Path) -> None:
    before = {stage: code.source_sha256(stage) for stage in ("train", "evaluate", "tune")}
    for module in NOT_NUMBERS:
        path = code.module_path(module)
        path.write_text(path.read_text() + "\n# reworded\n")
    code.source_sha256.cache_clear()
    assert {stage: code.source_sha256(stage) for stage in before} == before


def test_the_stages_come_from_the_folder() -> None:
    assert code.stage_names() == [
        "bench",
        "download",
        "evaluate",
        "overview",
        "prepare",
        "probe",
        "report",
        "train",
        "tune",
    ]


def test_type_only_imports_are_not_code_that_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "pipeline"
    (copy / "core").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (copy / "core" / f"{name}.py").write_text("")
    (copy / "core" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nfrom pipeline.core import b\n"
        "if TYPE_CHECKING:\n    from pipeline.core.c import C\n"
    )
    monkeypatch.setattr(code, "PIPELINE", copy)
    assert code.imported_modules("core.a") == {"core.b"}


def test_the_hash_changes_with_the_numbers_code_and_not_with_tracking(pipeline_copy: Path) -> None:
    before = code.source_sha256("train")
    for untouched in ("stages/report.py", "ops/tracking.py", "cli.py", "errors.py", "params.py"):
        module = pipeline_copy / untouched
        module.write_text(module.read_text() + "\n# not what train's numbers come from\n")
        code.source_sha256.cache_clear()
        assert code.source_sha256("train") == before, untouched
    runtime = pipeline_copy / "core/runtime.py"
    runtime.write_text(runtime.read_text() + "\n# the training loop\n")
    code.source_sha256.cache_clear()
    assert code.source_sha256("train") != before
