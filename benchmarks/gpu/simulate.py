"""Run a command with only the GPU machine's packages importable: its image (gpu_image.txt) plus the kit's wheels.

The borrowed GPU machines have no network, so a module the kit needs but neither the image nor wheels.txt holds
would only show up there, as an ImportError, on a lease of a few minutes. This wraps any command (run.sh, pytest)
so that every Python process it starts, spawned workers included, refuses to import a top-level module whose
distributions are all outside the image and the wheel list, with one line naming it. This project's own venv
stands in for both (its versions, not the image's: torch 2.11 and numpy 2.5 there), so it checks names, not
versions; `make gpu-wheels-check` installs the real wheels into CPython 3.12 for that.

Run: python benchmarks/gpu/simulate.py [--image FILE] [--wheels FILE] -- COMMAND [ARG...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCAL = {"pipeline", "tests", "benchmarks"}  # this project's own packages, on PYTHONPATH there

SITECUSTOMIZE = '''\
"""Written by benchmarks/gpu/simulate.py: hide what the GPU machine does not have."""
import importlib.machinery
import json
import os
import sys

_BLOCKED = frozenset(json.loads(open(os.environ["GPU_KIT_BLOCKED"], encoding="utf-8").read()))


class _GpuImageOnly:
    """A top-level import of a module only distributions off the GPU image provide fails like a missing one."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if "." in name or name not in _BLOCKED:
            return None
        raise ModuleNotFoundError(
            f"No module named '{name}' on the GPU machine (neither its image nor benchmarks/gpu/wheels.txt "
            f"provides it; add its wheel there)",
            name=name,
        )


sys.meta_path.insert(0, _GpuImageOnly())
'''


def normalize(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def listed(path: Path) -> dict[str, str]:
    """{normalized name: version or ''} of a requirements-style list: `name` or `name==version`, # comments."""
    names: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            names[normalize(name)] = version.strip()
    return names


def blocked_modules(allowed: set[str]) -> list[str]:
    """Top-level modules of this environment that no allowed distribution provides."""
    return sorted(
        module
        for module, dists in metadata.packages_distributions().items()
        if module not in LOCAL and module.isidentifier() and not any(normalize(d) in allowed for d in dists)
    )


def absent_pytest_plugins(allowed: set[str]) -> list[str]:
    """pytest plugins (pytest11 entry points) of distributions the GPU machine lacks: pytest imports them through
    its own import hook, ahead of the one above, so they are switched off by name instead."""
    return sorted(
        {
            entry.name
            for entry in metadata.entry_points(group="pytest11")
            if entry.dist is not None and normalize(entry.dist.name) not in allowed
        }
    )


def version_notes(wheels: dict[str, str]) -> list[str]:
    """Where this venv's version of a listed wheel differs from the list (the simulation then runs the venv's)."""
    notes = []
    for name, version in sorted(wheels.items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            notes.append(f"{name} is in wheels.txt but not in this venv: the simulation cannot import it")
            continue
        if version and installed != version:
            notes.append(f"{name}: this venv has {installed}, wheels.txt pins {version}")
    return notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=HERE / "gpu_image.txt", help="distributions on the image")
    parser.add_argument("--wheels", type=Path, default=HERE / "wheels.txt", help="the kit's wheels (name==version)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    wheels = listed(args.wheels)
    allowed = set(listed(args.image)) | set(wheels)
    blocked = blocked_modules(allowed)
    for note in version_notes(wheels):
        print(f"simulate: note: {note}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="gpu-image") as scratch:
        folder = Path(scratch)
        (folder / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
        (folder / "blocked.json").write_text(json.dumps(blocked), encoding="utf-8")
        env = dict(os.environ, GPU_KIT_BLOCKED=str(folder / "blocked.json"), GPU_KIT_SIMULATED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
        plugins = [f"-p no:{name}" for name in absent_pytest_plugins(allowed)]
        env["PYTEST_ADDOPTS"] = " ".join([os.environ.get("PYTEST_ADDOPTS", ""), *plugins]).strip()
        return subprocess.run(command, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
