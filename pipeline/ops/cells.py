"""Running a stage over its cells: which cells --model/--seed pick, keeping current ones, pruning old ones, the lock.

Nothing here changes a number, so none of it is in a cell's identity.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.artifacts import atomic, paths
from pipeline.core import cell as cells
from pipeline.errors import ConvbenchError, ParamsError

if TYPE_CHECKING:
    from pipeline.core.cell import Cell
    from pipeline.core.data import PreparedData
    from pipeline.params import Params


def select(params: Params, model: str | None, seed: int | None) -> tuple[list[str] | None, list[int] | None]:
    """The models and seeds --model and --seed pick (None: all of them); each must be one params.yaml lists."""
    if model is not None and model not in params.models:
        raise ParamsError(f"--model {model}: not in models {params.models} of params.yaml; pick one of them or add it")
    if seed is not None and seed not in params.train.seeds:
        raise ParamsError(
            f"--seed {seed}: not in train.seeds {params.train.seeds} of params.yaml; pick one of them "
            f"or add it there (a cell outside models x train.seeds would be removed by the next run)"
        )
    return ([model] if model is not None else None), ([seed] if seed is not None else None)


def each_cell(
    stage: str,
    params: Params,
    model: str | None,
    seed: int | None,
    is_current: Callable[[Cell, PreparedData], bool],
    compute: Callable[[Cell, PreparedData], str],
    prune: Callable[[list[Cell]], list[Path]],
    say: Callable[[str], None],
) -> None:
    """Compute the cells --model/--seed pick (default: every cell); unless some were picked by hand, keep the
    current ones and remove the files of cells no longer in models x train.seeds."""
    names, seeds = select(params, model, seed)
    prepared = cells.prepared_data(params)
    chosen = cells.resolve(params, prepared, names, seeds)
    picked = (names, seeds) != (None, None)
    for cell in chosen:
        if not picked and is_current(cell, prepared):
            say(f"{stage}: {cell.name} is current (same inputs and code): kept")
            continue
        say(compute(cell, prepared))
    if not picked:
        for path in prune(chosen):
            say(f"{stage}: removed {path} (its cell is no longer in models x train.seeds)")


@contextmanager
def cell_lock(model: str, seed: int) -> Iterator[None]:
    """Only one process trains a cell at a time: a second one would share its resume state and MLflow run."""
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 owns the cell (it alone writes and logs)
        yield
        return
    checkpoint = paths.checkpoint(model, seed)
    lock = checkpoint.with_suffix(".lock")
    try:
        with atomic.exclusive(lock):
            yield
    except atomic.Busy as busy:
        raise ConvbenchError(
            f"{checkpoint}: cell {paths.cell(model, seed)} is being trained by another process "
            f"({busy.holder or 'lock ' + str(lock)}); wait for it to finish (or stop it), then run "
            f"`convbench train --model {model} --seed {seed}` again if still needed"
        ) from None
