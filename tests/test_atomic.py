"""Atomic writes: a failed writer leaves the old file untouched and no temporary behind."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.artifacts import atomic
from tests.helpers import ROOT


def test_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out" / "metrics.json"
    atomic.write_json(target, {"b": 1, "a": 2})
    before = target.read_bytes()

    def half_then_crash(tmp: Path) -> None:
        tmp.write_text('{"partial": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.write_with(target, half_then_crash)
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_failed_first_write_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    with pytest.raises(RuntimeError):
        atomic.write_with(target, lambda tmp: (_ for _ in ()).throw(RuntimeError("disk full")))
    assert list(tmp_path.iterdir()) == []


def test_json_is_sorted_and_files_are_world_readable(tmp_path: Path) -> None:
    target = atomic.write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    assert target.read_text().index('"a"') < target.read_text().index('"b"')
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_a_failed_write_names_the_target_not_the_temporary_file(tmp_path: Path) -> None:
    import errno

    target = tmp_path / "models" / "cnn-s0.pt"

    def disk_full(tmp: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # what write() raises, without a file name

    with pytest.raises(OSError) as caught:
        atomic.write_with(target, disk_full)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert list(target.parent.iterdir()) == []


def test_exclusive_lock_refuses_a_second_holder_and_leaves_nothing(tmp_path: Path) -> None:
    lock = tmp_path / "models" / "cnn-s0.lock"
    with atomic.exclusive(lock):
        assert lock.read_text().startswith("pid ")
        with pytest.raises(atomic.Busy) as caught:  # a second open file description, as another process has
            with atomic.exclusive(lock):
                pass
        assert caught.value.holder == lock.read_text()
    assert not lock.exists() and not lock.parent.exists(), "the lock and the folder made for it are gone"
    with atomic.exclusive(lock):  # free again
        pass


def test_a_temporary_whose_cleanup_a_stop_skipped_is_removed_when_the_process_exits(tmp_path: Path) -> None:
    # A stop landing just after the temporary file (or staged folder) is created, or inside the cleanup, skips the
    # line that removes it. Here the blocks are entered and never left, as that stop would leave them; the process
    # then runs its exit handlers and ends at once (os._exit), so no later cleanup can hide a missing handler.
    code = f"""
import atexit, os
from pathlib import Path
from pipeline.artifacts import atomic
root = Path({str(tmp_path)!r})
held = [atomic.atomic_path(root / "models" / "cnn-s0.pt"), atomic.staged_folder(root / "results")]
for block in held:
    block.__enter__()
before = sorted(p.name for p in root.rglob("*"))
atexit._run_exitfuncs()
print(before, sorted(p.name for p in root.rglob("*")))
os._exit(0)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.strip().split("] [")
    assert ".cnn-s0.pt." in before and ".staged." in before, done.stdout
    assert after == "'models', 'results']", done.stdout
