"""Make the locations a job hands to another process or node absolute, so they mean the same there.

A spawned worker, a Ray task or a queued DVC experiment runs in another folder (or on another machine), where a
relative 'sqlite:///mlflow.db' or 'data/raw' would name a different, empty file. These are plain string and
path operations: nothing here opens a store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import DataError
from pipeline.params import DataParams

SQLITE = "sqlite:///"


def absolute_sqlite(uri: str, project: Path) -> str:
    """A relative 'sqlite:///db' made 'sqlite:////<project>/db'; any other URI (absolute, server, no file) unchanged.

    A query ('?timeout=60') is kept; 'sqlite:///' and 'sqlite:///:memory:' name no file and stay as they are,
    so the caller's own check can refuse them.
    """
    if not uri.startswith(SQLITE):
        return uri
    path, mark, query = uri.removeprefix(SQLITE).partition("?")
    if not path or path == ":memory:" or Path(path).is_absolute():
        return uri
    return f"{SQLITE}{absolute_path(path, project)}{mark}{query}"


def expand_user(path: str | Path, setting: str = "") -> Path:
    """`path` with a leading ~ or ~user read as a shell reads it: that home folder, never a folder named '~'.

    `setting` (data.root, dataset.<alias>.path, ...) is named when the home folder cannot be found.
    """
    given = Path(path)
    if not str(given).startswith("~"):
        return given
    try:
        return given.expanduser()
    except RuntimeError:  # no such user, or no HOME: a folder literally named '~' would be wrong
        where = f"{setting}: " if setting else ""
        raise DataError(
            f"{where}{path}: cannot expand {given.parts[0]!r} (no such user, or $HOME is not set); write the full "
            f"path instead"
        ) from None


def absolute_path(path: str | Path, project: Path) -> str:
    """`path` as an absolute path string: ~ expanded, a relative one taken from `project`."""
    given = expand_user(path)
    return str(given if given.is_absolute() else (project / given).resolve())


def absolute_data(raw: dict[str, Any], project: Path) -> dict[str, Any]:
    """Plain params with data.root and every dataset.<alias> path made absolute (changed in place, returned)."""
    raw["data"]["root"] = absolute_path(raw["data"].get("root", DataParams.model_fields["root"].default), project)
    for entry in (raw.get("dataset") or {}).values():
        for key in ("path", "test_path"):
            if entry.get(key) is not None:
                entry[key] = absolute_path(entry[key], project)
    return raw
