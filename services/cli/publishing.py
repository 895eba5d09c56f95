"""`ferry publish ROUTING_KEY JSON|@file [--raw]`: put one message on the `ferry` exchange.

A routing key with a contract is checked strictly against it first, exactly as the consuming
service will decode it, and the re-encoded contract is sent (so defaults such as
`observed_at` are filled in by the sender, as a real producer would).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from services.cli import connection
from services.cli.errors import CliError, UsageError
from shared.contracts import BY_ROUTING_KEY, Contract, TaskSubmit
from shared.messaging import Unroutable, publish
from shared.settings import BaseSettings
from shared.topology import Names

C = TypeVar("C", bound=Contract)


@dataclass(frozen=True)
class Outgoing:
    routing_key: str
    body: bytes
    task_id: str | None = None  # named by the message (or generated for it)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "publish",
        help="publish one message (validated against its contract)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("routing_key", metavar="ROUTING_KEY")
    parser.add_argument(
        "body", metavar="JSON|@file", help="the body, or @path to read it (@- stdin)"
    )
    parser.add_argument("--raw", action="store_true", help="publish the bytes unchecked")
    parser.set_defaults(run=run)


def run(settings: BaseSettings, args: argparse.Namespace) -> int:
    body = read_body(args.body)
    outgoing = Outgoing(args.routing_key, body) if args.raw else checked(args.routing_key, body)
    asyncio.run(send(settings, outgoing))
    task = f" (task {outgoing.task_id})" if outgoing.task_id else ""
    print(f"published {outgoing.routing_key}{task}")
    return 0


def read_body(argument: str) -> bytes:
    if not argument.startswith("@"):
        return argument.encode()
    source = argument[1:]
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from None


def checked(routing_key: str, body: bytes) -> Outgoing:
    """Validate `body` against the contract of `routing_key` (if it has one) and re-encode."""
    contract = BY_ROUTING_KEY.get(routing_key)
    if contract is None:
        return Outgoing(routing_key, body)
    try:
        fields = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise UsageError(f"not valid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise UsageError(f"{contract.__name__}: expected a JSON object")
    if contract is TaskSubmit and "task_id" not in fields:
        fields["task_id"] = uuid.uuid4().hex
    message = validated(contract, fields)
    return Outgoing(routing_key, message.encode(), getattr(message, "task_id", None))


def validated(contract: type[C], fields: dict[str, Any]) -> C:
    # Through JSON again, so the check is byte-for-byte the one the consumer makes.
    try:
        return contract.decode(msgspec.json.encode(fields))
    except msgspec.ValidationError as exc:
        raise UsageError(f"invalid {contract.__name__}: {exc}") from None


async def send(settings: BaseSettings, outgoing: Outgoing) -> None:
    """Publish persistent, mandatory and confirmed; a message nobody receives is an error."""
    async with connection.broker(settings) as rabbit:
        try:
            await publish(
                rabbit, Names(settings.namespace), outgoing.body, routing_key=outgoing.routing_key
            )
        except Unroutable:
            raise CliError(
                f"no queue is bound to {outgoing.routing_key} (is the service running?)"
            ) from None


def send_contract(settings: BaseSettings, message: Contract) -> None:
    asyncio.run(
        send(
            settings,
            Outgoing(message.ROUTING_KEY, message.encode(), getattr(message, "task_id", None)),
        )
    )
