"""A stage's code identity: what its numbers depend on (what dvc.yaml lists as its deps) and a hash of those files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.artifacts import code


def test_the_closure_follows_the_numbers_and_stops_at_messages_tracking_and_other_stages() -> None:
    train = code.closure("train")
    assert {"stages.train", "core.runtime", "artifacts.checkpoint", "core.models", "core.layers", "core.cell"} <= train
    assert not {"stages.report", "stages.evaluate", "ops.tracking", "ops.cells", "cli", "params", "errors"} & train
    assert "core.models" not in code.closure("download") | code.closure("prepare")
    assert "reporting.render" in code.closure("report") and "reporting.figures" not in code.closure("evaluate")


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


def test_the_hash_changes_with_the_numbers_code_and_not_with_tracking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "pipeline"
    shutil.copytree(code.PIPELINE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code, "PIPELINE", copy)
    code.source_sha256.cache_clear()
    try:
        before = code.source_sha256("train")
        for untouched in ("stages/report.py", "ops/tracking.py", "cli.py", "errors.py", "params.py"):
            (copy / untouched).write_text((copy / untouched).read_text() + "\n# not what train's numbers come from\n")
            code.source_sha256.cache_clear()
            assert code.source_sha256("train") == before, untouched
        (copy / "core/runtime.py").write_text((copy / "core/runtime.py").read_text() + "\n# the training loop\n")
        code.source_sha256.cache_clear()
        assert code.source_sha256("train") != before
    finally:
        code.source_sha256.cache_clear()
