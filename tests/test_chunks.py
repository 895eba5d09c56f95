"""Chunked transfers over RabbitMQ (shared/chunks.py), on the real broker: payloads arrive
whole and in order, every kind of breakage is a `TransferFailed`, and the memory either
side holds stays bounded by the window, not the payload."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator, Iterator

import aio_pika
import aio_pika.abc
import pytest

from shared.chunks import (
    CHUNK_HEADER,
    LAST_HEADER,
    SHA256_HEADER,
    SIZE_HEADER,
    TRANSFER_HEADER,
    ChunkLink,
    TransferFailed,
    TransferLimits,
    declare_transfer_queue,
    delete_transfer_queue,
    new_transfer_id,
    receive_chunks,
    rechunk,
    send_chunks,
    transfer_queue,
)
from shared.topology import Names

LIMITS = TransferLimits(chunk_bytes=64 * 1024, window=4, idle_timeout=2.0, max_bytes=64 * 2**20)


@pytest.fixture
async def link(amqp_url: str) -> AsyncIterator[ChunkLink]:
    link = ChunkLink(amqp_url)
    yield link
    await link.close()


@pytest.fixture
async def transfer(
    link: ChunkLink, namespace: str
) -> AsyncIterator[tuple[aio_pika.abc.AbstractChannel, str, str]]:
    transfer_id = new_transfer_id()
    queue = transfer_queue(Names(namespace), transfer_id)
    channel = await link.channel()
    await declare_transfer_queue(channel, queue, LIMITS)
    yield channel, queue, transfer_id
    await delete_transfer_queue(channel, queue)
    await channel.close()


async def test_rechunk_cuts_exact_sizes() -> None:
    pieces = [b"a" * 5, b"b" * 12, b"", b"c" * 3]
    out = [chunk async for chunk in rechunk(pieces, 7)]
    assert [len(c) for c in out] == [7, 7, 6]
    assert b"".join(out) == b"".join(pieces)


@pytest.mark.parametrize("size", [0, 1, 64 * 1024, 64 * 1024 + 1, 3_000_000])
async def test_a_payload_arrives_whole_and_in_order(
    link: ChunkLink, transfer: tuple[aio_pika.abc.AbstractChannel, str, str], size: int
) -> None:
    channel, queue, transfer_id = transfer
    payload = os.urandom(size)
    received = bytearray()
    receiver_channel = await link.channel()
    try:
        receiving = asyncio.create_task(
            receive_chunks(receiver_channel, queue, transfer_id, received.extend, LIMITS)
        )
        pieces = [payload[i : i + 10_000] for i in range(0, size, 10_000)]
        sent = await send_chunks(channel, queue, transfer_id, pieces, LIMITS)
        got = await asyncio.wait_for(receiving, 30)
    finally:
        await receiver_channel.close()
    assert bytes(received) == payload
    assert got == sent
    assert sent.sha256 == hashlib.sha256(payload).hexdigest()
    assert sent.chunks == max(1, -(-size // LIMITS.chunk_bytes))


async def publish_chunk(
    channel: aio_pika.abc.AbstractChannel, queue: str, headers: dict[str, object], body: bytes
) -> None:
    await channel.default_exchange.publish(
        aio_pika.Message(body, headers=headers),  # type: ignore[arg-type]
        routing_key=queue,
    )


def last(transfer_id: str, seq: int, data: bytes, *, sha: str | None = None) -> dict[str, object]:
    return {
        TRANSFER_HEADER: transfer_id,
        CHUNK_HEADER: seq,
        LAST_HEADER: True,
        SIZE_HEADER: len(data),
        SHA256_HEADER: sha or hashlib.sha256(data).hexdigest(),
    }


async def receive(link: ChunkLink, queue: str, transfer_id: str) -> bytes:
    received = bytearray()
    channel = await link.channel()
    try:
        await receive_chunks(channel, queue, transfer_id, received.extend, LIMITS)
    finally:
        await channel.close()
    return bytes(received)


async def test_out_of_order_chunks_are_put_back_in_order(
    link: ChunkLink, transfer: tuple[aio_pika.abc.AbstractChannel, str, str]
) -> None:
    channel, queue, transfer_id = transfer
    await publish_chunk(channel, queue, {TRANSFER_HEADER: transfer_id, CHUNK_HEADER: 1}, b"bb")
    await publish_chunk(channel, queue, {TRANSFER_HEADER: transfer_id, CHUNK_HEADER: 0}, b"aa")
    await publish_chunk(channel, queue, last(transfer_id, 2, b"aabbcc"), b"cc")
    assert await receive(link, queue, transfer_id) == b"aabbcc"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("checksum", "corrupt"),
        ("duplicate", "came twice"),
        ("gap", "is missing"),
        ("silence", "sender stopped"),
        ("foreign", "not a chunk of"),
        ("oversized", "at most"),
    ],
)
async def test_every_breakage_is_a_transfer_failure(
    link: ChunkLink,
    transfer: tuple[aio_pika.abc.AbstractChannel, str, str],
    case: str,
    expected: str,
) -> None:
    channel, queue, transfer_id = transfer
    ours = {TRANSFER_HEADER: transfer_id}
    if case == "checksum":
        await publish_chunk(channel, queue, last(transfer_id, 0, b"x", sha="0" * 64), b"x")
    elif case == "duplicate":
        await publish_chunk(channel, queue, {**ours, CHUNK_HEADER: 0}, b"a")
        await publish_chunk(channel, queue, {**ours, CHUNK_HEADER: 0}, b"a")
    elif case == "gap":
        for seq in range(1, LIMITS.window + 3):  # chunk 0 never comes
            await publish_chunk(channel, queue, {**ours, CHUNK_HEADER: seq}, b"z")
    elif case == "silence":
        await publish_chunk(channel, queue, {**ours, CHUNK_HEADER: 0}, b"a")
    elif case == "foreign":
        await publish_chunk(
            channel, queue, {TRANSFER_HEADER: new_transfer_id(), CHUNK_HEADER: 0}, b"a"
        )
    else:
        big = b"o" * (LIMITS.chunk_bytes + 1)
        await publish_chunk(channel, queue, last(transfer_id, 0, big), big)
    with pytest.raises(TransferFailed, match=expected):
        await asyncio.wait_for(receive(link, queue, transfer_id), 20)


async def test_a_missing_transfer_queue_is_a_failure(link: ChunkLink, namespace: str) -> None:
    transfer_id = new_transfer_id()
    queue = transfer_queue(Names(namespace), transfer_id)
    with pytest.raises(TransferFailed, match="does not exist"):
        await receive(link, queue, transfer_id)
    channel = await link.channel()
    try:
        with pytest.raises(TransferFailed, match="gone or full"):
            await send_chunks(channel, queue, transfer_id, [b"data"], LIMITS)
    finally:
        if not channel.is_closed:
            await channel.close()


def test_transfer_ids_are_checked() -> None:
    with pytest.raises(TransferFailed, match="not a transfer id"):
        transfer_queue(Names("x"), "../../etc")


@pytest.mark.parametrize("mib", [8, 32])
async def test_memory_stays_bounded_by_the_window_not_the_payload(
    link: ChunkLink, transfer: tuple[aio_pika.abc.AbstractChannel, str, str], mib: int
) -> None:
    """Both sides in this process, the payload generated on the fly and hashed on arrival,
    so what Python holds at its peak is the transfer's own working set: the same for 8 and
    32 MiB (measured: about 8 MiB for both sides together with 8 chunks of 256 KiB)."""
    channel, queue, transfer_id = transfer
    limits = TransferLimits(chunk_bytes=256 * 1024, window=8, idle_timeout=10)
    total = mib * 2**20
    block = os.urandom(1024 * 1024)

    def generate() -> Iterator[bytes]:
        for _ in range(total // len(block)):
            yield block

    seen = hashlib.sha256()
    receiver_channel = await link.channel()
    tracemalloc.start()
    try:
        receiving = asyncio.create_task(
            receive_chunks(receiver_channel, queue, transfer_id, seen.update, limits)
        )
        sent = await send_chunks(channel, queue, transfer_id, generate(), limits)
        got = await asyncio.wait_for(receiving, 60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await receiver_channel.close()
    assert got.size == sent.size == total and seen.hexdigest() == sent.sha256
    # Per side about 2 x window x chunk (each chunk, and the AMQP frames made of it): see
    # shared/chunks.py; both sides run here.
    bound = 2 * (2 * limits.window * limits.chunk_bytes)
    assert peak < bound + 2 * 2**20, f"peak {peak} bytes for a bound of {bound}"
