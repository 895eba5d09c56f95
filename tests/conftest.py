"""Fixtures shared by every test: a real RabbitMQ, a namespace per test, clean-up after."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import aio_pika
import pytest

from shared.service import Service
from shared.settings import BaseSettings
from shared.topology import Names
from tests.support.broker import delete_declared, rabbitmq_url


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    with rabbitmq_url() as url:
        yield url


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def base_settings(amqp_url: str, namespace: str) -> BaseSettings:
    """Fast retries and short parking, so the failure paths run in seconds."""
    return BaseSettings(
        amqp_url=amqp_url,
        namespace=namespace,
        http_host="127.0.0.1",
        http_port=0,
        retry_attempts=2,
        retry_base_delay=0.01,
        retry_max_delay=0.05,
        retry_budget=1.0,
        park_delays=(0.3, 0.6),
        graceful_timeout=5.0,
    )


class Cleanup:
    def __init__(self) -> None:
        self.services: list[Service] = []
        self.queues: list[str] = []

    @contextlib.asynccontextmanager
    async def running(self, service: Service) -> AsyncIterator[None]:
        """`service` started for the block and stopped after it; what it declared is
        deleted when the test ends."""
        self.services.append(service)
        await service.app.start()
        try:
            yield
        finally:
            await service.app.stop()


@pytest.fixture
async def cleanup(amqp_url: str, namespace: str) -> AsyncIterator[Cleanup]:
    registry = Cleanup()
    yield registry
    # A service run as a process (not registered here) declares these before anything else.
    await delete_declared(amqp_url, registry.services, registry.queues, Names(namespace).exchanges)


@pytest.fixture
async def amqp(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    """A plain aio-pika connection for the test's own publishing and peeking."""
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        yield connection
