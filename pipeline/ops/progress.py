"""The one progress-bar layout (rich) that the train and tune stages show on the terminal; nothing is logged."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def bar(quiet: bool = False) -> Progress:
    """Description, bar, done/total, a status text (the task's `status` field) and the time elapsed."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        disable=quiet,
    )
