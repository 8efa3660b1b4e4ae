"""The README and docs/ show only what is real: their sample error lines are what the CLI prints, their links
lead somewhere, every `convbench` command and option they name exists, they name no file of the previous
layout, and the README's first screen holds the first hour. Fast: nothing trains."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer

from pipeline.artifacts import paths
from pipeline.cli import app
from tests.helpers import ROOT, run, write_params

README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
FENCED = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`\n]+)`")
SAMPLE = re.compile(r"^convbench: (?:error|warning): .*$", re.MULTILINE)


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def prose(content: str) -> str:
    """The text outside fenced code blocks."""
    return FENCED.sub("", content)


def code(content: str) -> list[str]:
    """Every line of code a page shows: fenced blocks (comments dropped, `\\` continuations joined) and inline
    code spans."""
    lines = []
    for block in FENCED.findall(content):
        for line in block.replace("\\\n", " ").splitlines():
            lines.append(re.sub(r"(^|\s)#.*$", "", line))
    return lines + INLINE.findall(prose(content))


def samples(content: str) -> list[str]:
    """The sample `convbench: error:` / `convbench: warning:` lines a page shows in its code blocks."""
    return [line for block in FENCED.findall(content) for line in SAMPLE.findall(block)]


def readme_typo() -> tuple[str, str]:
    """The README's sample line for a misspelt key, and that key."""
    (line,) = [line for line in samples(text(README)) if "unknown key" in line]
    match = re.search(r"unknown key '([^']+)'", line)
    assert match, line
    return line, match.group(1)


def cases() -> dict[str, tuple[dict[str, Any], list[str], list[str], int]]:
    """Each bad input the docs show: params overrides, files to create, the command, and its exit code."""
    return {
        "readme typo": ({readme_typo()[1]: 20}, [], ["convbench", "train"], 2),
        "bad value": ({"train.epochs": -1}, [], ["convbench", "train"], 2),
        "unknown model": ({"models": ["cnn", "mlp", "lcm"]}, [], ["convbench", "train"], 2),
        "unknown dataset": ({"data.name": ["pets"]}, [], ["convbench", "prepare"], 2),
        "unlisted dataset": ({}, [], ["convbench", "train", "--dataset", "digits"], 2),
        "old layout": ({}, ["models/cnn-s0.pt", "metrics/cells/cnn-s0.json"], ["convbench", "overview"], 1),
    }


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """What the real CLI printed for each case, each in a fresh project folder."""
    results = {}
    for name, (overrides, files, command, exit_code) in cases().items():
        project = tmp_path_factory.mktemp(name.replace(" ", "-"))
        write_params(project / "params.yaml", overrides)
        for file in files:
            (project / file).parent.mkdir(parents=True, exist_ok=True)
            (project / file).write_bytes(b"")
        results[name] = run(command, project, timeout=120)
        assert results[name].returncode == exit_code, (name, results[name].stderr)
    return results


def test_the_readmes_sample_error_line_is_what_the_cli_prints(
    printed: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    line, _ = readme_typo()
    assert printed["readme typo"].stderr.strip() == line, (
        "README.md's sample error line differs from what `convbench train` prints; copy the new one"
    )


def test_every_sample_line_in_the_docs_is_what_the_cli_prints(
    printed: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    real = {line for result in printed.values() for line in result.stderr.splitlines()}
    shown = {(page.name, line) for page in DOCS for line in samples(text(page))}
    assert len(shown) >= len(printed), "each case has its sample line in the docs"
    stale = sorted((page, line) for page, line in shown if line not in real)
    assert not stale, f"sample lines no command printed (the CLI printed {sorted(real)}): {stale}"


def test_dvc_refuses_a_bare_dataset_name_with_the_message_the_docs_quote(tmp_path: Path) -> None:
    quoted = {
        match for page in DOCS for match in re.findall(r"failed to resolve [^`\n]*(?:\n[^`\n]*)?got str", text(page))
    }
    assert quoted, "the README quotes DVC's message for data.name given as a bare string"
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", tmp_path / ".dvc" / "config")
    write_params(tmp_path / "params.yaml", {"data.name": "digits"})
    assert run(["git", "init", "-q"], tmp_path).returncode == 0
    result = run(["dvc", "status"], tmp_path, timeout=120)
    assert result.returncode != 0
    said = " ".join((result.stdout + result.stderr).split())
    for message in quoted:
        assert " ".join(message.split()) in said, (message, said)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(heading) for heading in re.findall(r"^#{1,6} (.+)$", prose(text(page)), re.MULTILINE)}


def test_every_relative_link_leads_to_an_existing_file_and_heading() -> None:
    broken = []
    for page in DOCS:
        for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", prose(text(page))):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not this test's business
            file, _, anchor = target.partition("#")
            where = (page.parent / file).resolve() if file else page
            if not where.exists():
                broken.append((page.name, target, "no such file"))
            elif anchor and where.suffix == ".md" and anchor not in anchors(where):
                broken.append((page.name, target, "no such heading"))
    assert not broken, broken


def commands() -> dict[str, Any]:
    """Every registered command by the name the CLI takes, as Typer builds it (its own click objects)."""
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_every_convbench_command_and_option_the_docs_name_exists() -> None:
    known = commands()
    assert {"download", "prepare", "train", "report", "overview", "params", "ui"} <= set(known)
    wrong = []
    named = set()
    for page in DOCS:
        for line in code(text(page)):
            for match in re.finditer(r"(?:(?<![\w./-])convbench|-m pipeline) ([a-z][\w-]*)(.*)", line):
                name, rest = match.groups()
                named.add(name)
                if name not in known:
                    wrong.append((page.name, line.strip(), f"no command {name}"))
                    continue
                options = {"--help"} | {o for p in known[name].params for o in (*p.opts, *p.secondary_opts)}
                for token in re.split(r"\s+", re.split(r"&&|\||;|`", rest)[0]):
                    option = token.strip("[]").split("=")[0]
                    if option.startswith("-") and option not in options:
                        wrong.append((page.name, line.strip(), f"{name} has no option {option}"))
    assert not wrong, wrong
    assert {"params", "overview", "ui", "probe"} <= named, "the docs show the commands a newcomer needs"


def legacy_pattern(glob: str) -> re.Pattern[str]:
    """A path of the previous layout (paths.LEGACY) as it would appear in a page."""
    return re.compile(r"(?<![\w/.<-])" + re.escape(glob).replace(r"\*", r"[^/\s`]+") + r"(?![\w-])")


def test_the_docs_name_no_file_of_the_previous_layout_except_to_say_it_is_gone() -> None:
    found = []
    for page in DOCS:
        for paragraph in re.split(r"\n\s*\n", text(page)):
            if "previous layout" in paragraph:
                continue  # where the docs say which old files to delete
            for line in paragraph.splitlines():
                if line.startswith("convbench: warning:"):
                    continue
                found += [(page.name, line.strip()) for glob in paths.LEGACY if legacy_pattern(glob).search(line)]
    assert not found, found


def test_the_readmes_first_screen_holds_the_first_hour() -> None:
    first_screen = "\n".join(text(README).splitlines()[:60])
    for needed in ("make repro", "source .venv/bin/activate", "reports/index.html", "make ui", "dvc exp run -S"):
        assert needed in first_screen, f"the README's first 60 lines do not mention {needed}"
    assert "make test" in text(README)
