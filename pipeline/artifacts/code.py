"""A stage's code identity: the code its numbers depend on, and nothing else; dvc.yaml's package deps cover it.

The identity of a stage is its own module plus every module it reaches through imports inside `core` and
`artifacts` (the data, the models and layers, the runtime, measurement, the record formats); the report stage's
output is also made by `reporting`. Messages and params parsing (errors.py, params.py), MLflow plumbing, sweeps
and clusters (ops/) and the CLI are not followed: editing them retrains nothing. Train and evaluate record this
hash with each cell, so an edit to the training loop or a layer recomputes exactly the cells it could change.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PIPELINE = Path(__file__).resolve().parents[1]
NUMBERS = ("core", "artifacts")  # what every stage's numbers depend on
OUTPUT_PACKAGES = {"report": ("reporting",), "overview": ("reporting",)}  # what else makes a stage's own output


def stage_names() -> list[str]:
    """Every stage, from the folder: one module per dvc.yaml stage in pipeline/stages/."""
    return sorted(path.stem for path in (PIPELINE / "stages").glob("*.py") if path.stem != "__init__")


def module_path(module: str) -> Path:
    """The file of a dotted module name below pipeline ('core.data' -> pipeline/core/data.py)."""
    return PIPELINE.joinpath(*module.split(".")).with_suffix(".py")


def _module_of(dotted: str) -> str | None:
    """'pipeline.core.data' -> 'core.data' when that module is a file of the package, else None."""
    parts = dotted.split(".")
    if parts[0] != "pipeline" or len(parts) < 2:
        return None
    name = ".".join(parts[1:])
    return name if module_path(name).is_file() else None


def _type_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside `if TYPE_CHECKING:` blocks: names for annotations, not code that runs."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            skipped |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    return skipped


def imported_modules(module: str) -> set[str]:
    """The pipeline modules `module` imports anywhere in its source (function-level imports included, imports
    for type annotations only not)."""
    tree = ast.parse(module_path(module).read_text())
    skipped = _type_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {name for alias in node.names if (name := _module_of(alias.name))}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from pipeline.core import models` names a module; `from x.y import f` a name
                name = _module_of(f"{node.module}.{alias.name}") or _module_of(node.module)
                if name:
                    found.add(name)
    return found


def closure(stage: str) -> set[str]:
    """The stage's module and every module of its identity packages that it reaches through imports."""
    follow = NUMBERS + OUTPUT_PACKAGES.get(stage, ())
    start = f"stages.{stage}"
    seen, todo = set(), [start]
    while todo:
        current = todo.pop()
        if current in seen or (current != start and current.split(".")[0] not in follow):
            continue
        seen.add(current)
        todo += sorted(imported_modules(current))
    return seen


def dvc_deps(stage: str) -> list[str]:
    """The code deps dvc.yaml lists for `stage`: the files of its closure, relative to the project root."""
    return sorted(f"pipeline/{module.replace('.', '/')}.py" for module in closure(stage))


@cache
def source_sha256(stage: str) -> str:
    """sha256 over the names and bytes of the stage's closure, in name order."""
    digest = hashlib.sha256()
    for name in sorted(closure(stage)):
        digest.update(name.encode() + b"\0" + module_path(name).read_bytes() + b"\0")
    return digest.hexdigest()
