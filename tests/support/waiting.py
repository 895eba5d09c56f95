"""Waiting for things that happen asynchronously, with a bound on the wait."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika


async def drain(
    connection: aio_pika.abc.AbstractConnection, queue: str, *, expect: int, timeout: float = 10
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take `expect` messages off `queue` (acking them), waiting up to `timeout` seconds."""
    channel = await connection.channel()
    got: list[aio_pika.abc.AbstractIncomingMessage] = []
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        q = await channel.get_queue(queue, ensure=False)
        while len(got) < expect and asyncio.get_running_loop().time() < deadline:
            message = await q.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
            else:
                got.append(message)
    finally:
        await channel.close()
    return got


async def eventually(check: Any, *, timeout: float = 10, interval: float = 0.05) -> Any:
    """Poll `check()` (sync or async) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
