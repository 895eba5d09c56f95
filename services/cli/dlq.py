"""`ferry dlq list|replay|drop|purge SERVICE`: look at a service's dead letters, send them
back, or throw them away.

`list` reads without consuming: every message is fetched unacked and returned to the queue
when the channel closes. `replay` publishes each message back to the queue it came from
(default exchange, routing key = queue name, mandatory, confirmed) and only then acks it in
the dead-letter queue, so a crash half-way duplicates a message at most, never loses one.
`drop` acks the chosen message(s) only, and `purge` the messages that were there when it
asked, not those that arrived since; both ask first (`--yes` does not).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aio_pika.abc
import msgspec
from aio_pika.exceptions import DeliveryError

from services.cli import connection
from services.cli.errors import CliError, UsageError
from shared.service import (
    ERROR_HEADER,
    ERROR_KIND_HEADER,
    FAILED_AT_HEADER,
    PARKED_HEADER,
    QUEUE_HEADER,
    REPORT_FAILED_HEADER,
    ROUTING_KEY_HEADER,
)
from shared.settings import BaseSettings
from shared.topology import DELAY_HEADER, Names

PREVIEW_BYTES = 200

# What the failure added; the replayed message must look as it did before it failed.
# (RabbitMQ 3.13+ also adds the x-first/last-death-* summaries of x-death.)
DROPPED_HEADERS = (
    ERROR_HEADER,
    ERROR_KIND_HEADER,
    FAILED_AT_HEADER,
    PARKED_HEADER,
    REPORT_FAILED_HEADER,
    DELAY_HEADER,
)
DROPPED_PREFIXES = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "dlq",
        help="inspect, replay and drop a service's dead letters",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")

    listing = sub.add_parser("list", help="show the dead letters (they stay in the queue)")
    listing.add_argument("service", metavar="SERVICE", help="e.g. task_tracker")
    listing.add_argument("--limit", type=int, default=20, help="show at most N messages")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    listing.add_argument(
        "--full", action="store_true", help=f"whole bodies (else the first {PREVIEW_BYTES} bytes)"
    )
    listing.set_defaults(run=run_list)

    drop = sub.add_parser("drop", help="delete chosen dead letters (poison messages)")
    drop.add_argument("service", metavar="SERVICE")
    chosen = drop.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--id", dest="message_id", metavar="MESSAGE_ID", help="by message id")
    chosen.add_argument(
        "--index", type=int, metavar="N", help="the N-th message, as numbered by `dlq list`"
    )
    drop.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    drop.set_defaults(run=run_drop)

    purge = sub.add_parser("purge", help="delete every dead letter of a service")
    purge.add_argument("service", metavar="SERVICE")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.set_defaults(run=run_purge)

    replay = sub.add_parser("replay", help="move dead letters back to the queues they came from")
    replay.add_argument("service", metavar="SERVICE")
    replay.add_argument("--limit", type=int, help="replay at most N messages")
    replay.add_argument("--dry-run", action="store_true", help="say what would be replayed")
    replay.set_defaults(run=run_replay)


class DeadLetter(msgspec.Struct, frozen=True):
    index: int  # its place in the queue, from 1, as `list` numbers it and `drop` takes it
    message_id: str | None
    origin: str | None  # the queue it failed in, and goes back to
    routing_key: str | None
    error_kind: str | None
    error: str | None
    failed_at: str | None
    body: bytes

    @classmethod
    def of(cls, index: int, message: aio_pika.abc.AbstractIncomingMessage) -> DeadLetter:
        headers = message.headers
        return cls(
            index=index,
            message_id=message.message_id,
            origin=origin_of(headers),
            routing_key=text(headers.get(ROUTING_KEY_HEADER)) or message.routing_key,
            error_kind=text(headers.get(ERROR_KIND_HEADER)),
            error=text(headers.get(ERROR_HEADER)) or death_reason(headers),
            failed_at=text(headers.get(FAILED_AT_HEADER)),
            body=message.body,
        )

    @property
    def truncated(self) -> bool:
        return len(self.body) > PREVIEW_BYTES

    def shown_body(self, *, full: bool) -> str:
        """The body as text: whole, or its first PREVIEW_BYTES bytes."""
        shown = self.body if full else self.body[:PREVIEW_BYTES]
        return shown.decode("utf-8", errors="replace")

    def as_json(self, *, full: bool) -> dict[str, Any]:
        fields = msgspec.structs.asdict(self)
        fields["body"] = self.shown_body(full=full)
        fields["body_bytes"] = len(self.body)
        fields["body_truncated"] = self.truncated and not full
        return fields

    def describe(self, *, full: bool = False) -> list[str]:
        """The lines `list` prints for it (and `drop` shows before asking)."""
        body = self.shown_body(full=full)
        if self.truncated and not full:
            body += f"… ({len(self.body)} bytes; --full shows all)"
        return [
            f"#{self.index}  id {self.message_id or '-'}  from queue {self.origin or '?'}"
            f"  routing key {self.routing_key}",
            f"    failed at {self.failed_at or '?'}  kind {self.error_kind or '?'}",
            f"    error: {self.error or '?'}",
            f"    body:  {body}",
        ]


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


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


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
            "messages": [letter.as_json(full=args.full) for letter in letters],
        }
        print(msgspec.json.format(msgspec.json.encode(document)).decode())
        return 0
    print(f"{queue}: {plural(count, 'message')}")
    for letter in letters:
        print()
        print("\n".join(letter.describe(full=args.full)))
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
            letters.append(DeadLetter.of(len(letters) + 1, message))
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


# -- drop / purge ----------------------------------------------------------------------

Confirm = Callable[[str], bool]


def confirmer(assume_yes: bool, action: str) -> Confirm:
    """How to ask: not at all with --yes; on the terminal; and without a terminal, refuse
    (a script that deletes must say so with --yes)."""
    if assume_yes:
        return lambda question: True
    if not sys.stdin.isatty():
        raise UsageError(f"{action}: stdin is not a terminal to confirm on; add --yes to confirm")

    def ask(question: str) -> bool:
        print(question, end=" [y/N] ", flush=True)
        return sys.stdin.readline().strip().lower() in ("y", "yes")

    return ask


def run_drop(settings: BaseSettings, args: argparse.Namespace) -> int:
    if args.index is not None and args.index < 1:
        raise UsageError("--index: messages are numbered from 1, as `dlq list` shows them")
    confirm = confirmer(args.yes, "drop")
    queue = Names(settings.namespace).dead_letter_queue(args.service)
    dropped = asyncio.run(
        drop(settings, queue, confirm, message_id=args.message_id, index=args.index)
    )
    print(f"{queue}: dropped {dropped}")
    return 0


async def drop(
    settings: BaseSettings,
    queue: str,
    confirm: Confirm,
    *,
    message_id: str | None = None,
    index: int | None = None,
) -> int:
    """Ack the chosen messages (by id, or the `index`-th); the others return to the queue."""
    async with connection.connection(settings) as conn:
        channel = await conn.channel()
        dlq, count = await open_queue(channel, queue)
        chosen: list[tuple[DeadLetter, aio_pika.abc.AbstractIncomingMessage]] = []
        # Only what was there at the start, held unacked while we look and ask.
        for number in range(1, count + 1 if index is None else min(index, count) + 1):
            message = await dlq.get(no_ack=False, fail=False)
            if message is None:
                break
            if (index is not None and number == index) or (
                message_id is not None and message.message_id == message_id
            ):
                chosen.append((DeadLetter.of(number, message), message))
        if not chosen:
            await channel.close()
            wanted = f"message #{index}" if index is not None else f"message id {message_id}"
            raise CliError(f"{queue}: no {wanted} among its {plural(count, 'message')}")
        for letter, _ in chosen:
            print("\n".join(letter.describe()))
        question = f"drop {plural(len(chosen), 'message')} from {queue}?"
        if not await asyncio.to_thread(confirm, question):
            await channel.close()
            raise CliError("nothing dropped")
        for _, message in chosen:
            await message.ack()
        # Everything not chosen is still unacked and returns to the queue.
        await channel.close()
    return len(chosen)


def run_purge(settings: BaseSettings, args: argparse.Namespace) -> int:
    confirm = confirmer(args.yes, "purge")
    queue = Names(settings.namespace).dead_letter_queue(args.service)
    purged = asyncio.run(purge(settings, queue, confirm))
    print(f"{queue}: purged {purged}")
    return 0


async def purge(settings: BaseSettings, queue: str, confirm: Confirm) -> int:
    """Ack as many messages as the queue held when asked: a dead letter that arrives while
    we ask is not one the operator agreed to lose."""
    async with connection.connection(settings) as conn:
        channel = await conn.channel()
        dlq, count = await open_queue(channel, queue)
        if count == 0:
            await channel.close()
            return 0
        if not await asyncio.to_thread(confirm, f"purge {plural(count, 'message')} from {queue}?"):
            await channel.close()
            raise CliError("nothing purged")
        purged = 0
        while purged < count:
            message = await dlq.get(no_ack=False, fail=False)
            if message is None:
                break
            await message.ack()
            purged += 1
        await channel.close()
    return purged
