"""A tracker killed mid-batch (SIGKILL, no goodbye) loses and doubles nothing: every
update it had not committed is redelivered to the next tracker and merged exactly once."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aio_pika
import httpx
import pytest

from services.task_tracker.settings import TrackerSettings
from shared.contracts.tasks import ItemOutcome, TaskGet, TaskGetReply, TaskUpdate
from shared.messaging import NoReply, Requester
from shared.settings import BaseSettings
from shared.topology import Names
from tests.conftest import Cleanup
from tests.support.publisher import publish_many
from tests.support.tracker import backend_settings, environment
from tests.support.waiting import drain, eventually

ITEMS = 3000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TrackerProcess:
    """`python -m services.task_tracker` as an operator would run it."""

    def __init__(self, settings: TrackerSettings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.task_tracker"],
                env=environment(self.settings),
                stdout=out,
                stderr=out,
            )
        url = f"http://127.0.0.1:{self.settings.http_port}/readyz"

        async def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"tracker exited: {self.log.read_text()[-2000:]}")
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(url, timeout=1)).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(ready, timeout=30, interval=0.1)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


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
            TaskUpdate(
                task_id="crash",
                status="RUNNING",
                end_value=ITEMS,
                items=[ItemOutcome(item_key=f"item-{i}", outcome="SUCCESS")],
            )
            for i in range(ITEMS)
        ]
        publishing = asyncio.create_task(publish_many(settings.amqp_url, names, updates))
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
    except NoReply:  # the tracker is down or busy restarting
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
