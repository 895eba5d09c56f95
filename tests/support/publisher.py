"""Publishing many messages fast, with confirms, the way a busy worker fleet would."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aio_pika

from shared.contracts.base import Contract
from shared.topology import Names


async def publish_many(
    amqp_url: str, names: Names, messages: Sequence[Contract], *, in_flight: int = 200
) -> None:
    """Publish every message persistent and mandatory, `in_flight` confirms outstanding."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(on_return_raises=True)
        exchange = await channel.get_exchange(names.exchange, ensure=False)
        gate = asyncio.Semaphore(in_flight)

        async def one(message: Contract) -> None:
            async with gate:
                await exchange.publish(
                    aio_pika.Message(
                        message.encode(),
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=message.ROUTING_KEY,
                    mandatory=True,
                )

        await asyncio.gather(*(one(m) for m in messages))
