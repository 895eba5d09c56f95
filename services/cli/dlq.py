"""`ferry dlq list|replay SERVICE`: look at a service's dead letters, and send them back.

`list` reads without consuming: every message is fetched unacked and returned to the queue
when the channel closes. `replay` publishes each message back to the queue it came from
(default exchange, routing key = queue name, mandatory, confirmed) and only then acks it in
the dead-letter queue, so a crash half-way duplicates a message at most, never loses one.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aio_pika.abc
import msgspec
from aio_pika.exceptions import DeliveryError

from services.cli import connection
from services.cli.errors import CliError
from shared.service import (
    ERROR_HEADER,
    ERROR_KIND_HEADER,
    FAILED_AT_HEADER,
    PARKED_HEADER,
    QUEUE_HEADER,
    ROUTING_KEY_HEADER,
)
from shared.settings import BaseSettings
from shared.topology import DELAY_HEADER, Names

PREVIEW_BYTES = 200

# What the failure added; the replayed message must look as it did before it failed.
# (RabbitMQ 3.13+ also adds the x-first/last-death-* summaries of x-death.)
DROPPED_HEADERS = (ERROR_HEADER, ERROR_KIND_HEADER, FAILED_AT_HEADER, PARKED_HEADER, DELAY_HEADER)
DROPPED_PREFIXES = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("dlq", help="inspect and replay a service's dead letters")
    sub = parser.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")

    listing = sub.add_parser("list", help="show the dead letters (they stay in the queue)")
    listing.add_argument("service", metavar="SERVICE", help="e.g. task_tracker")
    listing.add_argument("--limit", type=int, default=20, help="show at most N messages")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    listing.set_defaults(run=run_list)

    replay = sub.add_parser("replay", help="move dead letters back to the queues they came from")
    replay.add_argument("service", metavar="SERVICE")
    replay.add_argument("--limit", type=int, help="replay at most N messages")
    replay.add_argument("--dry-run", action="store_true", help="say what would be replayed")
    replay.set_defaults(run=run_replay)


class DeadLetter(msgspec.Struct, frozen=True):
    origin: str | None  # the queue it failed in, and goes back to
    routing_key: str | None
    error_kind: str | None
    error: str | None
    failed_at: str | None
    body: bytes

    @classmethod
    def of(cls, message: aio_pika.abc.AbstractIncomingMessage) -> DeadLetter:
        headers = message.headers
        return cls(
            origin=origin_of(headers),
            routing_key=text(headers.get(ROUTING_KEY_HEADER)) or message.routing_key,
            error_kind=text(headers.get(ERROR_KIND_HEADER)),
            error=text(headers.get(ERROR_HEADER)) or death_reason(headers),
            failed_at=text(headers.get(FAILED_AT_HEADER)),
            body=message.body,
        )

    def preview(self) -> str:
        shown = self.body[:PREVIEW_BYTES].decode("utf-8", errors="replace")
        return shown + ("…" if len(self.body) > PREVIEW_BYTES else "")


def origin_of(headers: dict[str, Any]) -> str | None:
    """Ferry's own header when the runtime dead-lettered it; else RabbitMQ's x-death record
    (a message the broker dead-lettered itself, e.g. past its delivery limit)."""
    named = text(headers.get(QUEUE_HEADER))
    if named:
        return named
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return text(deaths[0].get("queue"))
    return None


def death_reason(headers: dict[str, Any]) -> str | None:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        reason = text(deaths[0].get("reason"))
        return f"dead-lettered by RabbitMQ ({reason})" if reason else None
    return None


def text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# -- list ------------------------------------------------------------------------------


def run_list(settings: BaseSettings, args: argparse.Namespace) -> int:
    queue = Names(settings.namespace).dead_letter_queue(args.service)
    count, letters = asyncio.run(peek(settings, queue, args.limit))
    if args.json:
        document = {
            "queue": queue,
            "count": count,
            "messages": [{**msgspec.structs.asdict(d), "body": d.preview()} for d in letters],
        }
        print(msgspec.json.format(msgspec.json.encode(document)).decode())
        return 0
    print(f"{queue}: {count} message{'s' if count != 1 else ''}")
    for number, letter in enumerate(letters, 1):
        print(f"\n#{number}  from queue {letter.origin or '?'}  routing key {letter.routing_key}")
        print(f"    failed at {letter.failed_at or '?'}  kind {letter.error_kind or '?'}")
        print(f"    error: {letter.error or '?'}")
        print(f"    body:  {letter.preview()}")
    if count > len(letters):
        print(f"\n({count - len(letters)} more not shown: --limit)")
    return 0


async def peek(settings: BaseSettings, queue: str, limit: int) -> tuple[int, list[DeadLetter]]:
    async with connection.connection(settings) as conn:
        channel = await conn.channel()
        dlq, count = await open_queue(channel, queue)
        letters: list[DeadLetter] = []
        while len(letters) < min(limit, count):
            message = await dlq.get(no_ack=False, fail=False)
            if message is None:
                break
            letters.append(DeadLetter.of(message))
        # Closing the channel hands every unacked message back to the queue. (An explicit
        # nack-requeue would count as a failed delivery on RabbitMQ 4's quorum queues.)
        await channel.close()
    return count, letters


async def open_queue(
    channel: aio_pika.abc.AbstractChannel, name: str
) -> tuple[aio_pika.abc.AbstractQueue, int]:
    try:
        queue = await channel.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        raise CliError(f"queue {name!r} does not exist (has the service run here?)") from None
    return queue, queue.declaration_result.message_count or 0


# -- replay ----------------------------------------------------------------------------


@dataclass
class ReplayReport:
    replayed: int = 0
    kept: list[str] = field(default_factory=list)  # why each one stayed in the queue


def run_replay(settings: BaseSettings, args: argparse.Namespace) -> int:
    queue = Names(settings.namespace).dead_letter_queue(args.service)
    report = asyncio.run(replay(settings, queue, limit=args.limit, dry_run=args.dry_run))
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{queue}: {verb} {report.replayed}, kept {len(report.kept)}")
    for problem in report.kept:
        print(f"  kept: {problem}")
    return 1 if report.kept else 0


async def replay(
    settings: BaseSettings, queue: str, *, limit: int | None = None, dry_run: bool = False
) -> ReplayReport:
    report = ReplayReport()
    async with connection.connection(settings) as conn:
        channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
        dlq, count = await open_queue(channel, queue)
        # Only what was there at the start: a replayed message may fail again and come back
        # to this queue while we are still at work.
        todo = count if limit is None else min(limit, count)
        for _ in range(todo):
            message = await dlq.get(no_ack=False, fail=False)
            if message is None:
                break
            problem = await replay_one(channel, message, dry_run=dry_run)
            if problem is None:
                report.replayed += 1
            else:
                report.kept.append(problem)
        # What is still unacked (kept, or everything on a dry run) returns to the queue.
        await channel.close()
    return report


async def replay_one(
    channel: aio_pika.abc.AbstractChannel,
    message: aio_pika.abc.AbstractIncomingMessage,
    *,
    dry_run: bool,
) -> str | None:
    """Send one dead letter home; returns why it was kept, or None when it went."""
    origin = origin_of(message.headers)
    if origin is None:
        return f"message {message.message_id or '?'}: its original queue cannot be told"
    if dry_run:
        return None
    try:
        await channel.default_exchange.publish(
            aio_pika.Message(
                message.body,
                headers=carried_headers(message.headers),
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                correlation_id=message.correlation_id,
                message_id=message.message_id,
                app_id=message.app_id,
                type=message.type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=origin,
            mandatory=True,
        )
    except DeliveryError:
        # Returned (the queue is gone) or nacked by the broker: it stays a dead letter.
        return f"message for {origin}: the broker did not take it (does the queue exist?)"
    await message.ack()  # only now: the copy is safely in its queue
    return None


def carried_headers(headers: dict[str, Any]) -> dict[str, Any]:
    return {
        name: value
        for name, value in headers.items()
        if name not in DROPPED_HEADERS and not name.startswith(DROPPED_PREFIXES)
    }
