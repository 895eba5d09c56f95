"""`ferry dlq`: listing says when it cuts a body, and poison messages can be dropped (only
the ones chosen, after a confirmation). Against a real RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from services.cli import dlq
from shared.service import ERROR_HEADER, ERROR_KIND_HEADER, QUEUE_HEADER
from shared.settings import BaseSettings
from shared.topology import Names
from tests.conftest import Cleanup
from tests.test_cli import ferry

Connection = aio_pika.abc.AbstractRobustConnection
SERVICE = "toy"


@pytest.fixture
async def dead_letters(
    base_settings: BaseSettings, amqp: Connection, cleanup: Cleanup
) -> AsyncIterator[str]:
    """The `toy` service's dead-letter queue with three poison messages, m1 to m3 (m2 has a
    large body)."""
    queue = Names(base_settings.namespace).dead_letter_queue(SERVICE)
    cleanup.queues.append(queue)
    channel = await amqp.channel()
    await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
    for number, body in ((1, b'{"n": 1}'), (2, b'{"n": "' + b"x" * 1000 + b'"}'), (3, b"{}")):
        await channel.default_exchange.publish(
            aio_pika.Message(
                body,
                message_id=f"m{number}",
                headers={
                    QUEUE_HEADER: "ferry.toy.chores",
                    ERROR_HEADER: "poison",
                    ERROR_KIND_HEADER: "permanent",
                },
            ),
            routing_key=queue,
        )
    await channel.close()
    yield queue


async def listing(settings: BaseSettings, capsys: Any, *options: str) -> dict[str, Any]:
    capsys.readouterr()
    assert await ferry(settings, "dlq", "list", SERVICE, "--json", *options) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


async def test_list_json_says_when_a_body_is_cut_and_full_shows_it_whole(
    base_settings: BaseSettings, dead_letters: str, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = (await listing(base_settings, capsys))["messages"]
    assert [m["message_id"] for m in messages] == ["m1", "m2", "m3"]
    assert [m["index"] for m in messages] == [1, 2, 3]
    short, long = messages[0], messages[1]
    assert (short["body_truncated"], short["body_bytes"], short["body"]) == (False, 8, '{"n": 1}')
    assert long["body_truncated"] is True
    assert long["body_bytes"] == 1009
    assert len(long["body"]) == dlq.PREVIEW_BYTES

    whole = (await listing(base_settings, capsys, "--full"))["messages"][1]
    assert whole["body_truncated"] is False
    assert len(whole["body"]) == 1009

    assert await ferry(base_settings, "dlq", "list", SERVICE) == 0
    out = capsys.readouterr().out
    assert "#2  id m2" in out
    assert "(1009 bytes; --full shows all)" in out


async def test_drop_by_index_and_by_id_acks_only_those(
    base_settings: BaseSettings, dead_letters: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await ferry(base_settings, "dlq", "drop", SERVICE, "--index", "2", "--yes") == 0
    assert f"{dead_letters}: dropped 1" in capsys.readouterr().out
    remaining = (await listing(base_settings, capsys))["messages"]
    assert [m["message_id"] for m in remaining] == ["m1", "m3"]

    assert await ferry(base_settings, "dlq", "drop", SERVICE, "--id", "m3", "--yes") == 0
    assert [m["message_id"] for m in (await listing(base_settings, capsys))["messages"]] == ["m1"]

    assert await ferry(base_settings, "dlq", "drop", SERVICE, "--id", "nope", "--yes") == 1
    assert "no message id nope among its 1 message" in capsys.readouterr().err
    assert (await listing(base_settings, capsys))["count"] == 1


async def test_purge_empties_the_queue(
    base_settings: BaseSettings, dead_letters: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await ferry(base_settings, "dlq", "purge", SERVICE, "--yes") == 0
    assert f"{dead_letters}: purged 3" in capsys.readouterr().out
    assert (await listing(base_settings, capsys))["count"] == 0


@pytest.mark.parametrize("command", [["drop", SERVICE, "--index", "1"], ["purge", SERVICE]])
async def test_without_a_terminal_or_yes_nothing_is_deleted(
    base_settings: BaseSettings,
    dead_letters: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    assert await ferry(base_settings, "dlq", *command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "not a terminal" in err
    assert "--yes" in err
    assert (await listing(base_settings, capsys))["count"] == 3


async def test_on_a_terminal_it_asks_and_no_keeps_everything(
    base_settings: BaseSettings,
    dead_letters: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = iter(["n\n", "y\n"])
    monkeypatch.setattr(sys, "stdin", _Terminal(answers))
    assert await ferry(base_settings, "dlq", "purge", SERVICE) == 1
    out, err = capsys.readouterr()
    assert f"purge 3 messages from {dead_letters}? [y/N]" in out
    assert "nothing purged" in err
    assert (await listing(base_settings, capsys))["count"] == 3

    assert await ferry(base_settings, "dlq", "drop", SERVICE, "--index", "1") == 0
    out = capsys.readouterr().out
    assert "#1  id m1" in out
    assert f"drop 1 message from {dead_letters}? [y/N]" in out
    assert [m["message_id"] for m in (await listing(base_settings, capsys))["messages"]] == [
        "m2",
        "m3",
    ]


class _Terminal:
    """A stdin that is a terminal, answering from a list."""

    def __init__(self, answers: Any) -> None:
        self.answers = answers

    def isatty(self) -> bool:
        return True

    def readline(self) -> str:
        return str(next(self.answers))


# -- a reader that goes away -----------------------------------------------------------


async def run_into_closed_pipe(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run `ferry ARGV` with a stdout whose reader is gone; its exit code and stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli.main",
            *argv,
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **env},
        )
    finally:
        os.close(write_end)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_a_closed_stdout_ends_every_command_quietly(
    base_settings: BaseSettings, dead_letters: str, tmp_path: Path
) -> None:
    env = {"FERRY_AMQP_URL": base_settings.amqp_url, "FERRY_NAMESPACE": base_settings.namespace}
    for argv in (
        ["dlq", "list", SERVICE],
        ["dlq", "list", SERVICE, "--json"],
        ["--help"],
        ["docs", "--out", str(tmp_path / "docs")],
    ):
        code, err = await run_into_closed_pipe(argv, env)
        assert err == "", (argv, err)
        # What a process killed by SIGPIPE reports; argparse's help swallows the error.
        assert code == (0 if argv == ["--help"] else 141), argv
