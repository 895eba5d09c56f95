"""Contracts of the task tracker's queues (Iaso-compatible task statuses and fields)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from shared.contracts.base import Contract, Identifier, Reply, ShortText, utc_now


class TaskStatus(StrEnum):
    """Iaso's own status set (Iaso's EXPORTED is not used by Ferry)."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    ERRORED = "ERRORED"
    KILLED = "KILLED"
    SKIPPED = "SKIPPED"

    @property
    def is_terminal(self) -> bool:
        return self not in (TaskStatus.QUEUED, TaskStatus.RUNNING)


# The Iaso documentation says ERROR and CANCELLED; Iaso itself rejects them. We accept both.
STATUS_ALIASES: dict[str, TaskStatus] = {
    "ERROR": TaskStatus.ERRORED,
    "CANCELLED": TaskStatus.KILLED,
}
StatusInput = Literal[
    "QUEUED", "RUNNING", "SUCCESS", "ERRORED", "KILLED", "SKIPPED", "ERROR", "CANCELLED"
]
ItemOutcomeStatus = Literal["SUCCESS", "ERRORED", "SKIPPED"]
RoutingKey = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_]+(\.[a-z0-9_*#-]+)+$", max_length=200)]
ItemKey = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
Count = Annotated[int, msgspec.Meta(ge=0)]


def canonical_status(value: str) -> TaskStatus:
    return STATUS_ALIASES.get(value) or TaskStatus(value)


# A task's free-form JSON (params, result, the command's body) travels whole in every
# `tasks.changed` event and reply: bounded at the edge, so no event can outgrow the broker.
MAX_JSON_BYTES = 64 * 1024


def check_json_size(field_name: str, value: Any) -> None:
    """Raise ValueError (a ValidationError when decoding) if `value` encodes too large."""
    if value is None or value == {}:
        return
    size = len(msgspec.json.encode(value))
    if size > MAX_JSON_BYTES:
        raise ValueError(
            f"`{field_name}` is {size} bytes encoded; the limit is {MAX_JSON_BYTES} bytes"
        )


class DrivingCommand(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """The command that does a task's work; the tracker publishes it, with `task_id` added,
    when the task is submitted and again when the task stalls."""

    routing_key: RoutingKey
    body: dict[str, Any] = {}

    def __post_init__(self) -> None:
        check_json_size("command.body", self.body)


class TaskSubmit(Contract, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "tasks.submit"

    task_id: Identifier
    kind: Identifier
    name: ShortText = ""
    params: dict[str, Any] = {}
    command: DrivingCommand | None = None
    # Required on the wire: the producer's clock, so that decoding the same bytes twice
    # gives the same change (a consumer-side default would make a redelivery look newer).
    submitted_at: datetime

    def __post_init__(self) -> None:
        check_json_size("params", self.params)

    @classmethod
    def now(cls, **fields: Any) -> TaskSubmit:
        """A submit stamped with the producer's clock now."""
        return cls(submitted_at=utc_now(), **fields)


# What became of a successful item, in one word ("created", "updated", "unchanged",
# "deleted"): the tracker counts items by it in the task's result.
ItemDetail = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class ItemOutcome(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """What happened to one item of a task (one dataset, one page, one run)."""

    item_key: ItemKey
    outcome: ItemOutcomeStatus
    message: ShortText | None = None
    detail: ItemDetail | None = None


class TaskUpdate(Contract, kw_only=True):
    """A report from a worker. It carries state, never deltas: redelivering it changes nothing."""

    ROUTING_KEY: ClassVar[str] = "tasks.update"

    task_id: Identifier
    status: StatusInput | None = None
    progress_value: Count | None = None
    end_value: Count | None = None
    progress_message: ShortText | None = None
    result: Any = None
    items: list[ItemOutcome] = []
    # How many items the task has in all, once the worker knows (a listing is complete):
    # when every one of them has an outcome, the tracker ends the task SUCCESS by itself,
    # with the item counts added to its result.
    items_expected: Count | None = None
    observed_at: datetime  # required on the wire, see TaskSubmit.submitted_at

    def __post_init__(self) -> None:
        if self.status is not None:
            self.status = canonical_status(self.status).value
        check_json_size("result", self.result)

    @classmethod
    def now(cls, **fields: Any) -> TaskUpdate:
        """An update stamped with the producer's clock now."""
        return cls(observed_at=utc_now(), **fields)


class TaskCancel(Contract, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "tasks.cancel"

    task_id: Identifier
    reason: ShortText | None = None
    requested_at: datetime  # required on the wire, see TaskSubmit.submitted_at

    @classmethod
    def now(cls, **fields: Any) -> TaskCancel:
        """A cancel stamped with the producer's clock now."""
        return cls(requested_at=utc_now(), **fields)


class TaskCancelled(Contract, kw_only=True):
    """Broadcast to workers: stop working on this task and report it KILLED."""

    ROUTING_KEY: ClassVar[str] = "tasks.cancelled"

    task_id: Identifier
    reason: str | None = None


class TaskView(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """A task as the tracker knows it: Iaso's fields plus item counts."""

    id: str
    kind: str | None
    name: str
    status: TaskStatus
    progress_value: int
    end_value: int
    progress_message: str | None
    result: Any
    params: dict[str, Any]
    created_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    updated_at: datetime
    should_be_killed: bool
    items_total: int = 0
    items_succeeded: int = 0
    items_failed: int = 0
    items_skipped: int = 0
    driver: str | None = None
    drive_attempts: int = 0
    # Cancel requested, the task not terminal yet (the worker has not confirmed).
    cancelling: bool = False
    # Why a QUEUED task has not started, e.g. "no consumer for hf.datasets.collect";
    # None once its command was delivered.
    waiting_reason: str | None = None


class ItemView(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    item_key: str
    outcome: ItemOutcomeStatus
    message: str | None
    observed_at: datetime
    detail: str | None = None


class TasksChanged(Contract, kw_only=True):
    """Published after every commit: each task the commit touched, whole (state, not deltas).

    One event per commit rather than per task (under load a commit touches many tasks, and
    a watcher of one task simply skips the others), split into several events when one
    would exceed the broker-facing size limit (`max_message_bytes`).
    """

    ROUTING_KEY: ClassVar[str] = "tasks.changed"

    tasks: list[TaskView]


class TaskGet(Contract, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "tasks.get"

    task_id: Identifier
    include_items: bool = False


class TaskGetReply(Reply, kw_only=True):
    task: TaskView | None = None
    items: list[ItemView] = []


class TaskList(Contract, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "tasks.list"

    statuses: list[StatusInput] = []
    kind: Identifier | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 50
    cursor: Annotated[str, msgspec.Meta(max_length=200)] | None = None

    def __post_init__(self) -> None:
        self.statuses = [canonical_status(s).value for s in self.statuses]


class TaskListReply(Reply, kw_only=True):
    tasks: list[TaskView] = []
    next_cursor: str | None = None
