"""A stage's code fingerprint: its import closure (what dvc.yaml lists as its deps) and a hash of those files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline import code


def test_the_closure_follows_imports_and_stops_at_other_stages() -> None:
    train = code.closure("train")
    assert {"train", "runtime", "checkpoint", "models", "layers", "code"} <= train
    assert not {"report", "evaluate", "timing", "cli"} & train


def test_the_hash_changes_with_any_file_of_the_closure_and_only_those(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "pipeline"
    shutil.copytree(code.PIPELINE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code, "PIPELINE", copy)
    code.source_sha256.cache_clear()
    before = code.source_sha256("train")
    (copy / "report.py").write_text((copy / "report.py").read_text() + "\n# not train's code\n")
    code.source_sha256.cache_clear()
    assert code.source_sha256("train") == before
    (copy / "runtime.py").write_text((copy / "runtime.py").read_text() + "\n# a change to the training loop\n")
    code.source_sha256.cache_clear()
    assert code.source_sha256("train") != before
    code.source_sha256.cache_clear()
