"""After the broker connection drops, a service reconnects, its consumers are attached
again and consuming resumes (FastStream has an open report that they are not: ours are).

One test cuts the TCP connections under the service (a network blip); a slower, opt-in one
(FERRY_TEST_BROKER_RESTART=1) restarts the local RabbitMQ application itself.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from urllib.parse import urlsplit

import pytest

from shared.settings import BaseSettings
from tests.conftest import Cleanup
from tests.support.proxy import CuttableProxy
from tests.support.waiting import eventually
from tests.test_service_reliability import Chore, Toy, send


@pytest.fixture
async def proxy(amqp_url: str) -> AsyncIterator[CuttableProxy]:
    parts = urlsplit(amqp_url)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def test_consuming_resumes_after_the_connection_is_cut(
    base_settings: BaseSettings, cleanup: Cleanup, proxy: CuttableProxy
) -> None:
    parts = urlsplit(base_settings.amqp_url)
    url = f"amqp://{parts.username}:{parts.password}@127.0.0.1:{proxy.port}{parts.path or '/'}"
    toy = Toy(replace(base_settings, amqp_url=url))
    cleanup.services.append(toy.service)
    await toy.service.app.start()
    try:
        await send(toy, Chore(chore_id="before"))
        await eventually(lambda: toy.done == ["before"])
        assert await toy.service.readiness() == []

        proxy.accepting = False
        proxy.cut()
        await eventually(lambda: not toy.service.broker._connection.connected.is_set())  # type: ignore[union-attr]
        assert await toy.service.readiness() != []
        proxy.accepting = True

        await eventually(_ready(toy), timeout=30)
        await send(toy, Chore(chore_id="after"))
        await eventually(lambda: toy.done == ["before", "after"], timeout=15)
    finally:
        await toy.service.app.stop()


def _ready(toy: Toy) -> object:
    async def check() -> bool:
        return await toy.service.readiness() == []

    return check


def _local_rabbitmqctl(amqp_url: str) -> str | None:
    # Opt-in: restarting a broker that other work shares is not something a test run
    # should do unasked.
    host = urlsplit(amqp_url).hostname
    if host not in ("127.0.0.1", "localhost") or not os.environ.get("FERRY_TEST_BROKER_RESTART"):
        return None
    return shutil.which("rabbitmqctl")


@pytest.mark.slow
async def test_consuming_resumes_after_the_broker_restarts(
    base_settings: BaseSettings, cleanup: Cleanup
) -> None:
    ctl = _local_rabbitmqctl(base_settings.amqp_url)
    if ctl is None:
        pytest.skip("set FERRY_TEST_BROKER_RESTART=1 (local RabbitMQ and rabbitmqctl) to run")
    toy = Toy(base_settings)
    cleanup.services.append(toy.service)
    await toy.service.app.start()
    try:
        await send(toy, Chore(chore_id="before"))
        await eventually(lambda: toy.done == ["before"])

        await _run(ctl, "stop_app")
        try:
            await eventually(lambda: not toy.service.broker._connection.connected.is_set())  # type: ignore[union-attr]
        finally:
            await _run(ctl, "start_app")
        await _run(ctl, "await_startup")

        await eventually(_ready(toy), timeout=60)
        # Durable quorum queues survive; the consumer must be back on them.
        await eventually(_send_ok(toy), timeout=30)
        await eventually(lambda: toy.done == ["before", "after"], timeout=30)
    finally:
        await toy.service.app.stop()


def _send_ok(toy: Toy) -> object:
    async def check() -> bool:
        try:
            await send(toy, Chore(chore_id="after"))
        except Exception:
            return False
        return True

    return check


async def _run(*command: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
