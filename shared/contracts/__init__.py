"""Message contracts: msgspec Structs, JSON on the wire, one module per domain."""

from shared.contracts.base import Contract, json_schema
from shared.contracts.tasks import (
    DrivingCommand,
    ItemOutcome,
    ItemView,
    TaskCancel,
    TaskCancelled,
    TaskChanged,
    TaskGet,
    TaskGetReply,
    TaskList,
    TaskListReply,
    TaskStatus,
    TaskSubmit,
    TaskUpdate,
    TaskView,
)

# Every contract a routing key carries: `ferry publish` validates against it.
BY_ROUTING_KEY: dict[str, type[Contract]] = {
    c.ROUTING_KEY: c
    for c in (TaskSubmit, TaskUpdate, TaskCancel, TaskCancelled, TaskChanged, TaskGet, TaskList)
}

__all__ = [
    "BY_ROUTING_KEY",
    "Contract",
    "DrivingCommand",
    "ItemOutcome",
    "ItemView",
    "TaskCancel",
    "TaskCancelled",
    "TaskChanged",
    "TaskGet",
    "TaskGetReply",
    "TaskList",
    "TaskListReply",
    "TaskStatus",
    "TaskSubmit",
    "TaskUpdate",
    "TaskView",
    "json_schema",
]
