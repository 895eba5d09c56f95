"""A tracker killed mid-batch (SIGKILL, no goodbye) loses and doubles nothing: every
update it had not committed is redelivered to the next tracker and merged exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aio_pika
import pytest

from services.task_tracker.settings import TrackerSettings
from shared.contracts.tasks import ItemOutcome, TaskGet, TaskGetReply, TaskSubmit, TaskUpdate
from shared.messaging import NoReply, RemoteError, Requester
from shared.settings import BaseSettings
from shared.topology import Names
from tests.conftest import Cleanup
from tests.support.publisher import publish_many
from tests.support.tracker import TrackerProcess, backend_settings, free_port
from tests.support.waiting import drain, eventually

ITEMS = 3000


@pytest.fixture(params=["sqlite", "postgres"])
async def settings(
    request: pytest.FixtureRequest, base_settings: BaseSettings, tmp_path: Path
) -> AsyncIterator[TrackerSettings]:
    async with backend_settings(
        request.param,
        base_settings,
        tmp_path,
        http_port=free_port(),
        batch_size=128,
        log_level="WARNING",
    ) as settings:
        yield settings


@pytest.mark.slow
async def test_a_tracker_killed_mid_batch_loses_and_doubles_nothing(
    settings: TrackerSettings, cleanup: Cleanup, tmp_path: Path
) -> None:
    names = Names(settings.namespace)
    for queue in ("submit", "update", "cancel", "get", "list"):
        cleanup.queues.append(names.queue("task_tracker", queue))
    cleanup.queues.append(names.dead_letter_queue("task_tracker"))
    cleanup.queues.extend(names.parking_queue(d) for d in settings.park_delays)
    tracker = TrackerProcess(settings, tmp_path / "tracker.log")
    await tracker.start()
    try:
        updates = [
            TaskUpdate.now(
                task_id="crash",
                status="RUNNING",
                end_value=ITEMS,
                items=[ItemOutcome(item_key=f"item-{i}", outcome="SUCCESS")],
            )
            for i in range(ITEMS)
        ]
        submit = TaskSubmit.now(task_id="crash", kind="crash-test")
        publishing = asyncio.create_task(publish_many(settings.amqp_url, names, [submit, *updates]))
        async with Requester(settings.amqp_url, names) as client:

            async def items_done() -> int:
                reply = await client.request(TaskGet(task_id="crash"), TaskGetReply, timeout=2)
                return reply.task.items_total if reply.task else 0

            await eventually(lambda: _at_least(items_done, ITEMS // 5), timeout=60, interval=0.01)
            before_kill = await items_done()
            tracker.kill()
            assert before_kill < ITEMS  # killed mid-stream, with work in flight
            await publishing
            await tracker.start()
            await eventually(lambda: _at_least(items_done, ITEMS), timeout=90, interval=0.2)
            reply = await client.request(TaskGet(task_id="crash"), TaskGetReply)
            task = reply.task
            assert task is not None
            assert (task.items_total, task.items_succeeded, task.items_failed) == (ITEMS, ITEMS, 0)
            assert task.progress_value == ITEMS  # derived from the item set, never doubled
            assert task.status == "RUNNING"
        dead = await _dead_letters(settings)
        assert dead == 0
    finally:
        assert tracker.stop() == 0 or tracker.process is None


async def _at_least(count: Callable[[], Awaitable[int]], target: int) -> bool:
    try:
        return await count() >= target
    except (NoReply, RemoteError):  # the tracker is down or restarting, or no submit yet
        return False


async def _dead_letters(settings: TrackerSettings) -> int:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        got = await drain(
            connection,
            Names(settings.namespace).dead_letter_queue("task_tracker"),
            expect=1,
            timeout=0.5,
        )
    return len(got)
