"""Publishing and requesting over the `ferry` exchange, the way DESIGN.md asks:
persistent, mandatory, with publisher confirms; an unroutable publish is an error."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

import aio_pika
import aio_pika.abc
import aiormq
import msgspec
from aio_pika.exceptions import DeliveryError
from fast_depends.msgspec import MsgSpecSerializer
from faststream import AckPolicy
from faststream.rabbit import RabbitBroker
from faststream.rabbit.schemas import Channel

from shared.contracts.base import Contract
from shared.settings import BaseSettings
from shared.topology import Names

R = TypeVar("R", bound=Contract)

JSON = "application/json"


class Unroutable(RuntimeError):
    """No queue is bound for the routing key: nobody would ever see the message."""

    def __init__(self, exchange: str, routing_key: str) -> None:
        super().__init__(f"no queue is bound to {routing_key!r} on exchange {exchange!r}")
        self.routing_key = routing_key


class NoReply(TimeoutError):
    """A request got no answer in time (no consumer, or the consumer is down)."""


def make_broker(
    settings: BaseSettings,
    *,
    service: str,
    middlewares: Sequence[Any] = (),
    **options: Any,
) -> RabbitBroker:
    """A FastStream broker with Ferry's delivery guarantees switched on.

    FastStream's defaults are at-most-once-ish: non-persistent publishes, unroutable
    publishes confirmed silently and running handlers not awaited on shutdown. Each of
    those is turned around here, once, for every service.

    FastStream's Prometheus middleware is left out: it cost the tracker about a tenth of
    its throughput (bench/tracker.py), and `shared.service` records per-queue outcomes
    and durations itself.
    """
    return RabbitBroker(
        settings.amqp_url,
        default_channel=Channel(
            prefetch_count=settings.prefetch,
            publisher_confirms=True,
            on_return_raises=True,
        ),
        graceful_timeout=settings.graceful_timeout,
        ack_policy=AckPolicy.REJECT_ON_ERROR,
        serializer=MsgSpecSerializer(),
        middlewares=list(middlewares),
        app_id=service,
        reconnect_interval=1.0,
        **options,
    )


async def publish(
    broker: RabbitBroker,
    names: Names,
    message: Contract | bytes,
    *,
    routing_key: str | None = None,
    exchange: str | None = None,
    headers: dict[str, Any] | None = None,
    correlation_id: str | None = None,
    mandatory: bool = True,
) -> None:
    """Publish and wait for the broker's confirm. Raises `Unroutable` when no queue took it.

    Commands are mandatory: a command nobody receives is a bug. Events (`mandatory=False`)
    may legitimately have no listener yet.
    """
    key = routing_key if routing_key is not None else _routing_key_of(message)
    body = message if isinstance(message, bytes) else message.encode()
    target = names.exchange if exchange is None else exchange
    try:
        await broker.publish(
            body,
            exchange=target,
            routing_key=key,
            headers=headers,
            content_type=JSON,
            persist=True,
            mandatory=mandatory,
            correlation_id=correlation_id,
        )
    except DeliveryError as exc:
        if _was_returned(exc):
            raise Unroutable(target, key) from None
        raise


class Requester:
    """Request/reply over RabbitMQ direct reply-to, many requests in flight at once.

    FastStream's `broker.request` holds one lock per broker around each round trip, so
    concurrent callers queue up behind one another; this client keys pending replies by
    correlation id on one channel instead.
    """

    REPLY_TO = "amq.rabbitmq.reply-to"

    def __init__(self, amqp_url: str, names: Names) -> None:
        self.amqp_url = amqp_url
        self.names = names
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._pending: dict[str, asyncio.Future[bytes]] = {}

    async def __aenter__(self) -> Requester:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        self._connection = await aio_pika.connect_robust(self.amqp_url)
        self._channel = await self._connection.channel(on_return_raises=True)
        reply_queue = await self._channel.get_queue(self.REPLY_TO, ensure=False)
        await reply_queue.consume(self._on_reply, no_ack=True)
        self._exchange = await self._channel.get_exchange(self.names.exchange, ensure=False)

    async def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        if self._connection is not None:
            await self._connection.close()

    async def request(
        self,
        message: Contract,
        reply_type: type[R],
        *,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> R:
        assert self._exchange is not None, "call connect() first"
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            await self._exchange.publish(
                aio_pika.Message(
                    message.encode(),
                    content_type=JSON,
                    correlation_id=correlation_id,
                    reply_to=self.REPLY_TO,
                    # A request nobody picks up in time is not worth answering later.
                    expiration=timeout,
                ),
                routing_key=message.ROUTING_KEY,
                mandatory=True,
            )
            body = await asyncio.wait_for(future, timeout)
        except DeliveryError as exc:
            if _was_returned(exc):
                raise Unroutable(self.names.exchange, message.ROUTING_KEY) from None
            raise
        except TimeoutError:
            raise NoReply(f"no reply to {message.ROUTING_KEY} within {timeout:g}s") from None
        finally:
            self._pending.pop(correlation_id, None)
        return msgspec.json.decode(body, type=reply_type, strict=True)

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(message.body)


def _routing_key_of(message: Contract | bytes) -> str:
    if isinstance(message, bytes) or not message.ROUTING_KEY:
        raise ValueError("a routing key is needed for this message")
    return message.ROUTING_KEY


def _was_returned(exc: DeliveryError) -> bool:
    # aio-pika raises DeliveryError for a basic.return (frame is Basic.Return) and for a
    # broker nack; only the first means "unroutable".
    return isinstance(exc.frame, aiormq.spec.Basic.Return)
