"""Two tracker replicas on one PostgreSQL database and one namespace: every side effect
happens once. Commands are counted by a consumer on the command's own queue."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import msgspec
import pytest

from services.task_tracker.app import TaskTracker
from services.task_tracker.settings import TrackerSettings
from shared.contracts.tasks import DrivingCommand, TaskSubmit
from shared.settings import BaseSettings
from tests.conftest import Cleanup
from tests.support.publisher import publish_many
from tests.support.tracker import backend_settings
from tests.support.waiting import eventually

TASKS = 150


@pytest.fixture
async def replicas(
    base_settings: BaseSettings, tmp_path: Path, cleanup: Cleanup
) -> AsyncIterator[list[TaskTracker]]:
    async with backend_settings(
        "postgres",
        base_settings,
        tmp_path,
        sweep_interval=3600.0,
        stall_after=0.5,
        give_up_after=60.0,
        sweep_page_size=7,
    ) as settings:
        trackers = [TaskTracker(settings) for _ in range(2)]
        started: list[TaskTracker] = []
        try:
            for tracker in trackers:
                cleanup.services.append(tracker.service)
                await tracker.service.app.start()
                started.append(tracker)
            yield trackers
        finally:
            for tracker in started:
                await tracker.service.app.stop()


class CommandCounter:
    """A worker's queue for `demo.work.do`: counts each task's driving commands."""

    def __init__(self) -> None:
        self.by_task: Counter[str] = Counter()

    @classmethod
    async def bind(
        cls, connection: aio_pika.abc.AbstractConnection, exchange: str
    ) -> CommandCounter:
        counter = cls()
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, "demo.work.do")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            counter.by_task[msgspec.json.decode(message.body)["task_id"]] += 1

        await queue.consume(on_message, no_ack=True)
        return counter

    @property
    def total(self) -> int:
        return sum(self.by_task.values())


def submits() -> list[TaskSubmit]:
    return [
        TaskSubmit.now(
            task_id=f"r{n:03d}", kind="demo", command=DrivingCommand(routing_key="demo.work.do")
        )
        for n in range(TASKS)
    ]


async def test_two_replicas_drive_each_submitted_task_once(
    replicas: list[TaskTracker], amqp: aio_pika.abc.AbstractConnection
) -> None:
    settings: TrackerSettings = replicas[0].settings
    names = replicas[0].service.names
    counter = await CommandCounter.bind(amqp, names.exchange)
    # Every submit three times, back to back (a producer's retries, redeliveries): the
    # replicas take turns at the queue, so each sees most tasks at about the same moment.
    await publish_many(settings.amqp_url, names, [s for submit in submits() for s in (submit,) * 3])
    await eventually(lambda: len(counter.by_task) == TASKS, timeout=20)
    await asyncio.sleep(0.5)  # a duplicate would be published by now
    assert counter.total == TASKS, counter.by_task.most_common(3)


async def test_two_replicas_sweeping_at_once_redrive_each_stalled_task_once(
    replicas: list[TaskTracker], amqp: aio_pika.abc.AbstractConnection
) -> None:
    settings = replicas[0].settings
    names = replicas[0].service.names
    counter = await CommandCounter.bind(amqp, names.exchange)
    await publish_many(settings.amqp_url, names, submits())
    await eventually(lambda: counter.total == TASKS, timeout=20)
    await asyncio.sleep(settings.stall_after + 0.2)
    changed = await asyncio.gather(*(tracker.sweep() for tracker in replicas))
    assert sum(changed) == TASKS
    await eventually(lambda: counter.total == 2 * TASKS, timeout=20)
    await asyncio.sleep(0.5)
    assert set(counter.by_task.values()) == {2}
