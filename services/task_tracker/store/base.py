"""The task store's interface, plus the row encoding and paging cursor both backends share."""

from __future__ import annotations

import abc
import base64
import binascii
import builtins
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

import msgspec

from services.task_tracker.domain import (
    Change,
    FollowUp,
    ItemRecord,
    TaskRecord,
    merge_records,
    utc,
)
from shared.contracts.tasks import TaskStatus

NON_TERMINAL = (TaskStatus.QUEUED.value, TaskStatus.RUNNING.value)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_PREFIX = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")

_record_encoder = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(TaskRecord)

# Publishes follow-ups; returns the outbox ids of those the broker confirmed (or that are
# settled otherwise, like an unroutable command the sweep will try again).
Sender = Callable[[Sequence[FollowUp]], Awaitable[Sequence[int]]]


class StoreUnavailable(Exception):
    """The store cannot be reached (connection lost, timeout, disk error): nothing was
    applied, and trying the same thing again later is the remedy."""


@dataclass(slots=True)
class Applied:
    """What a transaction did: every task it touched (final state, first-touch order) and
    the follow-up messages it recorded in the outbox."""

    records: builtins.list[TaskRecord] = field(default_factory=builtins.list)
    follow_ups: builtins.list[FollowUp] = field(default_factory=builtins.list)

    def extend(self, other: Applied) -> None:
        self.records.extend(other.records)
        self.follow_ups.extend(other.follow_ups)


@dataclass(frozen=True, slots=True)
class SweepRules:
    stall_after: timedelta
    give_up_after: timedelta
    page_size: int = 500


class TaskStore(abc.ABC):
    """Where task records, their items and the outbox live. `apply` is the hot path: one
    transaction per batch of changes, merged with the rules of
    `services.task_tracker.domain`, the follow-ups it calls for recorded in the same
    transaction. Every method raises `StoreUnavailable` when the store cannot be reached."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, and create the schema if it is missing."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def apply(self, changes: Sequence[Change], now: datetime) -> Applied:
        """Merge a batch in one transaction, and record the follow-ups it calls for
        (`domain.decide_follow_ups`) in the outbox; return every touched task once, in the
        order the batch first touched it, and the recorded follow-ups."""

    @abc.abstractmethod
    async def get(self, task_id: str) -> TaskRecord | None:
        """The stored task, orphans included (the caller decides what to show)."""

    @abc.abstractmethod
    async def items(self, task_id: str, limit: int = 1000) -> builtins.list[ItemRecord]:
        """The task's items, by item_key."""

    @abc.abstractmethod
    async def list(
        self,
        statuses: set[TaskStatus] | None,
        kind: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[builtins.list[TaskRecord], str | None]:
        """Submitted tasks (orphans are not listed), newest first by (created_at, id).
        No or empty `statuses` means any status. Raises ValueError on a malformed cursor."""

    @abc.abstractmethod
    async def sweep(self, now: datetime, rules: SweepRules) -> Applied:
        """Re-decide every non-terminal task silent for `stall_after` (`domain.sweep_task`),
        in keyset pages of `page_size`, each page one transaction over rows locked for it
        (rows another replica holds are skipped: it is deciding them). Returns the tasks it
        changed and the follow-ups it recorded."""

    @abc.abstractmethod
    async def dispatch_outbox(
        self,
        send: Sender,
        *,
        ids: Sequence[int] | None = None,
        older_than: datetime | None = None,
        limit: int = 500,
    ) -> int:
        """Claim outbox rows (those of `ids`, or else every row recorded before
        `older_than`), hand them to `send`, and delete the rows it reports done. A row is
        claimed by one caller at a time (another replica skips it), so no row is published
        twice unless the process dies between the confirm and the delete. Returns how many
        rows were claimed."""

    @abc.abstractmethod
    async def delete_orphans(self, older_than: datetime) -> int:
        """Delete tasks never submitted and not touched since `older_than` (with their
        items); returns how many."""

    @abc.abstractmethod
    async def save_tracker_changes(
        self, records: Sequence[TaskRecord]
    ) -> builtins.list[TaskRecord]:
        """Merge records (or deltas) the tracker made itself, such as `mark_undeliverable`,
        into the stored rows, under their row locks, so concurrent updates and replicas are
        never overwritten. Returns the stored results."""


def remerge(stored: dict[str, TaskRecord], records: Sequence[TaskRecord]) -> dict[str, TaskRecord]:
    """`records` merged into what is stored (and into each other, for repeated ids)."""
    merged: dict[str, TaskRecord] = {}
    for record in records:
        fresh = merged.get(record.id) or stored.get(record.id)
        merged[record.id] = record if fresh is None else merge_records(fresh, record)
    return merged


def page(
    records: builtins.list[TaskRecord], limit: int
) -> tuple[builtins.list[TaskRecord], str | None]:
    """A page from `limit + 1` fetched rows: the extra row only says a next page exists."""
    if len(records) <= limit:
        return records, None
    records = records[:limit]
    return records, encode_cursor(records[-1])


def check_prefix(table_prefix: str) -> str:
    # The prefix is pasted into SQL: allow only a plain identifier.
    if table_prefix and not _PREFIX.match(table_prefix):
        raise ValueError(f"table prefix must match {_PREFIX.pattern}: {table_prefix!r}")
    return table_prefix


def encode_record(record: TaskRecord) -> bytes:
    return _record_encoder.encode(record)


def decode_record(body: bytes | str) -> TaskRecord:
    return _record_decoder.decode(body)


def sort_at(record: TaskRecord) -> datetime:
    """The listing order key: tasks known only from updates sort by their last update."""
    return record.created_at or record.updated_at


def to_micros(moment: datetime) -> int:
    return (utc(moment) - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    return _EPOCH + micros * _MICROSECOND


def encode_cursor(record: TaskRecord) -> str:
    raw = msgspec.json.encode([to_micros(sort_at(record)), record.id])
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (sort_at, id) of the last task of the previous page."""
    try:
        micros, task_id = msgspec.json.decode(
            base64.urlsafe_b64decode(cursor.encode()), type=tuple[int, str]
        )
        return from_micros(micros), task_id
    except (binascii.Error, msgspec.DecodeError, ValueError, OverflowError) as exc:
        raise ValueError(f"invalid cursor {cursor!r}") from exc
