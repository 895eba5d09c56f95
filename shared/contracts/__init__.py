"""Message contracts: msgspec Structs, JSON on the wire, one module per domain."""

from shared.contracts.base import Contract, json_schema
from shared.contracts.openhexa import (
    PipelineGet,
    PipelineGetReply,
    PipelineList,
    PipelineListReply,
    RunLaunch,
    RunWatch,
)
from shared.contracts.tasks import (
    DrivingCommand,
    ItemOutcome,
    ItemView,
    TaskCancel,
    TaskCancelled,
    TaskGet,
    TaskGetReply,
    TaskList,
    TaskListReply,
    TasksChanged,
    TaskStatus,
    TaskSubmit,
    TaskUpdate,
    TaskView,
)

# Every contract a routing key carries: `ferry publish` validates against it.
BY_ROUTING_KEY: dict[str, type[Contract]] = {
    c.ROUTING_KEY: c
    for c in (
        *(TaskSubmit, TaskUpdate, TaskCancel, TaskCancelled, TasksChanged, TaskGet, TaskList),
        *(PipelineList, PipelineGet, RunLaunch, RunWatch),
    )
}

# The answer each request/reply routing key gets (on `reply_to`).
REPLIES: dict[str, type[Contract]] = {
    TaskGet.ROUTING_KEY: TaskGetReply,
    TaskList.ROUTING_KEY: TaskListReply,
    PipelineList.ROUTING_KEY: PipelineListReply,
    PipelineGet.ROUTING_KEY: PipelineGetReply,
}

__all__ = [
    "BY_ROUTING_KEY",
    "REPLIES",
    "Contract",
    "DrivingCommand",
    "ItemOutcome",
    "ItemView",
    "TaskCancel",
    "TaskCancelled",
    "TaskGet",
    "TaskGetReply",
    "TaskList",
    "TaskListReply",
    "TaskStatus",
    "TaskSubmit",
    "TaskUpdate",
    "TaskView",
    "TasksChanged",
    "json_schema",
]
