"""`ferry publish ROUTING_KEY JSON|@file [--raw]`: put one message on the `ferry` exchange.

A routing key with a contract is checked strictly against it first, exactly as the consuming
service will decode it, and the re-encoded contract is sent (so defaults such as
`observed_at` are filled in by the sender, as a real producer would). Fields the contract
does not know are allowed (a newer producer may send them) but dropped on the way: each is
named in a warning on stderr, so a typo does not pass unseen.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
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
    for path in unknown_fields(msgspec.inspect.type_info(contract), fields, "$"):
        print(
            f"ferry: warning: unknown field {path} ({contract.__name__} has no such field;"
            " the message goes without it)",
            file=sys.stderr,
        )
    return Outgoing(routing_key, message.encode(), getattr(message, "task_id", None))


def stamped(contract: type[Contract], fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` with every required timestamp it lacks (`observed_at`, ...) set to now: the
    contracts want the producer's clock, and here the producer is us."""
    info = msgspec.inspect.type_info(contract)
    assert isinstance(info, msgspec.inspect.StructType)
    now = datetime.now(UTC).isoformat()
    missing = {
        field.encode_name: now
        for field in info.fields
        if field.required
        and isinstance(field.type, msgspec.inspect.DateTimeType)
        and field.encode_name not in fields
    }
    return {**fields, **missing}


def unknown_fields(info: msgspec.inspect.Type, value: Any, path: str) -> list[str]:
    """The paths (`$.items[0].outcom`) of the fields in `value` that the type `info`
    (already validated against it) has no place for."""
    if isinstance(info, msgspec.inspect.UnionType):
        # Validation passed, so the value fits one member: the struct one, for an object.
        structs = [t for t in info.types if isinstance(t, msgspec.inspect.StructType)]
        if isinstance(value, dict) and len(structs) == 1:
            info = structs[0]
        else:
            return []
    if isinstance(info, msgspec.inspect.StructType) and isinstance(value, dict):
        known = {field.encode_name: field for field in info.fields}
        found: list[str] = []
        for name, inner in value.items():
            field = known.get(name)
            if field is None:
                found.append(f"{path}.{name}")
            else:
                found.extend(unknown_fields(field.type, inner, f"{path}.{name}"))
        return found
    if isinstance(info, msgspec.inspect.ListType | msgspec.inspect.VarTupleType) and isinstance(
        value, list
    ):
        return [
            unknown
            for index, item in enumerate(value)
            for unknown in unknown_fields(info.item_type, item, f"{path}[{index}]")
        ]
    return []


def validated(contract: type[C], fields: dict[str, Any]) -> C:
    # Through JSON again, so the check is byte-for-byte the one the consumer makes.
    try:
        return contract.decode(msgspec.json.encode(stamped(contract, fields)))
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
