"""Atomic file writes: temporary file in the same folder, fsync, then rename; and per-output locks.

An interrupted stage therefore never leaves a half-written file that DVC could cache. A failed write
raises OSError naming the target (not the temporary file), with errno ENOSPC when the disk filled up
even if the writer (torch.save) only said "unexpected pos".
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

_unfinished: set[str] = set()  # temporary files this process may have created and not yet renamed or removed


def remove_unfinished() -> None:
    """Remove every temporary file this process left: a stop (Ctrl-C, SIGTERM) can land just after one is created or
    inside the cleanup that removes it, and the exception it raises then skips that line. Runs at exit."""
    for name in list(_unfinished):
        if os.path.isdir(name):
            shutil.rmtree(name, ignore_errors=True)
        else:
            with suppress(OSError):
                os.unlink(name)
        _unfinished.discard(name)


atexit.register(remove_unfinished)  # a stopped stage exits through SystemExit, so atexit runs


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
    _unfinished.add(str(tmp))  # known before it exists, so a stop at any line after this one leaves nothing behind
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:  # a read-only or full folder: name the output, not the temporary name tried
        _unfinished.discard(str(tmp))
        raise OSError(exc.errno, exc.strerror, str(target)) from exc
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # created 0600 above; outputs are ordinary readable files
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        if exc.filename not in (None, str(tmp), tmp):
            raise
        raise OSError(exc.errno, exc.strerror, str(target)) from exc  # name the output, not the temporary file
    except Exception as exc:
        if _disk_full(target.parent):  # torch.save reports a full disk as "unexpected pos"
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target)) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)
        _unfinished.discard(str(tmp))


def _disk_full(folder: Path, slack: int = 1 << 20) -> bool:
    """Whether the filesystem holding `folder` has less than `slack` bytes left for this user."""
    try:
        stat = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return False
    blocks = stat.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else stat.f_bavail
    return blocks * stat.f_frsize < slack


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


def write_torch(target: Path, payload: Any) -> Path:
    """torch.save, atomically and reproducibly: equal content gives equal bytes (so DVC sees no change)."""
    import torch  # here, not at the top: the other writers serve light commands that load no torch

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # through a handle torch names the archive inside 'archive', not after tmp
            torch.save(payload, handle)

    return write_with(target, write)


@contextmanager
def staged_folder(parent: Path) -> Iterator[Path]:
    """A temporary folder inside `parent` (same filesystem, so renames out of it are atomic), removed afterwards."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    stage = parent / f".staged.{secrets.token_hex(4)}"
    _unfinished.add(str(stage))  # known before it exists, as in atomic_path
    try:
        os.mkdir(stage, 0o700)
    except OSError as exc:  # name the folder the outputs go to, not the temporary name tried
        _unfinished.discard(str(stage))
        raise OSError(exc.errno, exc.strerror, str(parent)) from exc
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        _unfinished.discard(str(stage))


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


class Busy(Exception):
    """Another process holds the lock; `holder` is what it wrote into the lock file (its pid), if anything."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by {holder or 'another process'}")
        self.path = path
        self.holder = holder


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created, holding this pid) for the block, or raise Busy at once.

    The lock is the kernel's flock, so a killed holder releases it; the file is removed when the block ends.
    After locking, the file is checked to still be the one at `path` (a finishing holder may just have removed
    it), so two processes never both believe they hold it. Without fcntl (Windows) the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(path)
    made_folder = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            raise Busy(path, holder) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed it between our open and lock: try the new file
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked, so no one can lock the file being removed
        os.close(fd)
        if made_folder:
            with suppress(OSError):  # a folder made only for the lock goes too; one the block filled stays
                path.parent.rmdir()
