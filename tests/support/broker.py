"""Where the tests find RabbitMQ: `AMQP_URL` (default the local one), else a testcontainer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import aio_pika

from shared.service import Service

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 2):
            return True
    except OSError:
        return False


@contextmanager
def rabbitmq_url() -> Iterator[str]:
    url = os.environ.get("AMQP_URL") or os.environ.get("FERRY_AMQP_URL") or DEFAULT_URL
    if _reachable(url):
        yield url
        return
    # No broker here: start one where Docker exists (never on this project's CI machine).
    from testcontainers.rabbitmq import RabbitMqContainer

    with RabbitMqContainer("rabbitmq:4.1") as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(5672)
        yield f"amqp://guest:guest@{host}:{port}/"


async def delete_namespace(url: str, queues: list[str], exchanges: list[str]) -> None:
    """Remove what a test declared, so the shared broker does not fill up. Each deletion
    is bounded in time: a slow broker must not hang the test run."""
    connection = await asyncio.wait_for(aio_pika.connect(url), 15)
    async with connection:
        for kind, names in (("queue", queues), ("exchange", exchanges)):
            for name in names:
                channel = await connection.channel()
                delete = channel.queue_delete if kind == "queue" else channel.exchange_delete
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(delete(name), 15)
                if not channel.is_closed:
                    await channel.close()


async def delete_declared(
    url: str,
    services: Iterable[Service],
    queues: Iterable[str] = (),
    exchanges: Iterable[str] = (),
) -> None:
    """Remove what `services` declare (`Service.declared_names`), and `queues` and
    `exchanges` besides: a test's or a benchmark's clean-up."""
    all_queues, all_exchanges = set(queues), set(exchanges)
    for service in services:
        declared_queues, declared_exchanges = service.declared_names()
        all_queues.update(declared_queues)
        all_exchanges.update(declared_exchanges)
    await delete_namespace(url, sorted(all_queues), sorted(all_exchanges))
