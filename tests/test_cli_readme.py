"""The README and docs/ promise only what is there: links inside the repository, commands
that parse, settings that exist (and every setting listed), no stand-ins before they are
built."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from services.cli.main import build_parser
from services.cli.up import has_sandbox
from services.task_tracker.settings import TrackerSettings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
DOCUMENTS = (README, ARCHITECTURE)


def code_lines(text: str) -> list[str]:
    """The lines of the fenced code blocks."""
    lines: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line)
    return lines


def test_the_readme_links_the_architecture_inside_the_repository() -> None:
    text = README.read_text()
    assert "../shared" not in text
    assert "](docs/architecture.md)" in text
    assert ARCHITECTURE.is_file()


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_relative_link_resolves_inside_the_repository(document: Path) -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", document.read_text()):
        if "://" in target:
            continue
        path = (document.parent / target).resolve()
        assert path.is_relative_to(ROOT), target
        assert path.exists(), target


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_ferry_command_shown_parses(document: Path) -> None:
    parser = build_parser()
    commands = [
        line.split("#", 1)[0].strip()
        for line in code_lines(document.read_text())
        if line.strip().startswith("ferry ")
    ]
    assert commands or document is not README
    for command in commands:
        argv = shlex.split(command)[1:]
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{document.name}: `{command}` does not parse")


def test_every_setting_is_in_the_readme() -> None:
    text = README.read_text()
    for field in dataclasses.fields(TrackerSettings):
        assert f"`FERRY_{field.name.upper()}`" in text, field.name


def test_make_targets_shown_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z-]+):", makefile, flags=re.MULTILINE))
    for document in DOCUMENTS:
        for target in re.findall(r"`make ([a-z-]+)", document.read_text()):
            assert target in targets, (document.name, target)


@pytest.mark.skipif(has_sandbox(), reason="the stand-ins exist now")
@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_the_sandbox_is_only_mentioned_as_not_built_yet(document: Path) -> None:
    text = document.read_text()
    assert "UP_ARGS=--sandbox" not in text
    assert "--profile sandbox" not in text
    for paragraph in text.split("\n\n"):
        if "sandbox" in paragraph:
            assert "not built yet" in paragraph, paragraph
