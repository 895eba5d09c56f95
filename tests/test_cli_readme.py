"""The README and docs/ promise only what is there: links inside the repository, commands
that parse, settings that exist (and every setting listed), stand-ins shown by commands
that parse."""

from __future__ import annotations

import dataclasses
import importlib
import re
import shlex
from pathlib import Path

import pytest

from services.cli.main import build_parser
from services.cli.up import has_sandbox
from services.task_tracker.settings import TrackerSettings
from shared.settings import BaseSettings

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


def sandbox_commands(text: str) -> list[str]:
    """Every `ferry sandbox ...` and `ferry up ... --sandbox` the text shows, inline or in
    a code block (without trailing comments)."""
    found = re.findall(r"`(ferry (?:sandbox|up)\b[^`]*)`", text)
    found += [
        line.split("#", 1)[0].strip()
        for line in code_lines(text)
        if line.strip().startswith(("ferry sandbox", "ferry up"))
    ]
    return [c for c in found if c.startswith("ferry sandbox") or "--sandbox" in c]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_the_sandbox_is_described_by_commands_that_parse(document: Path) -> None:
    assert has_sandbox()
    text = document.read_text()
    assert "not built" not in text
    commands = sandbox_commands(text)
    if document is README:
        assert "ferry up --sandbox" in commands
        assert any(c.startswith("ferry sandbox") for c in commands)
    parser = build_parser()
    for command in commands:
        try:
            parser.parse_args(shlex.split(command)[1:])
        except SystemExit as exit:  # `-h` exits 0 after the help
            assert exit.code == 0, f"{document.name}: `{command}` does not parse"


def test_the_readme_names_the_stand_ins_default_ports() -> None:
    text = README.read_text()
    for port in ("9101", "9102", "9103"):
        assert port in text, port


def service_settings() -> list[type[BaseSettings]]:
    """The settings class of every service that has one (services/*/settings.py)."""
    found: list[type[BaseSettings]] = []
    for path in sorted((ROOT / "services").glob("*/settings.py")):
        module = importlib.import_module(f"services.{path.parent.name}.settings")
        found += [
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, BaseSettings)
            and value.__module__ == module.__name__
        ]
    return found


def test_every_setting_of_every_service_is_in_the_readme() -> None:
    text = README.read_text()
    classes = service_settings()
    assert TrackerSettings in classes
    for cls in classes:
        for field in dataclasses.fields(cls):
            assert f"`FERRY_{field.name.upper()}`" in text, (cls.__name__, field.name)
