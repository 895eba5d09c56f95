"""The delivery rules every service gets from `shared.service`, on a real RabbitMQ.

A toy service whose handler fails on command shows each path: success, transient failure
retried in the worker, parking and return, dead-lettering after the last parking (with the
item recorded as failed on its task), permanent failure, malformed and oversized bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import ClassVar, Literal

import aio_pika
import pytest

from shared.contracts.base import Contract, ItemCommand
from shared.contracts.tasks import TaskUpdate
from shared.messaging import publish
from shared.retry import PermanentError, TransientError
from shared.service import ERROR_HEADER, ERROR_KIND_HEADER, QUEUE_HEADER, Service
from shared.settings import BaseSettings
from shared.topology import WorkQueue
from tests.conftest import Cleanup
from tests.support.waiting import drain, eventually


class Chore(Contract, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "toy.chores.do"

    chore_id: str
    fail: Literal["never", "transient", "permanent"] = "never"
    fail_times: int = 0  # how many calls fail before one succeeds


class ItemChore(ItemCommand, kw_only=True):
    """A chore that is one item of a task: its failure is recorded on the task."""

    ROUTING_KEY: ClassVar[str] = "toy.items.do"

    chore_id: str
    fail: Literal["never", "transient", "permanent"] = "never"
    fail_times: int = 0


CHORES = WorkQueue("toy", "chores", Chore.ROUTING_KEY)
ITEM_CHORES = WorkQueue("toy", "items", ItemChore.ROUTING_KEY)
UPDATES = WorkQueue("toy", "updates", TaskUpdate.ROUTING_KEY)


class Toy:
    """A service that does chores, failing as each chore asks."""

    def __init__(self, settings: BaseSettings) -> None:
        self.service = Service("toy", settings)
        self.calls: Counter[str] = Counter()
        self.done: list[str] = []
        self.updates: list[TaskUpdate] = []
        self.release = asyncio.Event()
        self.release.set()

        @self.service.handles(CHORES, Chore)
        async def do_chore(chore: Chore) -> None:
            await self.do(chore)

        @self.service.handles(ITEM_CHORES, ItemChore)
        async def do_item(chore: ItemChore) -> None:
            await self.do(chore)

        # Stands in for the task tracker: collects what the runtime reports about items.
        @self.service.handles(UPDATES, TaskUpdate)
        async def note_update(update: TaskUpdate) -> None:
            self.updates.append(update)

    async def do(self, chore: Chore | ItemChore) -> None:
        self.calls[chore.chore_id] += 1
        await self.release.wait()
        if self.calls[chore.chore_id] <= chore.fail_times:
            if chore.fail == "transient":
                raise TransientError("peer busy")
            if chore.fail == "permanent":
                raise PermanentError("peer says no")
        self.done.append(chore.chore_id)


@pytest.fixture
async def toy(base_settings: BaseSettings, cleanup: Cleanup) -> AsyncIterator[Toy]:
    toy = Toy(base_settings)
    cleanup.services.append(toy.service)
    await toy.service.app.start()
    try:
        yield toy
    finally:
        toy.release.set()
        await toy.service.app.stop()


async def send(toy: Toy, body: Contract | bytes, routing_key: str | None = None) -> None:
    if routing_key is None:
        routing_key = body.ROUTING_KEY if isinstance(body, Contract) else Chore.ROUTING_KEY
    await publish(toy.service.broker, toy.service.names, body, routing_key=routing_key)


def dlq(toy: Toy) -> str:
    return toy.service.names.dead_letter_queue("toy")


async def test_a_chore_is_done_once_and_acked(
    toy: Toy, amqp: aio_pika.abc.AbstractConnection
) -> None:
    await send(toy, Chore(chore_id="c1"))
    await eventually(lambda: toy.done == ["c1"])
    await asyncio.sleep(0.2)
    assert toy.calls["c1"] == 1
    assert await drain(amqp, dlq(toy), expect=1, timeout=0.3) == []


async def test_transient_failure_is_retried_in_the_worker(toy: Toy) -> None:
    await send(toy, Chore(chore_id="c2", fail="transient", fail_times=1))
    await eventually(lambda: toy.done == ["c2"])
    assert toy.calls["c2"] == 2  # one failure, one success, no parking needed


async def test_spent_budget_parks_the_message_and_it_comes_back(toy: Toy) -> None:
    # 2 in-process attempts per delivery: 3 failures need one trip through a parking queue.
    await send(toy, Chore(chore_id="c3", fail="transient", fail_times=3))
    await eventually(lambda: toy.done == ["c3"], timeout=10)
    assert toy.calls["c3"] == 4


async def test_after_the_last_parking_it_is_dead_lettered_and_the_item_failed(
    toy: Toy, amqp: aio_pika.abc.AbstractConnection
) -> None:
    chore = ItemChore(
        chore_id="c4", task_id="task-4", item_key="dataset-a", fail="transient", fail_times=100
    )
    await send(toy, chore)
    [dead] = await drain(amqp, dlq(toy), expect=1, timeout=15)
    # 2 attempts per delivery x (1 delivery + 2 parkings) and not one more.
    assert toy.calls["c4"] == 6
    assert dead.headers[ERROR_KIND_HEADER] == "exhausted"
    assert "peer busy" in str(dead.headers[ERROR_HEADER])
    assert dead.headers[QUEUE_HEADER] == toy.service.names.queue("toy", "items")
    assert ItemChore.decode(dead.body) == chore
    [update] = await eventually(lambda: toy.updates)
    assert update.task_id == "task-4"
    assert [(i.item_key, i.outcome) for i in update.items] == [("dataset-a", "ERRORED")]
    assert toy.done == []


async def test_permanent_failure_skips_the_retries(
    toy: Toy, amqp: aio_pika.abc.AbstractConnection
) -> None:
    await send(toy, Chore(chore_id="c5", fail="permanent", fail_times=100))
    [dead] = await drain(amqp, dlq(toy), expect=1)
    assert toy.calls["c5"] == 1
    assert dead.headers[ERROR_KIND_HEADER] == "permanent"
    assert "peer says no" in str(dead.headers[ERROR_HEADER])


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "malformed"),
        (b'{"fail": "never"}', "missing required field `chore_id`"),
        (b'{"chore_id": 7}', "Expected `str`, got `int`"),
        (b'{"chore_id": "x", "fail": "sometimes"}', "Invalid enum value 'sometimes'"),
    ],
)
async def test_malformed_bodies_are_dead_lettered_with_the_reason_and_serving_goes_on(
    toy: Toy, amqp: aio_pika.abc.AbstractConnection, body: bytes, reason: str
) -> None:
    await send(toy, body)
    await send(toy, Chore(chore_id="after"))
    [dead] = await drain(amqp, dlq(toy), expect=1)
    assert dead.body == body
    assert dead.headers[ERROR_KIND_HEADER] == "malformed"
    if reason != "malformed":
        assert reason in str(dead.headers[ERROR_HEADER])
    await eventually(lambda: toy.done == ["after"])


async def test_an_oversized_body_is_dead_lettered_unread(
    base_settings: BaseSettings, cleanup: Cleanup, amqp: aio_pika.abc.AbstractConnection
) -> None:
    toy = Toy(replace(base_settings, max_message_bytes=1000))
    cleanup.services.append(toy.service)
    async with contextlib.AsyncExitStack() as stack:
        await toy.service.app.start()
        stack.push_async_callback(toy.service.app.stop)
        await send(toy, Chore(chore_id="x" * 2000))
        [dead] = await drain(amqp, dlq(toy), expect=1)
        assert "exceeds the limit of 1000" in str(dead.headers[ERROR_HEADER])
        assert toy.calls == Counter()


async def test_shutdown_waits_for_running_handlers_and_they_are_acked(
    toy: Toy, amqp: aio_pika.abc.AbstractConnection
) -> None:
    toy.release.clear()
    await send(toy, Chore(chore_id="slow"))
    await eventually(lambda: toy.calls["slow"] == 1)
    stopping = asyncio.create_task(toy.service.app.stop())
    await asyncio.sleep(0.3)
    assert not stopping.done()  # waiting for the running handler
    toy.release.set()
    await asyncio.wait_for(stopping, 10)
    assert toy.done == ["slow"]
    # Acked before the connection closed: nothing is left to redeliver.
    channel = await amqp.channel()
    queue = await channel.declare_queue(toy.service.names.queue("toy", "chores"), passive=True)
    assert queue.declaration_result.message_count == 0
