"""`ferry pipelines list|show` and `ferry run` end to end: `services.cli.main.main` in a
thread (it runs its own event loop), against a real RabbitMQ, the tracker and the launcher
in-process and the OpenHexa stand-in on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.cli.main import main
from shared.contracts.tasks import TaskList, TaskListReply
from shared.settings import BaseSettings
from tests.conftest import Cleanup
from tests.test_openhexa_launcher import World, run_id_of, world

CLI_TIMEOUT = 30.0


@pytest.fixture
async def w(base_settings: BaseSettings, cleanup: Cleanup, tmp_path: Path) -> AsyncIterator[World]:
    async with world(base_settings, cleanup, tmp_path) as it:
        yield it


async def ferry(w: World, *argv: str) -> int:
    """`ferry --amqp-url URL --namespace NS ARGV...`, its exit status."""
    settings = w.launcher.settings
    full = ["--amqp-url", settings.amqp_url, "--namespace", settings.namespace, *argv]
    code: int = await asyncio.wait_for(asyncio.to_thread(main, full), CLI_TIMEOUT)
    return code


async def test_pipelines_list_shows_every_pipeline(
    w: World, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await ferry(w, "pipelines", "list") == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["CODE", "NAME", "TYPE", "VERSION", "ID"]
    codes = [row.split()[0] for row in rows]
    assert len(codes) == len(set(codes)) == 14  # every page (of four), not the first ten
    assert {"all-types", "ferry-tasked", "extract-07"} <= set(codes)


async def test_pipelines_show_prints_a_table_of_parameters(
    w: World, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await ferry(w, "pipelines", "show", "ferry-tasked") == 0
    title, header, *rows = capsys.readouterr().out.splitlines()
    assert title.startswith("ferry-tasked: Declares task_id [zipFile], version 2 (")
    assert header.split() == ["CODE", "TYPE", "REQUIRED", "DEFAULT", "CHOICES", "NAME"]
    table = {row.split()[0]: row.split() for row in rows}
    assert list(table) == ["task_id", "countries", "year", "note"]
    assert table["countries"][:5] == ["countries", "str[]", "yes", '["BE"]', '["BE","BF","CD"]']
    assert table["year"][:5] == ["year", "int", "yes", "2026", "-"]
    assert table["task_id"][2] == "no"


async def test_pipelines_show_of_an_unknown_code_is_one_line(
    w: World, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await ferry(w, "pipelines", "show", "no-such-pipeline") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("ferry: ") and "no-such-pipeline" in line


async def test_run_dry_run_validates_against_the_live_version_and_launches_nothing(
    w: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await ferry(
        w, "run", "ferry-tasked", "--param", "countries=BF", "--param", "countries=CD",
        "--param", "year=2025", "--id", "dry-1", "--dry-run",
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert '"ok":true' in out
    # `note` exists only in version 2, the live one: it was validated against that.
    assert '"countries":["BF","CD"]' in out and '"year":2025' in out and '"note":null' in out
    # The config as it would be launched: the launcher fills in the task id it declares.
    assert '"task_id":"dry-1"' in out
    assert await w.runs_of("ferry-tasked") == []
    tasks = await w.client.request(TaskList(), TaskListReply, timeout=10)
    assert tasks.tasks == []  # nothing submitted either


async def test_run_watch_follows_the_task_to_success(
    w: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await ferry(w, "run", "ferry-tasked", "-p", "countries=BE", "--id", "cli-run", "--watch")
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "cli-run"
    assert lines[-1].startswith("task cli-run SUCCESS")
    task = await w.task("cli-run")
    assert task is not None and task.status == "SUCCESS"
    (run,) = await w.runs_of("ferry-tasked")
    assert run.id == run_id_of(task) and run.config["task_id"] == "cli-run"
    assert run.config["countries"] == ["BE"]  # one value of a `multiple` parameter: a list


@pytest.mark.parametrize(
    ("param", "says"),
    [
        ("countries", "--param 'countries': expected KEY=VALUE"),
        ("year=next", "invalid config for ferry-tasked: Invalid type for value next"),
    ],
)
async def test_a_bad_param_is_one_line_and_exit_2(
    w: World, capsys: pytest.CaptureFixture[str], param: str, says: str
) -> None:
    assert await ferry(w, "run", "ferry-tasked", "--param", param) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("ferry: ") and says in line
    assert captured.out == ""
    assert await w.runs_of("ferry-tasked") == []
