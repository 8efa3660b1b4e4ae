"""Worker processes for cells in parallel, started before this process imports torch.

A fresh Python process spends seconds importing torch and MLflow. Started when the stage starts, a worker
does that on another core while this process does the same, instead of after it (`python benchmarks/ladder.py`
measures what it gives). This module imports neither, so the CLI can start workers before anything heavy.
"""

from __future__ import annotations

import gc
import importlib
import itertools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import wait
from multiprocessing.pool import Pool
from multiprocessing.util import Finalize
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized

STOPS = (signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []))

_warm: tuple[Workers, int] | None = None  # workers started by `warm`, and how many, for the stage's first parallel run
_slot = 0  # this worker's number (1, 2, ...): its GPU when the machine has several; this process keeps GPU 0
_claimed = False  # whether this worker has set CUDA_VISIBLE_DEVICES (before its first cell started CUDA)


TICKETS = 4096  # claim slots: a job's ticket modulo this; far more than the cells in flight at once
_claims: Any = None  # in a worker: the pool's shared claim slots (ticket -> pid of the worker running that job)


class Workers(Pool):
    """A pool whose workers say which job they hold, so a job whose worker died is not waited for forever.

    multiprocessing.Pool replaces a worker that died (killed by the out-of-memory killer, say) but loses the task
    it held: its result never comes. Each job carries a ticket; the worker running it writes its pid in the
    ticket's slot (`claim`), and `holder_exit` tells whether that worker has ended.
    """

    def __init__(self, helpers: int, preload: str) -> None:
        context = multiprocessing.get_context("spawn")  # fork is unsafe once torch has started its threads
        numbers = context.Value("i", 0)  # a worker the pool starts in place of a dead one takes the next number
        self.ready = context.Value("i", 0)  # workers that have imported their stage
        self.claims = context.Array("i", TICKETS, lock=False)
        self._tickets = itertools.count()
        self._made: list[Any] = []  # every worker process the pool started, kept after the pool drops a dead one
        self.Process = self._make  # type: ignore[method-assign]  # the pool starts its workers with self.Process
        super().__init__(helpers, _start_worker, (numbers, self.ready, self.claims, preload), context=context)

    def _make(self, ctx: Any, *args: Any, **kwds: Any) -> Any:
        """A worker process, as Pool.Process makes it, remembered (with its exit code once it has ended)."""
        process = ctx.Process(*args, **kwds)
        self._made.append(process)
        return process

    def wait_ready(self, count: int, stop: threading.Event, limit: float = 120.0) -> None:
        """Return once `count` workers have imported their stage (or after `limit` s, or on `stop`): jobs handed out
        earlier all go to the first worker up while the others import, so two long jobs would run one after the other."""
        deadline = time.monotonic() + limit
        while self.ready.value < count and time.monotonic() < deadline and not stop.wait(0.05):
            pass

    def ticket(self) -> int:
        """A fresh ticket for the next job, its slot cleared."""
        ticket = next(self._tickets) % TICKETS
        self.claims[ticket] = 0
        return ticket

    def holder_exit(self, ticket: int) -> tuple[int, int | None] | None:
        """(pid, exit code or None if unknown) of the worker that claimed `ticket` once it has ended; None while
        no worker has claimed it or its worker is alive."""
        pid = self.claims[ticket]
        if pid == 0:
            return None
        process = next((made for made in list(self._made) if made.pid == pid), None)
        if process is None or process.exitcode is None:
            return None
        return pid, process.exitcode


def start(helpers: int, preload: str) -> Workers:
    """`helpers` spawned processes, each numbered, dying with this one, importing `preload` (a module) at once."""
    return Workers(helpers, preload)


def claim(ticket: int | None) -> None:
    """In a worker: say that this process now runs the job of `ticket` (None: not a pooled job)."""
    if ticket is not None and _claims is not None:
        _claims[ticket] = os.getpid()


@contextmanager
def warm(workers: int, local: bool, preload: str) -> Iterator[None]:
    """With `workers` > 1 on this machine, start the other workers now (importing `preload`) and stop any the
    stage did not take when it ends; otherwise do nothing."""
    global _warm
    if workers < 2 or not local:
        yield
        return
    _warm = start(workers - 1, preload), workers - 1
    try:
        yield
    finally:
        unused, _warm = _warm, None
        if unused is not None:
            unused[0].terminate()
            unused[0].join()


def take(helpers: int, preload: str) -> Workers:
    """The warm workers when there are enough of them, else `helpers` started now; the caller closes the pool."""
    global _warm
    warmed, _warm = _warm, None
    if warmed is not None and warmed[1] >= helpers:
        return warmed[0]
    if warmed is not None:
        warmed[0].terminate()
        warmed[0].join()
    return start(helpers, preload)


def gpu(count: int) -> None:
    """Make this worker see its one GPU (round robin over `count`, within any CUDA_VISIBLE_DEVICES), before CUDA
    starts in it; a no-op in the main process or with fewer than two GPUs."""
    global _claimed
    if _slot == 0 or count < 2 or _claimed:
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(index) for index in range(count)]
    os.environ["CUDA_VISIBLE_DEVICES"] = ids[_slot % len(ids)]
    _claimed = True


def _start_worker(numbers: Synchronized[int], ready: Synchronized[int], claims: Any, preload: str) -> None:
    """A worker's start: quiet while idle, no life after its parent, its number, then the stage's imports."""
    global _slot, _claims
    idle()
    sys.unraisablehook = _quiet_race
    _claims = claims
    Finalize(None, _exiting, exitpriority=100)  # run first when the worker leaves its loop (the pool's stop)
    threading.Thread(target=_follow_parent, name="convbench-parent", daemon=True).start()
    with numbers.get_lock():
        numbers.value += 1
        _slot = numbers.value
    for module in (preload, "torch._dynamo"):  # FLOP counting (threads per cell) imports dynamo: another second
        importlib.import_module(module)
    gc.freeze()  # as in the CLI's main: exiting, the worker drops these objects instead of collecting them (~1.3 s)
    with ready.get_lock():
        ready.value += 1


def _follow_parent() -> None:
    """Stop this worker as the parent's own stop would (its cell's run ends FAILED, its lock goes) once the parent
    is gone, killed included; exit outright if that takes over a minute.

    Not PR_SET_PDEATHSIG: it fires when the creating *thread* ends, and the pool starts replacement workers from a
    thread that ends when the pool stops, killing them while they may hold the pool's queue lock.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    wait([parent.sentinel])
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)
    os._exit(137)


def idle() -> None:
    """Between cells a worker ignores Ctrl-C (its parent stops the pool) and leaves quietly on SIGTERM or SIGHUP."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for stop in STOPS[1:]:
        signal.signal(stop, _leave)


def _exiting() -> None:
    """Leaving, a worker holds no lock: the pool's SIGTERM, which can reach it on its way out, just ends it (raising
    there would print 'Exception ignored' with a traceback). SIG_DFL, not a Python handler: a worker stuck in C on
    its way out (joining a queue's feeder thread) would never run one, and the pool's terminate() would wait forever."""
    for stop in STOPS[1:]:
        signal.signal(stop, signal.SIG_DFL)


def _quiet_race(unraisable: Any) -> None:
    """The interpreter's report of a SIGTERM that arrived just as `_exiting` swapped its handler ('Signal 15 ignored
    due to race condition') is dropped: the signal's work is done by SIG_DFL. Anything else is reported as usual."""
    if isinstance(unraisable.exc_value, OSError) and "ignored due to race condition" in str(unraisable.exc_value):
        return
    sys.__unraisablehook__(unraisable)


def _leave(signum: int, frame: object) -> None:
    """Unwind, so the pool's task-queue lock an idle worker holds is released (killed outright, it stays taken and
    the pool deadlocks when it is stopped); SystemExit ends the process without a traceback."""
    raise SystemExit(128 + signum)
