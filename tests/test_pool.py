"""Worker processes started with the stage: numbered, warm, taken once, stopped when unused, one GPU each."""

from __future__ import annotations

import os
import signal
import time

import pytest

from pipeline.ops import pool as pools


def _worker_state() -> tuple[int, int, bool]:
    """What a worker reports: its pid, its number, and whether its preload module is already imported."""
    import sys

    return os.getpid(), pools._slot, "tests.image_files" in sys.modules


def _claimed(count: int) -> str | None:
    pools.gpu(count)
    pools.gpu(count)  # a second cell in the same worker keeps the GPU it has
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _gone(pids: set[int], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


def test_the_stage_takes_the_warm_workers_with_their_imports_done() -> None:
    with pools.warm(3, True, "tests.image_files"):
        warmed = pools._warm
        pool = pools.take(2, "tests.image_files")
        assert warmed is not None and pool is warmed[0], "the warm workers are the ones the stage gets"
        assert pools._warm is None, "taken once"
        states = {pool.apply_async(_worker_state).get(timeout=60) for _ in range(8)}
        pool.terminate()
        pool.join()
    assert all(preloaded for _, _, preloaded in states)
    assert {slot for _, slot, _ in states} <= {1, 2} and all(slot > 0 for _, slot, _ in states)


def test_unused_warm_workers_stop_with_the_stage() -> None:
    with pools.warm(3, True, "tests.image_files"):
        warmed = pools._warm
        assert warmed is not None
        pids = {process.pid for process in warmed[0]._pool}
    assert pools._warm is None
    assert _gone(pids), "workers the stage never used must not outlive it"


@pytest.mark.parametrize("local", [True, False])
def test_one_worker_or_a_ray_backend_starts_nothing(local: bool) -> None:
    with pools.warm(1 if local else 4, local, "tests.image_files"):
        assert pools._warm is None


def test_too_few_warm_workers_are_replaced() -> None:
    with pools.warm(2, True, "tests.image_files"):
        warmed = pools._warm
        assert warmed is not None
        pool = pools.take(3, "tests.image_files")
        assert pool is not warmed[0]
        slots = {pool.apply_async(_worker_state).get(timeout=60)[1] for _ in range(12)}
        pool.terminate()
        pool.join()
    assert slots <= {1, 2, 3}


@pytest.mark.parametrize(
    ("visible", "expected"),
    [(None, {"1", "2"}), ("5,7", {"7", "5"}), ("3", {"3"})],
)
def test_each_worker_takes_one_gpu_by_its_number(
    visible: str | None, expected: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage's own process keeps the first GPU; worker n takes the n-th (mod the count) of those visible."""
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    pool = pools.start(2, "json")
    try:
        seen = {pool.apply_async(_claimed, (4,)).get(timeout=60) for _ in range(8)}
    finally:
        pool.terminate()
        pool.join()
    assert seen <= expected and seen
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    assert _claimed(4) == before, "the stage's own process keeps the GPUs it sees"


@pytest.mark.timeout(120)
def test_an_idle_worker_ignores_ctrl_c_and_leaves_quietly_on_sigterm(capfd: pytest.CaptureFixture[str]) -> None:
    """Killed outright while waiting for a cell, a worker would keep the pool's queue lock and stopping the pool
    would hang; it unwinds instead, and the pool still stops."""
    pool = pools.start(1, "json")
    try:
        pid, _, _ = pool.apply_async(_worker_state).get(timeout=60)
        os.kill(pid, signal.SIGINT)
        time.sleep(0.5)
        assert pool.apply_async(_worker_state).get(timeout=60)[0] == pid, "Ctrl-C is the parent's to handle"
        time.sleep(0.5)  # back waiting on the queue
        os.kill(pid, signal.SIGTERM)
        assert _gone({pid})
        assert pool.apply_async(_worker_state).get(timeout=60)[0] != pid, "the pool replaced it and still works"
    finally:
        pool.terminate()
        pool.join()
    assert "Traceback" not in capfd.readouterr().err
