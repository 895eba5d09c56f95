"""Publishing and requesting over the `ferry` exchange, the way DESIGN.md asks:
persistent, mandatory, with publisher confirms; an unroutable publish is an error."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
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
    message_id: str | None = None,
    timestamp: datetime | None = None,
    mandatory: bool = True,
) -> None:
    """Publish and wait for the broker's confirm. Raises `Unroutable` when no queue took it.

    Commands are mandatory: a command nobody receives is a bug. Events (`mandatory=False`)
    may legitimately have no listener yet. Parked and dead-lettered copies pass the
    original's ids and timestamp, so they can be traced back to it.
    """
    key = routing_key if routing_key is not None else routing_key_of(message)
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
            message_id=message_id,
            timestamp=timestamp,
        )
    except DeliveryError as exc:
        if _was_returned(exc):
            raise Unroutable(target, key) from None
        raise


async def publish_many(
    broker: RabbitBroker,
    names: Names,
    messages: Iterable[Contract],
    *,
    in_flight: int = 256,
    mandatory: bool = True,
) -> None:
    """Publish every message with up to `in_flight` confirms outstanding at once.

    Awaiting each confirm before the next publish caps a coroutine at a few hundred
    messages a second (worker-anchors.md section 4); confirms in flight scale it. Returns
    when every message is confirmed; raises the first failure (`Unroutable`, ...) after
    the others have settled, so the caller knows nothing is left half-sent.
    """
    gate = asyncio.Semaphore(in_flight)

    async def one(message: Contract) -> None:
        async with gate:
            await publish(broker, names, message, mandatory=mandatory)

    results = await asyncio.gather(*(one(m) for m in messages), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


class RemoteError(RuntimeError):
    """The service that owns the request answered with an error (bad request, unknown id,
    its store unavailable). The message is the service's own."""


class Requester:
    """Request/reply over RabbitMQ direct reply-to, many requests in flight at once.

    FastStream's `broker.request` holds one lock per broker around each round trip, so
    concurrent callers queue up behind one another; this client keys pending replies by
    correlation id on one channel instead.

    The direct reply-to pseudo-queue is not a queue the robust channel restores: after a
    reconnect, the consumer is set up again here. Replies addressed to the lost consumer
    are gone with it, so requests pending at the cut fail at once (`NoReply`) instead of
    waiting out their deadline; the caller may ask again.
    """

    REPLY_TO = "amq.rabbitmq.reply-to"

    def __init__(self, amqp_url: str, names: Names, *, default_timeout: float = 10.0) -> None:
        self.amqp_url = amqp_url
        self.names = names
        self.default_timeout = default_timeout
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractRobustChannel | None = None
        self._pending: dict[str, asyncio.Future[bytes]] = {}

    async def __aenter__(self) -> Requester:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self, *, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self._connection = await aio_pika.connect_robust(self.amqp_url, timeout=timeout)
        channel = await self._connection.channel(on_return_raises=True)
        assert isinstance(channel, aio_pika.abc.AbstractRobustChannel)
        self._channel = channel
        self._connection.close_callbacks.add(self._on_connection_lost)
        channel.reopen_callbacks.add(self._on_reopen)
        await self._consume_replies()

    async def close(self) -> None:
        self._fail_pending("the request client was closed")
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    @property
    def is_connected(self) -> bool:
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def request(
        self,
        message: Contract,
        reply_type: type[R],
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> R:
        """Ask and wait up to `timeout` seconds (default: the client's) for the answer.

        Raises `Unroutable` (no queue bound), `NoReply` (no answer in time, or the
        connection was lost meanwhile) and `RemoteError` (the answer carries `error`).
        """
        if self._channel is None:
            raise RuntimeError("call connect() first")
        deadline = self.default_timeout if timeout is None else timeout
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            async with asyncio.timeout(deadline):
                exchange = await self._channel.get_exchange(self.names.exchange, ensure=False)
                await exchange.publish(
                    aio_pika.Message(
                        message.encode(),
                        content_type=JSON,
                        correlation_id=correlation_id,
                        reply_to=self.REPLY_TO,
                        # A request nobody picks up in time is not worth answering later.
                        expiration=deadline,
                    ),
                    routing_key=message.ROUTING_KEY,
                    mandatory=True,
                )
                body = await future
        except DeliveryError as exc:
            if _was_returned(exc):
                raise Unroutable(self.names.exchange, message.ROUTING_KEY) from None
            raise
        except NoReply:
            raise  # the connection was lost (a TimeoutError too, but not the deadline)
        except TimeoutError:
            raise NoReply(f"no reply to {message.ROUTING_KEY} within {deadline:g}s") from None
        finally:
            self._pending.pop(correlation_id, None)
        reply = msgspec.json.decode(body, type=reply_type, strict=True)
        error = getattr(reply, "error", None)
        if error:
            raise RemoteError(str(error))
        return reply

    async def _consume_replies(self) -> None:
        assert self._channel is not None
        reply_queue = await self._channel.get_queue(self.REPLY_TO, ensure=False)
        await reply_queue.consume(self._on_reply, no_ack=True)

    def _on_connection_lost(self, *_: Any) -> None:
        self._fail_pending("the connection to RabbitMQ was lost while waiting for the reply")

    async def _on_reopen(self, *_: Any) -> None:
        await self._consume_replies()

    def _fail_pending(self, why: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(NoReply(why))

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(message.body)


def routing_key_of(message: Contract | bytes) -> str:
    if isinstance(message, bytes) or not message.ROUTING_KEY:
        raise ValueError("a routing key is needed for this message")
    return message.ROUTING_KEY


def _was_returned(exc: DeliveryError) -> bool:
    # aio-pika raises DeliveryError for a basic.return (frame is Basic.Return) and for a
    # broker nack; only the first means "unroutable".
    return isinstance(exc.frame, aiormq.spec.Basic.Return)
