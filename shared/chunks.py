"""Large payloads over RabbitMQ: ordered chunks on a private transfer queue.

A HumanFirst workspace (up to 200 MiB) is far larger than a RabbitMQ message may be
(`FERRY_MAX_MESSAGE_BYTES`), and than a service should hold. So the bytes travel as chunks:

- one **transfer queue** per transfer (`<ns>.ferry.transfers.<transfer_id>`), declared by
  whoever will read it (export) or write it (import); it is not durable (a transfer does
  not outlive a broker restart: its caller fails and asks again), expires when left unused
  (`x-expires`: a crashed peer leaves nothing behind), and is bounded in bytes;
- each **chunk** is one message: raw bytes (no JSON, no base64), at most `chunk_bytes`,
  with headers `x-ferry-transfer` (the id), `x-ferry-chunk` (0, 1, 2, ...) and, on the last
  one only, `x-ferry-last`, `x-ferry-size` (total bytes) and `x-ferry-sha256`;
- the **sender** publishes with publisher confirms, at most `window` unconfirmed at once;
- the **receiver** consumes with a prefetch of `window`, hands each chunk to its sink in
  order (a chunk that arrives early waits, at most `window` of them), and at the last
  chunk checks the count, the size and the SHA-256 of everything it was given. Only then
  may the caller commit what the sink built; any failure is a `TransferFailed`.

Memory held by either side is therefore bounded by the window, not by the payload:
about `2 * window * chunk_bytes` per side (each chunk in flight, and the AMQP frames the
client builds from it; on the receiver, the chunks waiting for an earlier one), 4 MiB with
the defaults (8 x 256 KiB). tests/test_chunks.py measures it with tracemalloc: the same
peak for 8 and 32 MiB payloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import uuid
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from dataclasses import dataclass

import aio_pika
import aio_pika.abc
import aiormq
from aio_pika.exceptions import DeliveryError

from shared.retry import PermanentError
from shared.topology import Names

TRANSFER_HEADER = "x-ferry-transfer"
CHUNK_HEADER = "x-ferry-chunk"
LAST_HEADER = "x-ferry-last"
SIZE_HEADER = "x-ferry-size"
SHA256_HEADER = "x-ferry-sha256"

DEFAULT_CHUNK_BYTES = 256 * 1024
DEFAULT_WINDOW = 8
_TRANSFER_ID = re.compile(r"^[0-9a-f]{32}$")


class TransferFailed(PermanentError):
    """The transfer cannot complete (a chunk missing, out of place or too large, the
    checksum wrong, the peer silent or gone). Its chunks are consumed: retrying the same
    transfer cannot help, the caller starts a new one."""


@dataclass(frozen=True)
class TransferLimits:
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    window: int = DEFAULT_WINDOW  # chunks unconfirmed (sender) or unacked (receiver)
    idle_timeout: float = 30.0  # seconds a receiver waits for the next chunk
    max_bytes: int = 256 * 1024 * 1024  # the most one transfer may carry

    def __post_init__(self) -> None:
        if self.chunk_bytes < 1 or self.window < 1 or self.idle_timeout <= 0:
            raise ValueError("chunk_bytes, window and idle_timeout must be positive")


@dataclass(frozen=True)
class TransferSummary:
    chunks: int
    size: int
    sha256: str


def new_transfer_id() -> str:
    return uuid.uuid4().hex


def transfer_queue(names: Names, transfer_id: str) -> str:
    """The name of a transfer's queue; `transfer_id` is checked (it comes from messages)."""
    if not _TRANSFER_ID.match(transfer_id):
        raise TransferFailed(f"{transfer_id[:40]!r} is not a transfer id")
    return names(f"ferry.transfers.{transfer_id}")


class ChunkLink:
    """The connection a service moves chunks on, opened on first use (a service that
    never transfers holds none), apart from the broker's so a long transfer never
    delays the service's other messages."""

    def __init__(self, amqp_url: str, *, connect_timeout: float = 10.0) -> None:
        self.amqp_url = amqp_url
        self.connect_timeout = connect_timeout
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._opening = asyncio.Lock()

    async def connection(self) -> aio_pika.abc.AbstractRobustConnection:
        async with self._opening:
            if self._connection is None or self._connection.is_closed:
                self._connection = await aio_pika.connect_robust(
                    self.amqp_url, timeout=self.connect_timeout
                )
            return self._connection

    async def channel(self) -> aio_pika.abc.AbstractChannel:
        """A new channel with publisher confirms; the caller closes it."""
        connection = await self.connection()
        return await connection.channel(publisher_confirms=True, on_return_raises=True)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


async def declare_transfer_queue(
    channel: aio_pika.abc.AbstractChannel,
    name: str,
    limits: TransferLimits,
    *,
    exclusive: bool = False,
    expires_after: float = 120.0,
) -> aio_pika.abc.AbstractQueue:
    """The queue of one transfer. `exclusive`: only this connection may consume it (an
    export's receiver); anyone may still publish to it."""
    return await channel.declare_queue(
        name,
        durable=False,
        exclusive=exclusive,
        auto_delete=False,
        arguments={
            "x-expires": int(expires_after * 1000),
            # Room for every chunk of the largest transfer, and no more.
            "x-max-length-bytes": limits.max_bytes + limits.chunk_bytes,
            "x-overflow": "reject-publish",
            # RabbitMQ 3.x: keep the chunks on disk, not in the broker's memory (4.x
            # classic queues always do, and ignore the argument).
            "x-queue-mode": "lazy",
        },
    )


async def delete_transfer_queue(channel: aio_pika.abc.AbstractChannel, name: str) -> None:
    """Best effort: the queue expires anyway when left unused."""
    with contextlib.suppress(
        aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPException, TimeoutError
    ):
        await asyncio.wait_for(channel.queue_delete(name), 10)


async def rechunk(
    pieces: AsyncIterable[bytes] | Iterable[bytes], chunk_bytes: int
) -> AsyncIterable[bytes]:
    """`pieces` of any sizes as chunks of exactly `chunk_bytes` (the last may be shorter)."""
    buffer = bytearray()

    async def each() -> AsyncIterable[bytes]:
        if isinstance(pieces, AsyncIterable):
            async for piece in pieces:
                yield piece
        else:
            for piece in pieces:
                yield piece

    async for piece in each():
        view = memoryview(piece)
        while len(buffer) + len(view) >= chunk_bytes:
            take = chunk_bytes - len(buffer)
            buffer += view[:take]
            view = view[take:]
            yield bytes(buffer)
            buffer.clear()
        buffer += view
    if buffer:
        yield bytes(buffer)


async def send_chunks(
    channel: aio_pika.abc.AbstractChannel,
    queue: str,
    transfer_id: str,
    pieces: AsyncIterable[bytes] | Iterable[bytes],
    limits: TransferLimits,
) -> TransferSummary:
    """Publish `pieces` as the chunks of transfer `transfer_id` to `queue` (through the
    default exchange); returns when the broker confirmed every one. The last chunk is
    known only when the next piece does not come, so each chunk is held back by one."""
    exchange = channel.default_exchange
    digest = hashlib.sha256()
    size = 0
    gate = asyncio.Semaphore(limits.window)
    in_flight: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []

    async def publish(body: bytes, headers: dict[str, aio_pika.abc.FieldValue]) -> None:
        try:
            await exchange.publish(
                aio_pika.Message(body, headers=headers, content_type="application/octet-stream"),
                routing_key=queue,
                mandatory=True,
            )
        except DeliveryError as exc:
            failures.append(TransferFailed(f"the transfer queue {queue} is gone or full ({exc})"))
        except Exception as exc:
            failures.append(exc)
        finally:
            gate.release()

    async def emit(seq: int, body: bytes, *, last: bool) -> None:
        headers: dict[str, aio_pika.abc.FieldValue] = {
            TRANSFER_HEADER: transfer_id,
            CHUNK_HEADER: seq,
        }
        if last:
            headers.update(
                {LAST_HEADER: True, SIZE_HEADER: size, SHA256_HEADER: digest.hexdigest()}
            )
        await gate.acquire()
        if failures:
            gate.release()
            raise failures[0]
        task = asyncio.create_task(publish(body, headers))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)

    seq = 0
    held: bytes | None = None
    try:
        async for chunk in rechunk(pieces, limits.chunk_bytes):
            if held is not None:
                await emit(seq, held, last=False)
                seq += 1
            digest.update(chunk)
            size += len(chunk)
            if size > limits.max_bytes:
                raise TransferFailed(f"the payload exceeds {limits.max_bytes} bytes")
            held = chunk
        await emit(seq, held or b"", last=True)
        await asyncio.gather(*in_flight)
    finally:
        for task in in_flight:
            task.cancel()
    if failures:
        raise failures[0]
    return TransferSummary(chunks=seq + 1, size=size, sha256=digest.hexdigest())


async def receive_chunks(
    channel: aio_pika.abc.AbstractChannel,
    queue: str,
    transfer_id: str,
    sink: Callable[[bytes], object],
    limits: TransferLimits,
) -> TransferSummary:
    """Consume the chunks of `transfer_id` from `queue`, giving each to `sink` in order,
    until the last; raises `TransferFailed` unless every chunk came, once, and the size
    and SHA-256 match what the sender announced."""
    await channel.set_qos(prefetch_count=limits.window)
    try:
        source = await channel.get_queue(queue, ensure=True)
    except (aiormq.exceptions.ChannelNotFoundEntity, aio_pika.exceptions.ChannelClosed):
        raise TransferFailed(f"the transfer queue {queue} does not exist") from None
    arrived: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
    tag = await source.consume(arrived.put, no_ack=False)
    digest = hashlib.sha256()
    size = 0
    expected = 0
    early: dict[int, bytes] = {}
    announced: tuple[int, int, str] | None = None  # (chunks, size, sha256) from the last
    try:
        while announced is None or expected < announced[0]:
            try:
                message = await asyncio.wait_for(arrived.get(), limits.idle_timeout)
            except TimeoutError:
                raise TransferFailed(
                    f"no chunk {expected} of transfer {transfer_id} within"
                    f" {limits.idle_timeout:g}s (the sender stopped)"
                ) from None
            headers = message.headers or {}
            seq = headers.get(CHUNK_HEADER)
            if headers.get(TRANSFER_HEADER) != transfer_id or not isinstance(seq, int):
                raise TransferFailed(f"a message on {queue} is not a chunk of {transfer_id}")
            if len(message.body) > limits.chunk_bytes:
                raise TransferFailed(
                    f"chunk {seq} is {len(message.body)} bytes; at most {limits.chunk_bytes}"
                )
            if headers.get(LAST_HEADER):
                announced = _announced(headers, seq)
            if seq < expected or seq in early:
                raise TransferFailed(f"chunk {seq} of transfer {transfer_id} came twice")
            early[seq] = message.body
            await message.ack()
            if len(early) > limits.window:
                raise TransferFailed(f"chunk {expected} of transfer {transfer_id} is missing")
            while expected in early:
                body = early.pop(expected)
                size += len(body)
                if size > limits.max_bytes:
                    raise TransferFailed(f"the payload exceeds {limits.max_bytes} bytes")
                digest.update(body)
                sink(body)
                expected += 1
    finally:
        if not channel.is_closed:
            # The sender may have deleted the queue already (it gave up): nothing to cancel.
            with contextlib.suppress(
                aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPException
            ):
                await source.cancel(tag)
    _chunks, announced_size, announced_sha = announced
    if early or size != announced_size or digest.hexdigest() != announced_sha:
        raise TransferFailed(
            f"transfer {transfer_id} is corrupt: {size} bytes arrived, {announced_size}"
            " announced, or the checksum differs"
        )
    return TransferSummary(chunks=expected, size=size, sha256=announced_sha)


def _announced(headers: Mapping[str, object], seq: int) -> tuple[int, int, str]:
    size, sha = headers.get(SIZE_HEADER), headers.get(SHA256_HEADER)
    if not isinstance(size, int) or not isinstance(sha, str):
        raise TransferFailed("the last chunk carries no size or checksum")
    return seq + 1, size, sha
