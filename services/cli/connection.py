"""Opening the broker for one command, with the connection failures turned into `CliError`s."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar
from urllib.parse import urlsplit

import aio_pika
import aio_pika.abc
import aiormq
from faststream.rabbit import RabbitBroker

from services.cli.errors import CliError
from shared.contracts.base import Contract
from shared.messaging import NoReply, RemoteError, Requester, Unroutable, make_broker
from shared.settings import BaseSettings
from shared.topology import Names

CONNECT_TIMEOUT = 5.0

R = TypeVar("R", bound=Contract)


class Answered(CliError):
    """The service that owns the request answered with an error (its own words)."""


def where(settings: BaseSettings) -> str:
    """host:port of the broker, for messages (never the credentials)."""
    parts = urlsplit(settings.amqp_url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 5672}"


def unreachable(settings: BaseSettings, exc: BaseException) -> CliError:
    return CliError(f"cannot reach RabbitMQ at {where(settings)}: {exc or type(exc).__name__}")


def missing_exchange(names: Names) -> CliError:
    return CliError(
        f"exchange {names.exchange!r} does not exist"
        f" (is a service running{' in namespace ' + names.namespace if names.namespace else ''}?)"
    )


@asynccontextmanager
async def broker(settings: BaseSettings) -> AsyncIterator[RabbitBroker]:
    """A connected FastStream broker with Ferry's publishing guarantees (confirms, mandatory)."""
    rabbit = make_broker(settings, service="ferry-cli")
    try:
        await rabbit.connect()
    except (OSError, aiormq.exceptions.AMQPError) as exc:
        raise unreachable(settings, exc) from None
    try:
        yield rabbit
    except aio_pika.exceptions.ChannelNotFoundEntity:
        raise missing_exchange(Names(settings.namespace)) from None
    finally:
        await rabbit.stop()


@asynccontextmanager
async def connection(
    settings: BaseSettings,
) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    """A plain aio-pika connection, for what FastStream does not do (peeking, private queues)."""
    try:
        conn = await aio_pika.connect_robust(settings.amqp_url, timeout=CONNECT_TIMEOUT)
    except (OSError, aiormq.exceptions.AMQPError, TimeoutError) as exc:
        raise unreachable(settings, exc) from None
    async with conn:
        yield conn


@asynccontextmanager
async def requester(settings: BaseSettings) -> AsyncIterator[Requester]:
    names = Names(settings.namespace)
    client = Requester(settings.amqp_url, names)
    try:
        await client.connect()
    except (OSError, aiormq.exceptions.AMQPError) as exc:
        await client.close()
        raise unreachable(settings, exc) from None
    try:
        yield client
    except aio_pika.exceptions.ChannelNotFoundEntity:
        raise missing_exchange(names) from None
    finally:
        await client.close()


async def ask(
    client: Requester,
    message: Contract,
    reply_type: type[R],
    *,
    owner: str,
    timeout: float,  # noqa: ASYNC109 - the request's own deadline, handed to it
) -> R:
    """One request/reply for a command. Nobody bound to the key, no reply in time, and an
    error reply (`Answered`) each end as one line; the first two name `owner`."""
    try:
        return await client.request(message, reply_type, timeout=timeout)
    except Unroutable:
        raise CliError(
            f"no queue is bound to {message.ROUTING_KEY} (is the {owner} running?)"
        ) from None
    except NoReply as exc:
        raise CliError(f"{exc} (is the {owner} running?)") from None
    except RemoteError as exc:
        raise Answered(str(exc)) from None
