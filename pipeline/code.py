"""Which code a stage runs: its module and every pipeline module it imports, the same files dvc.yaml lists as its deps.

A stage that keeps current cells (train, evaluate) records this hash with each cell, so a change to the code
that computes a cell recomputes it, as DVC's own code dependencies would for a stage per cell.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PIPELINE = Path(__file__).resolve().parent


def imported_modules(module: str) -> set[str]:
    """The pipeline modules `module` imports anywhere in its source (function-level imports included)."""
    tree = ast.parse((PIPELINE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("pipeline.")}
        elif isinstance(node, ast.ImportFrom) and node.module == "pipeline":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline."):
            found.add(node.module.split(".")[1])
    return found


def closure(module: str) -> set[str]:
    """`module` and every pipeline module it reaches through imports."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += sorted(imported_modules(current))
    return seen


@cache
def source_sha256(module: str) -> str:
    """sha256 over the names and bytes of `module`'s closure, in name order."""
    digest = hashlib.sha256()
    for name in sorted(closure(module)):
        digest.update(name.encode() + b"\0" + (PIPELINE / f"{name}.py").read_bytes() + b"\0")
    return digest.hexdigest()
