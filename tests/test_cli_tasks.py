"""`ferry tasks`: cancelling only what exists, and saying what the status alone does not
(a cancel not confirmed yet, why a QUEUED task waits). Against a real RabbitMQ and an
in-process task tracker."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from services.task_tracker.app import TaskTracker
from shared.contracts import TaskUpdate
from shared.messaging import publish
from shared.settings import BaseSettings
from tests.conftest import Cleanup
from tests.support.waiting import drain, eventually
from tests.test_cli import (  # noqa: F401 (fixtures)
    bind_test_queue,
    exchange,
    ferry,
    show_json,
    tracker,
)

Connection = aio_pika.abc.AbstractRobustConnection


async def output_of(settings: BaseSettings, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert await ferry(settings, *argv) == 0
    return capsys.readouterr().out


async def test_cancel_of_an_unknown_task_says_so_and_publishes_nothing(
    base_settings: BaseSettings,
    tracker: TaskTracker,  # noqa: F811
    amqp: Connection,
    cleanup: Cleanup,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = tracker.service.names
    spy = await bind_test_queue(amqp, cleanup, names.exchange, "tasks.cancel")

    assert await ferry(base_settings, "tasks", "cancel", "no-such-id") == 1
    err = capsys.readouterr().err
    assert err.strip() == "ferry: no such task: no-such-id"
    assert await drain(amqp, spy, expect=1, timeout=1) == []
    # No phantom task either: the tracker still does not know it.
    assert await ferry(base_settings, "tasks", "show", "no-such-id") == 1
    assert "no such task" in capsys.readouterr().err


async def test_a_cancelled_task_shows_cancelling_until_the_worker_confirms(
    base_settings: BaseSettings,
    tracker: TaskTracker,  # noqa: F811
    amqp: Connection,
    cleanup: Cleanup,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = tracker.service.names
    # A worker's queue, so the task is driven and its cancel waits for the worker.
    await bind_test_queue(amqp, cleanup, names.exchange, "toy.chores.do")
    submit = ("tasks", "submit", "demo", "--id", "c1", "--command-key", "toy.chores.do")
    assert await ferry(base_settings, *submit) == 0
    await eventually(lambda: show_json(base_settings, "c1", capsys))
    assert await ferry(base_settings, "tasks", "cancel", "c1", "--reason", "enough") == 0

    async def cancelling() -> bool:
        reply = await show_json(base_settings, "c1", capsys)
        return reply is not None and reply["task"]["cancelling"]

    await eventually(cancelling)
    shown = await output_of(base_settings, capsys, "tasks", "show", "c1")
    assert "state:             QUEUED, cancelling" in shown
    listed = await output_of(base_settings, capsys, "tasks", "list")
    [row] = [line for line in listed.splitlines() if line.startswith("c1 ")]
    assert row.split()[2] == "QUEUED"
    assert "cancelling" in row
    assert listed.splitlines()[0].split()[-1] == "NOTE"

    capsys.readouterr()
    watching = asyncio.create_task(ferry(base_settings, "tasks", "watch", "c1", "--timeout", "20"))
    seen: list[str] = []

    def drawn() -> bool:
        seen.append(capsys.readouterr().out)
        return "cancelling" in "".join(seen)

    await eventually(drawn)
    assert "QUEUED (cancelling" in "".join(seen)
    await publish(tracker.service.broker, names, TaskUpdate.now(task_id="c1", status="KILLED"))
    assert await asyncio.wait_for(watching, 20) == 1
    out = "".join([*seen, capsys.readouterr().out]).splitlines()
    assert out[-1].startswith("task c1 KILLED")
    assert "cancelling" not in out[-2]  # confirmed: no longer said

    shown = await output_of(base_settings, capsys, "tasks", "show", "c1")
    assert "cancelling" not in shown.split("cancelling:")[0]  # no state line any more
    assert "state:" not in shown


async def test_a_waiting_task_shows_why_it_has_not_started(
    base_settings: BaseSettings,
    tracker: TaskTracker,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    submit = ("tasks", "submit", "demo", "--id", "q1", "--command-key", "nobody.does.this")
    assert await ferry(base_settings, *submit) == 0

    async def waiting() -> bool:
        reply = await show_json(base_settings, "q1", capsys)
        return reply is not None and bool(reply["task"]["waiting_reason"])

    await eventually(waiting)
    shown = await output_of(base_settings, capsys, "tasks", "show", "q1")
    assert "state:             QUEUED, waiting: no consumer for nobody.does.this" in shown
    listed = await output_of(base_settings, capsys, "tasks", "list")
    [row] = [line for line in listed.splitlines() if line.startswith("q1 ")]
    assert row.endswith("waiting: no consumer for nobody.does.this")
    watched = await ferry(base_settings, "tasks", "watch", "q1", "--timeout", "0.5")
    assert watched == 1
    assert "QUEUED (waiting: no consumer for nobody.does.this)" in capsys.readouterr().out
