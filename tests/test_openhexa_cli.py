"""`ferry pipelines check-config`: offline, JSON out, exit 0 / 1, one line for bad input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from services.cli.errors import CliError
from services.openhexa_launcher.cli import add_parser, add_run_parser, parse_params
from shared.settings import BaseSettings


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ferry")
    commands = parser.add_subparsers(dest="command", required=True)
    add_parser(commands)
    add_run_parser(commands)
    args = parser.parse_args(argv)
    return int(args.run(BaseSettings(), args))


def write(tmp_path: Path, name: str, value: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(value))
    return str(path)


SPEC = [
    {"code": "year", "type": "int", "name": "Year", "choices": None, "default": 2026,
     "required": True, "multiple": False},
    {"code": "ratio", "type": "float", "name": "Ratio", "choices": None, "default": None,
     "required": True, "multiple": False},
]  # fmt: skip


def test_a_valid_config_prints_it_normalised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(
        "pipelines", "check-config", "--spec", write(tmp_path, "s.json", SPEC),
        "--config", write(tmp_path, "c.json", {"ratio": 1}),
    )  # fmt: skip
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {
        "ok": True,
        "config": {"year": 2026, "ratio": 1.0},
    }


def test_an_invalid_config_prints_every_error_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(
        "pipelines", "check-config", "--spec", write(tmp_path, "s.json", SPEC),
        "--config", write(tmp_path, "c.json", {"year": 1.0, "x": 1}),
    )  # fmt: skip
    assert code == 1
    assert json.loads(capsys.readouterr().out) == {
        "ok": False,
        "errors": [
            "Invalid type for value 1.0 (expected <class 'int'>, got <class 'float'>)",
            "ratio is required",
            "The provided config contains invalid key(s): x",
        ],
    }


def test_a_bad_spec_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="--spec"):
        run(
            "pipelines", "check-config", "--spec", write(tmp_path, "s.json", [{"code": 1}]),
            "--config", write(tmp_path, "c.json", {}),
        )  # fmt: skip


def test_params_parse_as_json_where_they_can() -> None:
    assert parse_params(["n=3", "x=1.5", "s=text", "b=true", "l=a", "l=b"]) == {
        "n": 3, "x": 1.5, "s": "text", "b": True, "l": ["a", "b"],
    }  # fmt: skip
