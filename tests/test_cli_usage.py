"""What `ferry` tells its user: real help, a warning for each unknown field it drops, and an
honest note when asked for the stand-ins that are not built."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import aio_pika
import pytest

from services.cli.main import build_parser, main
from services.cli.up import has_sandbox
from shared.contracts import TaskUpdate
from shared.settings import BaseSettings
from tests.conftest import Cleanup
from tests.support.waiting import drain
from tests.test_cli import bind_test_queue, exchange, ferry  # noqa: F401 (fixture)

Connection = aio_pika.abc.AbstractRobustConnection


def test_help_says_what_ferry_is_and_lists_commands_settings_and_examples() -> None:
    text = build_parser().format_help()
    assert "entry point" not in text  # not the module's docstring
    assert "RabbitMQ" in text.split("options:")[0]
    for command in ("publish", "tasks", "dlq", "up", "docs"):
        assert f"\n    {command} " in text, command
    assert "settings:" in text
    assert "FERRY_AMQP_URL" in text
    assert "FERRY_NAMESPACE" in text
    assert "_FILE" in text
    assert "examples:" in text
    assert "\n  ferry tasks watch" in text


def test_help_exits_zero_from_main(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "examples:" in capsys.readouterr().out
    assert main(["dlq", "drop", "-h"]) == 0
    assert "--index" in capsys.readouterr().out


async def test_publish_names_each_unknown_field_and_still_sends(
    base_settings: BaseSettings,
    exchange: str,  # noqa: F811
    amqp: Connection,
    cleanup: Cleanup,
    capsys: pytest.CaptureFixture[str],
) -> None:
    queue = await bind_test_queue(amqp, cleanup, exchange, "tasks.update")
    body = (
        '{"task_id": "t1", "progres_value": 3,'
        ' "items": [{"item_key": "a", "outcome": "SUCCESS", "mesage": "x"}]}'
    )
    assert await ferry(base_settings, "publish", "tasks.update", body) == 0
    out, err = capsys.readouterr()
    assert "published tasks.update (task t1)" in out
    warnings = err.splitlines()
    assert len(warnings) == 2
    assert "unknown field $.progres_value" in warnings[0]
    assert "unknown field $.items[0].mesage" in warnings[1]
    [message] = await drain(amqp, queue, expect=1)
    update = TaskUpdate.decode(message.body)
    assert update.progress_value is None
    assert [item.item_key for item in update.items] == ["a"]


async def test_publish_of_known_fields_warns_about_nothing(
    base_settings: BaseSettings,
    exchange: str,  # noqa: F811
    amqp: Connection,
    cleanup: Cleanup,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await bind_test_queue(amqp, cleanup, exchange, "tasks.update")
    body = '{"task_id": "t1", "progress_value": 3, "observed_at": "2026-01-01T00:00:00Z"}'
    assert await ferry(base_settings, "publish", "tasks.update", body) == 0
    assert capsys.readouterr().err == ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_up_sandbox_without_a_broker_fails_in_one_clear_line(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert has_sandbox()  # the stand-ins exist: no "not built" note any more
    monkeypatch.chdir(tmp_path)  # whatever it might write (certs, data) stays here
    port = free_port()
    args = ["--amqp-url", f"amqp://guest:guest@127.0.0.1:{port}/", "up", "--sandbox"]
    started = time.monotonic()
    assert await asyncio.wait_for(asyncio.to_thread(main, args), timeout=60) == 1
    assert time.monotonic() - started < 30  # fails fast, does not wait out a timeout
    captured = capsys.readouterr()
    assert "not built" not in captured.out + captured.err
    [line] = captured.err.splitlines()
    assert line.startswith("ferry: cannot reach RabbitMQ")
    assert f"127.0.0.1:{port}" in line
