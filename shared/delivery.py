"""What a handler knows about the message in hand, and how it sends follow-ups.

A handler that declares a second parameter gets a `Delivery`: the message's headers, ids and
attempt count, and the three ways to send follow-ups (`publish`, `publish_many`,
`publish_later`). Each returns only after the broker confirmed, and the runtime acks the
message only after the handler returned, so a handler that awaits its follow-ups (they are
coroutines: that is the only way to use them) never loses one: a crash at any point means
redelivery.

`publish_later` schedules a message through the `ferry.later` delay queues (not the parking
queues, which are for failures): the message waits in the largest delay class that fits
what remains of its delay, returns to `ferry` under its routing key, and the runtime of
the consuming service sends it round again until it is due. Any delay costs a few hops,
and a message arrives at most about a second late.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from faststream.rabbit import RabbitBroker

from shared.contracts.base import Contract
from shared.messaging import publish, publish_many, routing_key_of
from shared.topology import LATER_CLASSES, LATER_HEADER, Topology, delay_label

# When a scheduled message is due, in epoch milliseconds (an integer: AMQP header floats do
# not survive every client); set by `publish_later`.
DUE_HEADER = "x-ferry-due-at"
# A scheduled message this close to being due is handled now rather than sent round again.
DUE_TOLERANCE = 0.25


def later_class(remaining: float) -> float:
    """The delay class to wait in: the largest that does not overshoot, else the smallest."""
    fitting = [seconds for seconds in LATER_CLASSES if seconds <= remaining]
    return fitting[-1] if fitting else LATER_CLASSES[0]


def seconds_until_due(headers: Mapping[str, Any], now: float | None = None) -> float:
    """How long a scheduled message still has to wait (0 when due, or not scheduled)."""
    due = headers.get(DUE_HEADER)
    if not isinstance(due, int) or isinstance(due, bool):
        return 0.0
    remaining = due / 1000 - (time.time() if now is None else now)
    return remaining if remaining > DUE_TOLERANCE else 0.0


class Scheduler:
    """Publishes messages through the delay queues, declared once, on first use (a service
    that never schedules anything declares none of them)."""

    def __init__(self, broker: RabbitBroker, topology: Topology) -> None:
        self.broker = broker
        self.topology = topology
        self._declared = False
        self._declaring = asyncio.Lock()

    async def schedule(
        self,
        body: bytes,
        routing_key: str,
        *,
        due_at: float,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        await self._declare()
        wait = later_class(due_at - time.time())
        names = self.topology.names
        await publish(
            self.broker,
            names,
            body,
            exchange=names.later_exchange,
            routing_key=routing_key,
            headers={
                **(headers or {}),
                LATER_HEADER: delay_label(wait),
                DUE_HEADER: round(due_at * 1000),
            },
            message_id=message_id,
            correlation_id=correlation_id,
        )

    async def _declare(self) -> None:
        if self._declared:
            return
        async with self._declaring:
            if self._declared:
                return
            topology = self.topology
            await self.broker.declare_exchange(topology.exchange)
            later = await self.broker.declare_exchange(topology.later_exchange)
            for seconds in LATER_CLASSES:
                spec = topology.delay_queue(seconds)
                queue = await self.broker.declare_queue(spec)
                await queue.bind(later, routing_key="", arguments=spec.bind_arguments)
            self._declared = True


@dataclass
class Delivery:
    """The message a handler is handling, and its follow-ups (see the module docstring)."""

    broker: RabbitBroker
    scheduler: Scheduler
    queue: str
    routing_key: str
    headers: Mapping[str, Any]
    message_id: str | None
    correlation_id: str | None
    # 1 on the first delivery, +1 for each redelivery by the broker (a crash, a cut).
    attempt: int
    # How many times the message has been parked after its retry budget was spent.
    parked: int

    async def publish(
        self,
        message: Contract | bytes,
        *,
        routing_key: str | None = None,
        headers: dict[str, Any] | None = None,
        mandatory: bool = True,
    ) -> None:
        """Publish to `ferry` and wait for the confirm (`Unroutable` if no queue took it)."""
        await publish(
            self.broker,
            self.scheduler.topology.names,
            message,
            routing_key=routing_key,
            headers=headers,
            mandatory=mandatory,
            correlation_id=self.correlation_id,
        )

    async def publish_many(self, messages: Iterable[Contract], *, mandatory: bool = True) -> None:
        """Publish all of them with their confirms awaited concurrently."""
        await publish_many(
            self.broker, self.scheduler.topology.names, messages, mandatory=mandatory
        )

    async def publish_later(
        self, message: Contract | bytes, delay: float, *, routing_key: str | None = None
    ) -> None:
        """Publish `message` to `ferry` in `delay` seconds (confirmed now, delivered then)."""
        body = message if isinstance(message, bytes) else message.encode()
        await self.scheduler.schedule(
            body,
            routing_key if routing_key is not None else routing_key_of(message),
            due_at=time.time() + max(delay, 0.0),
            correlation_id=self.correlation_id,
        )
