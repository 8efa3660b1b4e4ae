"""One way to fan work out (ops/fanout.py): jobs on spawned workers of this machine, their errors, their deaths."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from pipeline.errors import ConvbenchError, ParamsError
from pipeline.ops import fanout


def _square(n: int) -> tuple[int, int]:
    return n * n, os.getpid()


def _refuse(n: int) -> int:
    raise ConvbenchError(f"job {n}: a message of the job's own")


def _die(n: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return n


def jobs(fn: Callable[[int], Any], count: int) -> list[fanout.Job]:
    return [fanout.Job(f"job {n}", fn, n) for n in range(count)]


def test_jobs_run_on_the_workers_and_here_and_every_result_comes_back() -> None:
    here_ran: list[str] = []

    def here(job: fanout.Job) -> tuple[int, int]:
        here_ran.append(job.name)
        return _square(job.arg)

    done = list(fanout.on_processes(jobs(_square, 6), 2, "tests.test_fanout", here=here))
    assert sorted(d.value[0] for d in done) == [n * n for n in range(6)]
    assert all(d.failure is None for d in done)
    pids = {d.value[1] for d in done}
    assert os.getpid() in pids and len(pids) >= 2, "this process and at least one worker took jobs"
    assert here_ran, "this process takes jobs too"


def test_a_jobs_own_error_is_raised_in_the_caller() -> None:
    with pytest.raises(ConvbenchError, match="a message of the job's own"):
        list(fanout.on_processes(jobs(_refuse, 1), 1, "tests.test_fanout"))


def test_a_job_whose_worker_died_is_a_failure_line_and_the_others_finish() -> None:
    killed = fanout.Job("killed", _die, 0)
    done = list(fanout.on_processes([killed, *jobs(_square, 2)], 2, "tests.test_fanout"))
    (failed,) = [d for d in done if d.failure is not None]
    assert failed.job.name == "killed"
    assert failed.failure is not None and "was killed by signal 9 (SIGKILL" in failed.failure
    assert sorted(d.value[0] for d in done if d.failure is None) == [0, 1]


def test_no_cluster_is_one_line_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ParamsError) as refused:
        fanout.ray_address(None, "train.backend ray")
    assert str(refused.value).startswith("train.backend ray needs a cluster: set RAY_ADDRESS")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert fanout.ray_address(None) == "127.0.0.1:6379" and fanout.ray_address("10.0.0.1:1") == "10.0.0.1:1"
