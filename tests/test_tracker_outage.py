"""A store outage is not a failure of the messages: the tracker stops consuming, holds
what it has in flight, reports not ready and answers requests with an error; nothing is
parked or dead-lettered, and after recovery every update is applied exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from services.task_tracker.app import TaskTracker
from services.task_tracker.store.sqlite import SqliteTaskStore
from shared.contracts.tasks import ItemOutcome, TaskGet, TaskGetReply, TaskSubmit, TaskUpdate
from shared.messaging import RemoteError, Requester
from shared.settings import BaseSettings
from tests.conftest import Cleanup
from tests.support.proxy import CuttableProxy
from tests.support.publisher import publish_many
from tests.support.tracker import POSTGRES_URL, backend_settings
from tests.support.waiting import eventually

UPDATES = 60


class Outage:
    """Makes the tracker's store fail, then recovers it."""

    def __init__(self, proxy: CuttableProxy | None) -> None:
        self.proxy = proxy
        self.store: SqliteTaskStore | None = None

    def attach(self, tracker: TaskTracker) -> None:
        if self.proxy is None:
            assert isinstance(tracker.store, SqliteTaskStore)
            self.store = tracker.store

    def begin(self) -> None:
        if self.proxy is not None:
            # PostgreSQL unreachable: open connections die, new ones are refused.
            self.proxy.accepting = False
            self.proxy.cut()
        else:
            assert self.store is not None

            def broken(*args: Any) -> Any:
                raise sqlite3.OperationalError("disk I/O error")

            for method in ("_apply", "_load", "_save"):
                setattr(self.store, method, broken)

    def end(self) -> None:
        if self.proxy is not None:
            self.proxy.accepting = True
        else:
            assert self.store is not None
            for method in ("_apply", "_load", "_save"):
                delattr(self.store, method)


@pytest.fixture(params=["sqlite", "postgres"])
async def tracker_and_outage(
    request: pytest.FixtureRequest, base_settings: BaseSettings, tmp_path: Path, cleanup: Cleanup
) -> AsyncIterator[tuple[TaskTracker, Outage]]:
    proxy: CuttableProxy | None = None
    overrides: dict[str, Any] = {"sweep_interval": 3600.0, "store_timeout": 1.0}
    if request.param == "postgres":
        proxy = CuttableProxy("127.0.0.1", 5432)
        await proxy.start()
        overrides["database_url"] = POSTGRES_URL.replace(":5432", f":{proxy.port}")
    outage = Outage(proxy)
    try:
        async with backend_settings(request.param, base_settings, tmp_path, **overrides) as s:
            tracker = TaskTracker(s)
            cleanup.services.append(tracker.service)
            outage.attach(tracker)
            await tracker.service.app.start()
            try:
                yield tracker, outage
            finally:
                if outage.proxy is not None:
                    outage.proxy.accepting = True
                await tracker.service.app.stop()
    finally:
        if proxy is not None:
            await proxy.stop()


async def queued(connection: aio_pika.abc.AbstractConnection, queues: list[str]) -> int:
    """Messages waiting in `queues` right now."""
    total = 0
    for name in queues:
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(name, passive=True)
            total += declared.declaration_result.message_count or 0
        except aio_pika.exceptions.ChannelClosed:
            pass  # never declared: empty
        finally:
            if not channel.is_closed:
                await channel.close()
    return total


async def test_a_store_outage_holds_the_updates_and_loses_nothing(
    tracker_and_outage: tuple[TaskTracker, Outage], amqp: aio_pika.abc.AbstractConnection
) -> None:
    tracker, outage = tracker_and_outage
    settings, names = tracker.settings, tracker.service.names
    failure_queues = [names.dead_letter_queue("task_tracker")] + [
        names.parking_queue(d) for d in settings.park_delays
    ]
    async with Requester(settings.amqp_url, names) as client:
        await publish_many(settings.amqp_url, names, [TaskSubmit.now(task_id="o1", kind="demo")])

        async def items() -> int:
            reply = await client.request(TaskGet(task_id="o1"), TaskGetReply)
            return reply.task.items_total if reply.task else -1

        await eventually(lambda: _not_failing(items, 0))
        assert await tracker.service.readiness() == []

        outage.begin()
        # A request meets the outage: an error reply that says so, promptly.
        with pytest.raises(RemoteError, match="task store is unavailable"):
            await client.request(TaskGet(task_id="o1"), TaskGetReply, timeout=5)
        updates = [
            TaskUpdate.now(
                task_id="o1",
                status="RUNNING",
                items=[ItemOutcome(item_key=f"i{n}", outcome="SUCCESS")],
            )
            for n in range(UPDATES)
        ]
        await publish_many(settings.amqp_url, names, updates)

        async def not_ready() -> list[str]:
            return [p for p in await tracker.service.readiness() if "task store" in p]

        await eventually(not_ready)
        # Longer than the retry budget and every parking delay: under the old behaviour
        # the held updates would have been parked and dead-lettered by now.
        for _ in range(int((settings.retry_budget + sum(settings.park_delays)) / 0.1) + 5):
            assert await queued(amqp, failure_queues) == 0
            await asyncio.sleep(0.1)
        assert await not_ready()

        outage.end()
        await eventually(lambda: _not_failing(items, UPDATES), timeout=20)
        await eventually(lambda: _ready(tracker), timeout=10)
        assert await queued(amqp, failure_queues) == 0
        reply = await client.request(TaskGet(task_id="o1"), TaskGetReply)
        assert reply.task is not None
        assert (reply.task.items_total, reply.task.items_succeeded) == (UPDATES, UPDATES)


async def _not_failing(count: Any, target: int) -> bool:
    try:
        return bool(await count() == target)
    except RemoteError:
        return False


async def _ready(tracker: TaskTracker) -> bool:
    return await tracker.service.readiness() == []
