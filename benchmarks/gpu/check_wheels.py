"""Check the GPU kit's wheels in .whl/: exactly wheels.txt, small enough to travel, installable offline into CPython 3.12.

1. Every line of benchmarks/gpu/wheels.txt has exactly one wheel in the folder, and there is no other wheel (two
   versions of one package stop the whole install there).
2. The wheels and the working tree that travels with them (tracked and untracked files git does not ignore) fit in
   64 MiB together.
3. `pip install --no-index --no-deps --target` puts them into an empty folder offline: with a real CPython 3.12
   when one is found (PYTHON312, python3.12 on PATH, or pyenv's), which then also imports the compiled ones
   (pydantic-core, SQLAlchemy, cryptography with cffi, protobuf) and opens a SQLite database through SQLAlchemy;
   otherwise with this pip acting for CPython 3.12 on manylinux x86-64 (--python-version 3.12 --platform ...),
   which checks the tags but imports nothing.

Run: python benchmarks/gpu/check_wheels.py [--wheels .whl]   (or `make gpu-wheels-check`)
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LIMIT = 64 * 2**20  # what travels to a GPU machine: working tree and carried folders together
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
SMOKE = """
import sqlite3, sys
import pydantic, pydantic_core, sqlalchemy, cryptography, _cffi_backend, google.protobuf
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
key = Fernet.generate_key()
assert Fernet(key).decrypt(Fernet(key).encrypt(b"convbench")) == b"convbench"
with create_engine("sqlite://").connect() as connection:
    assert connection.execute(text("select 1")).scalar() == 1
class Cell(pydantic.BaseModel):
    seed: int
assert Cell(seed="3").seed == 3
print(f"imported on CPython {sys.version.split()[0]}: pydantic {pydantic.VERSION}, pydantic-core "
      f"{pydantic_core.__version__}, SQLAlchemy {sqlalchemy.__version__}, cryptography {cryptography.__version__}, "
      f"protobuf {google.protobuf.__version__}; Fernet and a SQLite engine work")
"""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def listed() -> dict[str, str]:
    pins = {}
    for line in (HERE / "wheels.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[normalize(name)] = version.strip()
    return pins


def travelling_tree() -> int:
    """Bytes of the files that travel with the kit: tracked and untracked files git does not ignore."""
    done = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    files = {name for name in done.stdout.decode().split("\0") if name}
    return sum((ROOT / name).stat().st_size for name in files if (ROOT / name).is_file())


def python312() -> str | None:
    """A CPython 3.12 interpreter, if this machine has one."""
    candidates = [os.environ.get("PYTHON312", ""), shutil.which("python3.12") or ""]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))
    for candidate in filter(None, candidates):
        probe = [candidate, "-c", "import sys, platform; print(platform.python_implementation(), sys.version_info[:2])"]
        try:
            done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if done.returncode == 0 and done.stdout.strip() == "CPython (3, 12)":
            return candidate
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl", help="the folder `make gpu-wheels` fills")
    args = parser.parse_args()
    pins = listed()
    wheels = sorted(args.wheels.glob("*.whl"))
    if not wheels:
        print(f"check: no wheels in {args.wheels}; run `make gpu-wheels`", file=sys.stderr)
        return 1
    found: dict[str, list[Path]] = {}
    problems = []
    for wheel in wheels:
        name, version = wheel.name.split("-")[:2]
        found.setdefault(normalize(name), []).append(wheel)
        if normalize(name) not in pins:
            problems.append(f"{wheel.name} is not in wheels.txt (remove it: one version of each)")
        elif pins[normalize(name)] != version:
            problems.append(f"{wheel.name}: wheels.txt pins {pins[normalize(name)]}")
    problems += [f"{name}=={version} has no wheel" for name, version in pins.items() if name not in found]
    problems += [f"{name} has {len(files)} wheels" for name, files in found.items() if len(files) > 1]
    width = max(len(w.name) for w in wheels)
    for wheel in sorted(wheels, key=lambda w: -w.stat().st_size):
        print(f"{wheel.name:<{width}}  {wheel.stat().st_size / 2**20:6.2f} MiB")
    total = sum(w.stat().st_size for w in wheels)
    tree = travelling_tree()
    print(
        f"{len(wheels)} wheels, {total / 2**20:.2f} MiB; with the working tree ({tree / 2**20:.2f} MiB): "
        f"{(total + tree) / 2**20:.2f} MiB of the 64 MiB that may travel"
    )
    if total + tree > LIMIT:
        problems.append(f"wheels and working tree are {(total + tree) / 2**20:.1f} MiB, over 64 MiB")
    interpreter = python312()
    with tempfile.TemporaryDirectory(prefix="gpu-wheels-") as target:
        quiet = ["-q", "--disable-pip-version-check", "--no-cache-dir", "--no-compile"]
        offline = ["install", *quiet, "--no-index", "--no-deps", "--target", target, *map(str, wheels)]
        if interpreter:
            command = [interpreter, "-m", "pip", *offline]
            how = f"CPython 3.12 ({interpreter})"
        else:
            platforms = [flag for tag in PLATFORMS for flag in ("--platform", tag)]
            tags = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312"]
            command = [sys.executable, "-m", "pip", *offline, *tags, "--abi", "abi3", "--abi", "none", *platforms]
            how = "this pip acting for CPython 3.12 manylinux x86-64 (no CPython 3.12 found to import them with)"
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PIP_NO_INPUT": "1"})
        if done.returncode != 0:
            problems.append(f"offline install with {how} failed: {(done.stderr.strip().splitlines() or [''])[-1]}")
        else:
            print(f"offline install (--no-index --no-deps --target) with {how}: ok")
            if interpreter:
                smoke = subprocess.run(
                    [interpreter, "-I", "-c", f"import sys; sys.path.insert(0, {target!r})\n{SMOKE}"],
                    capture_output=True,
                    text=True,
                )
                if smoke.returncode != 0:
                    problems.append(f"importing them failed: {(smoke.stderr.strip().splitlines() or [''])[-1]}")
                else:
                    print(smoke.stdout.strip())
    for problem in problems:
        print(f"check: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
