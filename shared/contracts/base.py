"""The base of every message contract: strict msgspec Structs, JSON on the wire.

Unknown fields are ignored (a newer producer may add fields), missing required fields are
an error, and types are checked strictly (no "1" for 1).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, TypeVar

import msgspec

T = TypeVar("T", bound="Contract")

# Identifiers end up in database keys, log lines and routing decisions: keep them plain.
Identifier = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,199}$")]
ShortText = Annotated[str, msgspec.Meta(max_length=4_000)]


def utc_now() -> datetime:
    return datetime.now(UTC)


def read_instant(text: object) -> datetime | None:
    """An ISO 8601 instant carried as text (the Hub's `createdAt` and `lastModified`, a
    `since` value, AIoD's dates) as an aware UTC datetime, a naive one read as UTC; None
    when it is absent or does not read as one."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class UnsupportedVersion(ValueError):
    """The message is of a newer contract version than this code understands."""


class Contract(msgspec.Struct, kw_only=True, forbid_unknown_fields=False, omit_defaults=False):
    """A versioned message. `ROUTING_KEY` names the key it is published with.

    `version` is checked on decode: a consumer reads every version up to `VERSION` and
    refuses a newer one (its meaning may have changed), rather than guessing.
    """

    ROUTING_KEY: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    version: int = 1

    @classmethod
    def decode(cls: type[T], data: bytes | str) -> T:
        message = msgspec.json.decode(data, type=cls, strict=True)
        if not 1 <= message.version <= cls.VERSION:
            raise UnsupportedVersion(
                f"{cls.__name__} version {message.version} is not supported"
                f" (this service reads versions 1 to {cls.VERSION})"
            )
        return message

    def encode(self) -> bytes:
        return msgspec.json.encode(self)

    # FastStream builds the AsyncAPI document with pydantic; these two hooks let pydantic
    # describe a Struct through msgspec's own JSON schema instead of failing on it.
    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.any_schema()

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, Any]:
        # pydantic rejects `$ref`s it did not make itself, so nested structs are inlined.
        return json_schema(cls)


def json_schema(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """A self-contained JSON schema of `struct`, nested structs inlined (no `$ref`)."""
    (ref,), defs = msgspec.json.schema_components([struct], ref_template="{name}")
    inlined: dict[str, Any] = _inline(ref, defs)
    return inlined


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if set(node) == {"$ref"}:
            return _inline(defs[node["$ref"]], defs)
        return {key: _inline(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(value, defs) for value in node]
    return node


class Reply(Contract, kw_only=True):
    """The base of every reply contract: `error` is set when the request could not be
    served, and the request client turns it into `shared.messaging.RemoteError`."""

    error: str | None = None


class ErrorReply(Reply, kw_only=True):
    """The answer to a request that could not be served; it decodes as any `Reply`."""

    error: str | None = None


class ItemCommand(Contract, kw_only=True):
    """A command that does one item of a task's work. When it fails for good, the runtime
    records that item as failed on its task (`tasks.update`) before dead-lettering it."""

    task_id: Identifier
    item_key: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
