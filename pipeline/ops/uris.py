"""Make the locations a job hands to another process or node absolute, so they mean the same there.

A spawned worker, a Ray task or a queued DVC experiment runs in another folder (or on another machine), where a
relative 'sqlite:///mlflow.db' or 'data/raw' would name a different, empty file. These are plain string and
path operations: nothing here opens a store.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pipeline.artifacts.paths import expand_user
from pipeline.params import DataParams

SQLITE = "sqlite:///"


def sqlite_uri(path: str | Path, query: str = "") -> str:
    """'sqlite:///<path>' naming exactly `path`: SQLAlchemy cuts the database at '?' and percent-decodes it, and
    other URL parsers cut at '#', so those three characters are percent-encoded (a project in '/tmp/a?b' or
    '/tmp/50%' keeps its store there)."""
    quoted = re.sub(r"[%?#]", lambda found: f"%{ord(found.group()):02X}", str(path))
    return f"{SQLITE}{quoted}{'?' + query if query else ''}"


def sqlite_file(uri: str) -> str | None:
    """The database file a 'sqlite:///path[?query]' URI names, percent-decoded as SQLAlchemy reads it (None for
    another URI, or one naming no file: 'sqlite:///', 'sqlite:///:memory:')."""
    if not uri.startswith(SQLITE):
        return None
    path = unquote(uri.removeprefix(SQLITE).split("?", 1)[0])
    return path if path and path != ":memory:" else None


def absolute_sqlite(uri: str, project: Path) -> str:
    """A relative 'sqlite:///db' made 'sqlite:////<project>/db'; any other URI (absolute, server, no file) unchanged.

    A query ('?timeout=60') is kept; 'sqlite:///' and 'sqlite:///:memory:' name no file and stay as they are,
    so the caller's own check can refuse them.
    """
    path = sqlite_file(uri)
    if path is None or Path(path).is_absolute():
        return uri
    return sqlite_uri(absolute_path(path, project), uri.removeprefix(SQLITE).partition("?")[2])


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
