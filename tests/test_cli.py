"""The `ferry` command line against a real RabbitMQ (and an in-process task tracker).

Commands run in-process through `main(argv)`, in a worker thread because each command runs
its own event loop; `ferry up` runs as a subprocess, as an operator would run it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import aio_pika
import httpx
import pytest

from services.cli.main import main
from services.task_tracker.app import TaskTracker
from services.task_tracker.settings import TrackerSettings
from shared.contracts import TaskSubmit, TaskUpdate
from shared.messaging import publish
from shared.service import ERROR_HEADER, ERROR_KIND_HEADER, QUEUE_HEADER
from shared.settings import BaseSettings
from shared.topology import Names
from tests.conftest import Cleanup
from tests.support.waiting import drain, eventually

Connection = aio_pika.abc.AbstractRobustConnection


async def ferry(settings: BaseSettings, *argv: str) -> int:
    """Run one `ferry` command against the test's broker and namespace."""
    args = ["--amqp-url", settings.amqp_url, "--namespace", settings.namespace, *argv]
    return await asyncio.to_thread(main, args)


@pytest.fixture
async def exchange(base_settings: BaseSettings, amqp: Connection) -> AsyncIterator[str]:
    """The namespace's `ferry` exchange, as a running service would have declared it."""
    names = Names(base_settings.namespace)
    channel = await amqp.channel()
    await channel.declare_exchange(names.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    yield names.exchange
    await channel.exchange_delete(names.exchange)
    await channel.close()


async def bind_test_queue(
    amqp: Connection, cleanup: Cleanup, exchange: str, routing_key: str
) -> str:
    channel = await amqp.channel()
    name = f"{exchange}.test.{routing_key}"
    queue = await channel.declare_queue(name, durable=True)
    await queue.bind(exchange, routing_key=routing_key)
    cleanup.queues.append(name)
    await channel.close()
    return name


def tracker_settings(base: BaseSettings, tmp_path: Path) -> TrackerSettings:
    common = {f.name: getattr(base, f.name) for f in fields(BaseSettings)}
    return TrackerSettings(**common, database_url=f"sqlite:///{tmp_path}/t.db")


@pytest.fixture
async def tracker(
    base_settings: BaseSettings, cleanup: Cleanup, tmp_path: Path
) -> AsyncIterator[TaskTracker]:
    tracker = TaskTracker(tracker_settings(base_settings, tmp_path))
    async with cleanup.running(tracker.service):
        yield tracker


# -- publish ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ('{"task_id": 5}', "Expected `str`, got `int` - at `$.task_id`"),
        ('{"status": "RUNNING"}', "missing required field `task_id`"),
        ('{"task_id": "t", "status": "NEARLY"}', "at `$.status`"),
        ('{"task_id": ', "not valid JSON"),
        ("[1]", "expected a JSON object"),
    ],
)
async def test_publish_rejects_an_invalid_body_naming_the_field(
    base_settings: BaseSettings, capsys: pytest.CaptureFixture[str], body: str, says: str
) -> None:
    assert await ferry(base_settings, "publish", "tasks.update", body) == 2
    err = capsys.readouterr().err
    assert says in err
    assert "Traceback" not in err


async def test_publish_with_no_queue_bound_says_so(
    base_settings: BaseSettings, exchange: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await ferry(base_settings, "publish", "tasks.update", '{"task_id": "t"}') == 1
    err = capsys.readouterr().err
    assert "no queue is bound to tasks.update (is the service running?)" in err
    assert "Traceback" not in err


async def test_publish_sends_the_completed_contract(
    base_settings: BaseSettings,
    exchange: str,
    amqp: Connection,
    cleanup: Cleanup,
    capsys: pytest.CaptureFixture[str],
) -> None:
    queue = await bind_test_queue(amqp, cleanup, exchange, "tasks.update")
    body = '{"task_id": "t1", "status": "ERROR", "progress_value": 3}'
    assert await ferry(base_settings, "publish", "tasks.update", body) == 0
    assert "published tasks.update (task t1)" in capsys.readouterr().out
    [message] = await drain(amqp, queue, expect=1)
    update = TaskUpdate.decode(message.body)
    assert (update.task_id, update.status, update.progress_value) == ("t1", "ERRORED", 3)
    assert b"observed_at" in message.body  # the default was filled in by the sender
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT


async def test_publish_generates_a_task_id_for_a_submit(
    base_settings: BaseSettings,
    exchange: str,
    amqp: Connection,
    cleanup: Cleanup,
    capsys: pytest.CaptureFixture[str],
) -> None:
    queue = await bind_test_queue(amqp, cleanup, exchange, "tasks.submit")
    assert await ferry(base_settings, "publish", "tasks.submit", '{"kind": "demo"}') == 0
    out = capsys.readouterr().out
    [message] = await drain(amqp, queue, expect=1)
    submitted = TaskSubmit.decode(message.body)
    assert len(submitted.task_id) == 32
    assert f"(task {submitted.task_id})" in out


async def test_publish_raw_sends_the_bytes_unchecked(
    base_settings: BaseSettings, exchange: str, amqp: Connection, cleanup: Cleanup, tmp_path: Path
) -> None:
    queue = await bind_test_queue(amqp, cleanup, exchange, "tasks.update")
    (tmp_path / "body").write_bytes(b"{not json")
    assert await ferry(base_settings, "publish", "tasks.update", f"@{tmp_path}/body", "--raw") == 0
    [message] = await drain(amqp, queue, expect=1)
    assert message.body == b"{not json"


# -- tasks -----------------------------------------------------------------------------


async def show_json(settings: BaseSettings, task_id: str, capsys: Any) -> dict[str, Any] | None:
    """The task as `ferry tasks show --json` gives it, or None while it is not there yet."""
    capsys.readouterr()
    code = await ferry(settings, "tasks", "show", task_id, "--json", "--items")
    out = capsys.readouterr().out
    return json.loads(out) if code == 0 else None


async def test_tasks_submit_list_show_and_cancel(
    base_settings: BaseSettings, tracker: TaskTracker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await ferry(base_settings, "tasks", "submit", "demo", "--id", "task-1") == 0
    assert capsys.readouterr().out.strip() == "task-1"
    assert await ferry(base_settings, "tasks", "submit", "other", "--params", '{"a": 1}') == 0
    other = capsys.readouterr().out.strip()

    reply = await eventually(lambda: show_json(base_settings, "task-1", capsys))
    assert reply["task"]["status"] == "QUEUED"
    assert reply["task"]["kind"] == "demo"
    await eventually(lambda: show_json(base_settings, other, capsys))

    assert await ferry(base_settings, "tasks", "list", "--kind", "demo") == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split()[:3] == ["ID", "KIND", "STATUS"]
    assert [row.split()[:3] for row in rows[1:]] == [["task-1", "demo", "QUEUED"]]

    # One task per page, every page followed.
    assert await ferry(base_settings, "tasks", "list", "--limit", "1", "--all") == 0
    listed = {row.split()[0] for row in capsys.readouterr().out.splitlines()[1:]}
    assert listed == {"task-1", other}
    assert await ferry(base_settings, "tasks", "list", "--limit", "1") == 0
    assert "--all" in capsys.readouterr().err

    assert await ferry(base_settings, "tasks", "cancel", "task-1", "--reason", "enough") == 0
    capsys.readouterr()

    async def cancelled() -> bool:
        task = await show_json(base_settings, "task-1", capsys)
        return task is not None and task["task"]["should_be_killed"]

    await eventually(cancelled)

    assert await ferry(base_settings, "tasks", "show", "task-1") == 0
    assert "should_be_killed:  True" in capsys.readouterr().out


async def test_tasks_show_of_an_unknown_task_fails_cleanly(
    base_settings: BaseSettings, tracker: TaskTracker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await ferry(base_settings, "tasks", "show", "nope") == 1
    err = capsys.readouterr().err
    assert "no such task: nope" in err
    assert "Traceback" not in err


async def test_tasks_invalid_submit_is_a_usage_error(
    base_settings: BaseSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await ferry(base_settings, "tasks", "submit", "bad kind!") == 2
    assert "$.kind" in capsys.readouterr().err
    assert await ferry(base_settings, "tasks", "submit", "k", "--params", "[]") == 2
    assert "--params: expected a JSON object" in capsys.readouterr().err


@pytest.mark.parametrize(("final", "exit_code"), [("SUCCESS", 0), ("ERRORED", 1)])
async def test_tasks_watch_follows_progress_until_the_end(
    base_settings: BaseSettings,
    tracker: TaskTracker,
    capsys: pytest.CaptureFixture[str],
    final: Literal["SUCCESS", "ERRORED"],
    exit_code: int,
) -> None:
    broker, names = tracker.service.broker, tracker.service.names
    assert await ferry(base_settings, "tasks", "submit", "demo", "--id", "w1") == 0
    await eventually(lambda: show_json(base_settings, "w1", capsys))
    capsys.readouterr()

    watching = asyncio.create_task(ferry(base_settings, "tasks", "watch", "w1", "--timeout", "30"))
    seen: list[str] = []

    def drawn_the_start() -> bool:  # it subscribes before it asks, so it is listening now
        seen.append(capsys.readouterr().out)
        return "QUEUED" in "".join(seen)

    await eventually(drawn_the_start)
    update = TaskUpdate.now(task_id="w1", status="RUNNING", progress_value=1, end_value=4)
    await publish(broker, names, update)
    await asyncio.sleep(0.5)
    await publish(
        broker,
        names,
        TaskUpdate.now(
            task_id="w1", status=final, progress_value=4, end_value=4, progress_message="done"
        ),
    )
    assert await asyncio.wait_for(watching, 20) == exit_code

    out = "".join([*seen, capsys.readouterr().out]).splitlines()
    assert "\r" not in "".join(out)  # not a TTY: one line per change
    assert out[0].endswith("QUEUED")
    assert any(" 25% 1/4 RUNNING" in line for line in out)
    assert out[-1] == f"task w1 {final}: done"


async def test_tasks_watch_gives_up_after_its_timeout(
    base_settings: BaseSettings, tracker: TaskTracker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await ferry(base_settings, "tasks", "submit", "demo", "--id", "w2") == 0
    await eventually(lambda: show_json(base_settings, "w2", capsys))
    assert await ferry(base_settings, "tasks", "watch", "w2", "--timeout", "0.5") == 1
    assert "task w2 is still QUEUED after 0.5s" in capsys.readouterr().err


# -- dlq -------------------------------------------------------------------------------


async def dlq_json(settings: BaseSettings, service: str, capsys: Any) -> dict[str, Any]:
    capsys.readouterr()
    assert await ferry(settings, "dlq", "list", service, "--json") == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


async def test_dlq_list_leaves_the_dead_letters_and_replay_sends_them_back(
    base_settings: BaseSettings, tracker: TaskTracker, capsys: pytest.CaptureFixture[str]
) -> None:
    update_queue = tracker.service.names.queue("task_tracker", "update")
    assert await ferry(base_settings, "publish", "tasks.update", "{not json", "--raw") == 0

    async def one_dead_letter() -> dict[str, Any] | None:
        listing = await dlq_json(base_settings, "task_tracker", capsys)
        return listing if listing["count"] == 1 else None

    listing = await eventually(one_dead_letter)
    [letter] = listing["messages"]
    assert letter["origin"] == update_queue
    assert letter["routing_key"] == "tasks.update"
    assert letter["error_kind"] == "malformed"
    assert letter["body"] == "{not json"
    # Listing again finds it again: listing does not consume.
    assert (await dlq_json(base_settings, "task_tracker", capsys))["count"] == 1

    assert await ferry(base_settings, "dlq", "list", "task_tracker") == 0
    out = capsys.readouterr().out
    assert "1 message" in out
    assert f"from queue {update_queue}" in out

    assert await ferry(base_settings, "dlq", "replay", "task_tracker", "--dry-run") == 0
    assert "would replay 1, kept 0" in capsys.readouterr().out
    assert (await dlq_json(base_settings, "task_tracker", capsys))["count"] == 1

    assert await ferry(base_settings, "dlq", "replay", "task_tracker") == 0
    assert "replayed 1, kept 0" in capsys.readouterr().out

    # Back in the tracker's queue, still malformed, so dead-lettered again: a new failure.
    async def failed_again() -> bool:
        again = await one_dead_letter()
        return again is not None and again["messages"][0]["failed_at"] != letter["failed_at"]

    await eventually(failed_again)


async def test_dlq_replay_strips_the_failure_and_keeps_what_has_no_origin(
    base_settings: BaseSettings,
    exchange: str,
    amqp: Connection,
    cleanup: Cleanup,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = Names(base_settings.namespace)
    home = await bind_test_queue(amqp, cleanup, exchange, "toy.chores.do")
    dlq = names.dead_letter_queue("toy")
    cleanup.queues.append(dlq)
    channel = await amqp.channel()
    await channel.declare_queue(dlq, durable=True, arguments={"x-queue-type": "quorum"})
    failure: dict[str, Any] = {
        ERROR_HEADER: "peer says no",
        ERROR_KIND_HEADER: "permanent",
        "keep": "me",
    }
    for headers in ({**failure, QUEUE_HEADER: home}, failure):
        await channel.default_exchange.publish(
            aio_pika.Message(b'{"chore_id": "c"}', headers=headers), routing_key=dlq
        )
    await channel.close()

    assert await ferry(base_settings, "dlq", "replay", "toy") == 1
    out = capsys.readouterr().out
    assert "replayed 1, kept 1" in out
    assert "original queue cannot be told" in out

    [back] = await drain(amqp, home, expect=1)
    assert back.body == b'{"chore_id": "c"}'
    assert back.headers == {QUEUE_HEADER: home, "keep": "me"}
    listing = await dlq_json(base_settings, "toy", capsys)
    assert listing["count"] == 1
    assert listing["messages"][0]["origin"] is None


async def test_dlq_of_an_unknown_service_fails_cleanly(
    base_settings: BaseSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await ferry(base_settings, "dlq", "list", "nobody") == 1
    assert "does not exist" in capsys.readouterr().err


# -- up --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_up_runs_the_tracker_and_stops_it_on_ctrl_c(
    base_settings: BaseSettings, cleanup: Cleanup, tmp_path: Path
) -> None:
    # Never started: it only tells the clean-up what `ferry up`'s tracker declares.
    cleanup.services.append(TaskTracker(tracker_settings(base_settings, tmp_path)).service)
    port = free_port()
    env = {
        **os.environ,
        "FERRY_AMQP_URL": base_settings.amqp_url,
        "FERRY_NAMESPACE": base_settings.namespace,
        "FERRY_DATABASE_URL": f"sqlite:///{tmp_path}/t.db",
        "FERRY_GRACEFUL_TIMEOUT": "5",
        # The same parking queues as the settings above, so the clean-up finds them all.
        "FERRY_PARK_DELAYS": ",".join(map(str, base_settings.park_delays)),
    }
    command = [sys.executable, "-m", "services.cli.main", "up", "--only", "task_tracker"]
    process = await asyncio.create_subprocess_exec(
        *command,
        "--base-port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:

        async def ready() -> bool:
            try:
                async with httpx.AsyncClient() as client:
                    response = await client.get(f"http://127.0.0.1:{port}/readyz")
            except httpx.HTTPError:
                return False
            return response.status_code == 200

        await eventually(ready, timeout=30, interval=0.2)
        process.send_signal(signal.SIGINT)
        output, _ = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    out = output.decode()
    assert process.returncode == 0, out
    plan, *lines = out.splitlines()
    assert plan.startswith(f"task_tracker  http://127.0.0.1:{port}")
    assert lines
    assert all(line.startswith("task_tracker | ") for line in lines), out


async def test_up_without_a_broker_gives_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--amqp-url", f"amqp://guest:guest@127.0.0.1:{free_port()}/", "up"]
    assert await asyncio.to_thread(main, args) == 1
    err = capsys.readouterr().err
    assert "cannot reach RabbitMQ" in err
    assert "make up" in err


async def test_up_rejects_an_unknown_service(capsys: pytest.CaptureFixture[str]) -> None:
    assert await asyncio.to_thread(main, ["up", "--only", "nope"]) == 2
    assert "no such service: nope" in capsys.readouterr().err
