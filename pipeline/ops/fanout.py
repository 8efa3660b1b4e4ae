"""One way to fan work out: a list of jobs on worker processes of this machine or as tasks on a Ray cluster.

Cells (train, evaluate), tuning workers and sweep trials are all jobs here, so they share one orphan policy (a local
worker follows its parent and stops as the parent's own stop would: pool.py), one stop policy (an interrupt cancels
every job not yet finished: its MLflow run ends FAILED, its resume state stays) and one "no cluster" line.
A job's function runs in another process: it is a module-level function, pickled by reference.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from queue import Empty, Queue
from typing import Any

from pipeline.errors import ConvbenchError, ParamsError
from pipeline.ops import pool as pools

NO_CLUSTER = (
    "{what} needs a cluster: set RAY_ADDRESS (e.g. 127.0.0.1:6379 from `ray start --head`) or pass --ray-address"
)


def ray_address(given: str | None, what: str = "--backend ray") -> str:
    """The Ray head to use: `given`, else $RAY_ADDRESS; neither is one line naming both (a usage error)."""
    address = given or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ParamsError(NO_CLUSTER.format(what=what))
    return address


@dataclass(frozen=True)
class Job:
    """One piece of work for another process: `fn(arg)`, with what a Ray task of it reserves."""

    name: str
    fn: Callable[[Any], Any]
    arg: Any
    cpus: float = 1.0
    gpus: float = 0.0


@dataclass(frozen=True)
class Done:
    """A finished job: its return value, or one line saying why it has none (its worker ended, its task failed)."""

    job: Job
    value: Any = None
    failure: str | None = None


def on_processes(  # 7 parameters: the jobs, where they run, and three optional hooks a caller may add
    jobs: list[Job],
    helpers: int,
    preload: str,
    here: Callable[[Job], Any] | None = None,
    on_worker: Callable[[Job], Job] = lambda job: job,
    tick: Callable[[], None] = lambda: None,
    poll: float = 0.5,
) -> Iterator[Done]:
    """Each job on one of `helpers` spawned processes of this machine (pool.warm's, when the stage started them) and,
    with `here`, in this process too (`here(job)` between results), yielded as it finishes. An exception a job raises
    is raised here; `on_worker(job)` is the job as a worker gets it; `tick` runs about every `poll` s."""
    todo = deque(jobs)
    finished: Queue[Done | BaseException] = Queue()
    stop = threading.Event()
    pool = pools.take(helpers, preload)

    def follow() -> None:
        if here is None:  # one job per worker, not all on the first one up; with `here`, this process works meanwhile
            pool.wait_ready(min(helpers, len(jobs)), stop)
        while not stop.is_set():
            try:
                job = todo.popleft()
            except IndexError:
                return
            ticket, sent = pool.ticket(), on_worker(job)
            finished.put(_wait(pool.apply_async(_claimed, (ticket, sent.fn, sent.arg)), job, ticket))

    def _wait(result: Any, job: Job, ticket: int) -> Done | BaseException:
        while not stop.is_set():
            try:
                return Done(job, result.get(timeout=poll))
            except multiprocessing.TimeoutError:
                ended = pool.holder_exit(ticket)  # the pool loses the job of a worker that died: never its result
                if ended is None:
                    continue
            except BaseException as exc:  # noqa: BLE001 - the job's own error, raised in the caller's thread
                return exc
            try:  # a result its worker sent just before it ended is still on its way
                return Done(job, result.get(timeout=2.0))
            except multiprocessing.TimeoutError:
                return Done(job, failure=worker_ended(*ended))
            except BaseException as exc:  # noqa: BLE001 - as above
                return exc
        return Done(job, failure="stopped")

    followers = [threading.Thread(target=follow, daemon=True) for _ in range(helpers)]
    try:
        for follower in followers:
            follower.start()
        for _ in jobs:
            item: Done | BaseException | None = None
            while item is None:
                with contextlib.suppress(Empty):
                    item = finished.get_nowait()  # a worker's result first, so its line is not held back
                    break
                mine = _pop(todo) if here is not None else None
                if mine is not None and here is not None:
                    item = Done(mine, here(mine))
                    break
                tick()
                with contextlib.suppress(Empty):
                    item = finished.get(timeout=poll)
            if isinstance(item, BaseException):
                raise item
            yield item
        pool.terminate()  # every job is in: the idle workers die at once instead of spending a second exiting
    except BaseException:
        stop.set()
        pool.terminate()  # SIGTERM each worker: it stops as its parent's stop would (pool.idle, the job's handler)
        raise
    finally:
        stop.set()
        pool.join()


def _pop(todo: deque[Job]) -> Job | None:
    """The next job nobody has taken yet, or None (another thread may take the last one first)."""
    try:
        return todo.popleft()
    except IndexError:
        return None


def _claimed(ticket: int, fn: Callable[[Any], Any], arg: Any) -> Any:
    """In a worker: say which job this process holds (so its death is seen), then run it."""
    pools.claim(ticket)
    return fn(arg)


def worker_ended(pid: int, code: int | None) -> str:
    """Why a job has no result: its worker process ended while it ran (a kill, a crash)."""
    import signal

    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals.__members__.values() else "?"
        oom = ", the out-of-memory killer's way? see `dmesg`" if -code == signal.SIGKILL else ""
        how = f"was killed by signal {-code} ({name}{oom})"
    else:
        how = "ended" if code is None else f"exited with status {code}"
    return f"worker pid {pid} {how}"


def on_ray(
    jobs: list[Job],
    address: str,
    submitted: Callable[[], None] = lambda: None,
    tick: Callable[[], None] = lambda: None,
) -> Iterator[Done]:
    """Each job as a Ray task on the cluster at `address`, yielded as it finishes; a task that failed is a Done with
    its failure line (a ConvbenchError it raised is raised here, as on_processes does). `submitted()` runs once every task is on the
    cluster, `tick()` about every second; leaving early cancels the rest."""
    from pipeline.ops.cluster import connect  # Ray loads only for a cluster

    ray = connect(address)
    from ray.exceptions import RayError, RayTaskError

    refs: dict[Any, Job] = {}
    pending: list[Any] = []
    try:
        for job in jobs:
            task = ray.remote(num_cpus=job.cpus, num_gpus=job.gpus, max_retries=0)(job.fn)
            refs[task.remote(job.arg)] = job
        pending = list(refs)
        submitted()
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            tick()
            for ref in done:
                try:
                    value = ray.get(ref)
                except RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, ConvbenchError):
                        raise cause from None  # the job's own error, as on_processes raises it
                    yield Done(refs[ref], failure=f"its Ray task failed ({last_line(exc)})")
                    continue
                except RayError as exc:
                    yield Done(refs[ref], failure=f"its Ray task failed ({last_line(exc)})")
                    continue
                yield Done(refs[ref], value)
    except BaseException:
        for ref in pending:
            ray.cancel(ref)  # a KeyboardInterrupt in each task: it stops as a stage stops
        raise
    finally:
        for ref in pending:  # a caller that left the loop early (GeneratorExit) gets no orphans either
            ray.cancel(ref)
        ray.shutdown()


def last_line(error: BaseException | str) -> str:
    """The last non-blank line of an error: the part that says what went wrong."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
