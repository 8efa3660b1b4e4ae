"""Atomic file writes: temporary file in the same folder, fsync, then rename.

An interrupted stage therefore never leaves a half-written file that DVC could cache.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary readable files
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(target: Path, data: bytes) -> Path:
    """Write bytes to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text(target: Path, text: str) -> Path:
    """Write UTF-8 text to `target` atomically."""
    return write_bytes(target, text.encode("utf-8"))


def write_json(target: Path, payload: Any) -> Path:
    """Write `payload` as indented, key-sorted JSON atomically (stable diffs for DVC)."""
    return write_text(target, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_with(target: Path, writer: Callable[[Path], None]) -> Path:
    """Let `writer` fill a temporary file (torch.save, savefig, ...), then rename it onto `target`."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


@contextmanager
def staged_folder(parent: Path) -> Iterator[Path]:
    """A temporary folder inside `parent` (same filesystem, so renames out of it are atomic), removed afterwards."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staged.", dir=parent))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def replace_set(moves: dict[Path, Path]) -> None:
    """Rename each fully written file or folder onto its target; a folder target is swapped whole.

    Nothing is renamed until the caller has written every member, so a failed stage leaves the previous set.
    """
    for staged, target in moves.items():
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(staged).is_dir():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            if target.exists():
                os.replace(target, old)
            os.replace(staged, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staged, target)
