"""convbench's tests; importing the package first gives each pytest-xdist worker its share of the cores."""

import os


def _share_the_cores() -> None:
    """Each pytest-xdist worker (and every process it starts) gets its share of the cores: two workers each with
    torch on both cores would spin their threads against each other, as convbench's cells would (see train.workers)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // workers))


_share_the_cores()  # here, before any test module imports torch: its default thread count reads OMP_NUM_THREADS
