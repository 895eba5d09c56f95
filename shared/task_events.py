"""Following one task's changes as the tracker announces them (`tasks.changed`), for a
watcher: the `ferry tasks watch` command and the gateway's WatchTask stream."""

from __future__ import annotations

import asyncio

import aio_pika
import aio_pika.abc
import msgspec

from shared.contracts.tasks import TasksChanged, TaskView


class NoTaskExchange(LookupError):
    """The `ferry` exchange does not exist: no task tracker has ever run in this namespace."""


async def follow_task(
    channel: aio_pika.abc.AbstractChannel, exchange_name: str, task_id: str
) -> asyncio.Queue[TaskView]:
    """Bind a private queue (exclusive: gone with the channel's connection) to
    `tasks.changed`; returns where the changes of `task_id` arrive.

    Subscribe first, then read the task: a change after the reading is already queued, so
    nothing between the two is missed. Raises `NoTaskExchange` (the channel is then closed).
    """
    try:
        exchange = await channel.get_exchange(exchange_name, ensure=True)  # passive
    except aio_pika.exceptions.ChannelNotFoundEntity:
        raise NoTaskExchange(exchange_name) from None
    queue = await channel.declare_queue("", exclusive=True, auto_delete=True, durable=False)
    await queue.bind(exchange, routing_key=TasksChanged.ROUTING_KEY)
    changes: asyncio.Queue[TaskView] = asyncio.Queue()

    async def on_change(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            event = TasksChanged.decode(message.body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # not ours to judge: a watcher only reads
        # One event per commit of the tracker: it names every task the commit touched.
        for task in event.tasks:
            if task.id == task_id:
                changes.put_nowait(task)

    await queue.consume(on_change, no_ack=True)
    return changes
