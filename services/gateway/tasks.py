"""`ferry.v1.Tasks`: submit, get, list, watch and cancel tasks, through the task tracker.

Submitting publishes `tasks.submit` with the task's driving command (`hf.datasets.collect`
for a Hugging Face sync, `openhexa.runs.launch` for a pipeline run): the tracker records
the task and drives it. WatchTask follows `tasks.changed` on a private queue, subscribed
before the task is first read, so no change between the two can be missed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aio_pika
import aio_pika.abc
import grpc
import grpc.aio
import msgspec
from google.protobuf.timestamp_pb2 import Timestamp

from services.gateway.generated.ferry.v1 import tasks_pb2
from services.gateway.rpc import RpcError, ask, invalid, remaining, request_failed, validated
from services.gateway.settings import GatewaySettings
from shared.chunks import ChunkLink
from shared.contracts.base import Contract, utc_now
from shared.contracts.hf import HfDatasetsCollect
from shared.contracts.openhexa import RunLaunch
from shared.contracts.tasks import (
    DrivingCommand,
    ItemView,
    TaskCancel,
    TaskGet,
    TaskGetReply,
    TaskList,
    TaskListReply,
    TaskStatus,
    TaskSubmit,
    TaskView,
)
from shared.messaging import Unroutable, publish
from shared.service import Service
from shared.task_events import NoTaskExchange, follow_task

# The kinds the other submitters use (`ferry sync hf-to-aiod`, `ferry pipelines run`), so a
# listing by kind finds a task whoever submitted it.
HF_SYNC_KIND = "hf-to-aiod"
PIPELINE_RUN_KIND = "openhexa.run"
SYNC_MODES = {
    tasks_pb2.HF_SYNC_MODE_ALL: "all",
    tasks_pb2.HF_SYNC_MODE_ID: "id",
    tasks_pb2.HF_SYNC_MODE_SINCE: "since",
}
STATUS_TO_PROTO = {
    status: tasks_pb2.TaskStatus.Value(f"TASK_STATUS_{status.value}") for status in TaskStatus
}
PROTO_TO_STATUS = {value: status for status, value in STATUS_TO_PROTO.items()}


def _timestamp(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def task_message(task: TaskView) -> tasks_pb2.Task:
    return tasks_pb2.Task(
        id=task.id,
        kind=task.kind or "",
        name=task.name,
        status=STATUS_TO_PROTO[task.status],
        progress_value=task.progress_value,
        end_value=task.end_value,
        progress_message=task.progress_message or "",
        result_json=msgspec.json.encode(task.result).decode(),
        params_json=msgspec.json.encode(task.params).decode(),
        created_at=_timestamp(task.created_at),
        started_at=_timestamp(task.started_at),
        ended_at=_timestamp(task.ended_at),
        updated_at=_timestamp(task.updated_at),
        should_be_killed=task.should_be_killed,
        items_total=task.items_total,
        items_succeeded=task.items_succeeded,
        items_failed=task.items_failed,
        items_skipped=task.items_skipped,
        cancelling=task.cancelling,
        waiting_reason=task.waiting_reason or "",
    )


def item_message(item: ItemView) -> tasks_pb2.TaskItem:
    return tasks_pb2.TaskItem(
        item_key=item.item_key,
        outcome=STATUS_TO_PROTO[TaskStatus(item.outcome)],
        message=item.message or "",
        observed_at=_timestamp(item.observed_at),
    )


class TasksServicer:
    def __init__(self, service: Service, settings: GatewaySettings, link: ChunkLink) -> None:
        self.service = service
        self.settings = settings
        self.link = link

    # -- submitting ------------------------------------------------------------------------

    async def _submit(
        self, task_id: str, kind: str, name: str, command: Contract
    ) -> tasks_pb2.SubmitTaskResponse:
        body = msgspec.to_builtins(command)
        body.pop("task_id", None)  # the tracker adds it
        submit = validated(
            TaskSubmit,
            {
                "task_id": task_id,
                "kind": kind,
                "name": name,
                "params": body,
                "command": msgspec.to_builtins(
                    DrivingCommand(routing_key=command.ROUTING_KEY, body=body)
                ),
                "submitted_at": utc_now(),
            },
        )
        try:
            await publish(self.service.broker, self.service.names, submit)
        except Unroutable as exc:
            raise request_failed(exc, TaskSubmit.ROUTING_KEY) from None
        return tasks_pb2.SubmitTaskResponse(task_id=task_id)

    async def SubmitHfSync(
        self, request: tasks_pb2.SubmitHfSyncRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.SubmitTaskResponse:
        if request.mode not in SYNC_MODES:
            raise invalid("mode: give HF_SYNC_MODE_ALL, HF_SYNC_MODE_ID or HF_SYNC_MODE_SINCE")
        task_id = request.task_id or uuid.uuid4().hex
        fields: dict[str, Any] = {
            "task_id": task_id,
            "mode": SYNC_MODES[request.mode],
            "value": request.value or None,
            "author": request.author or None,
            "search": request.search or None,
            "filter": list(request.filter),
            "limit": request.limit or None,
            "prune": request.prune,
            "force": request.force,
        }
        collect = validated(HfDatasetsCollect, fields)
        name = (
            request.name
            or f"Hugging Face sync ({collect.mode}{' ' + collect.value if collect.value else ''})"
        )
        return await self._submit(task_id, HF_SYNC_KIND, name, collect)

    async def LaunchPipeline(
        self, request: tasks_pb2.LaunchPipelineRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.SubmitTaskResponse:
        try:
            config = msgspec.json.decode(request.config_json or "{}")
        except msgspec.DecodeError as exc:
            raise invalid(f"config_json: not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise invalid("config_json: must be a JSON object")
        task_id = request.task_id or uuid.uuid4().hex
        launch = validated(
            RunLaunch,
            {
                "task_id": task_id,
                "pipeline_id": request.pipeline_id or None,
                "pipeline_code": request.pipeline_code or None,
                "version_id": request.version_id or None,
                "config": config,
            },
        )
        which = launch.pipeline_code or launch.pipeline_id
        return await self._submit(
            task_id, PIPELINE_RUN_KIND, request.name or f"OpenHexa run of {which}", launch
        )

    # -- reading ---------------------------------------------------------------------------

    async def _get(
        self, context: grpc.aio.ServicerContext, task_id: str, *, items: bool = False
    ) -> TaskGetReply:
        query = validated(TaskGet, {"task_id": task_id, "include_items": items})
        reply = await ask(self.service, context, query, TaskGetReply)
        if reply.task is None:
            raise RpcError(grpc.StatusCode.NOT_FOUND, f"no such task: {task_id!r}")
        return reply

    async def GetTask(
        self, request: tasks_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.GetTaskResponse:
        reply = await self._get(context, request.task_id, items=request.include_items)
        assert reply.task is not None
        return tasks_pb2.GetTaskResponse(
            task=task_message(reply.task), items=[item_message(i) for i in reply.items]
        )

    async def ListTasks(
        self, request: tasks_pb2.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.ListTasksResponse:
        statuses = []
        for value in request.statuses:
            if value not in PROTO_TO_STATUS:
                raise invalid(f"statuses: {value} is not a task status")
            statuses.append(PROTO_TO_STATUS[value].value)
        query = validated(
            TaskList,
            {
                "statuses": statuses,
                "kind": request.kind or None,
                "limit": request.page_size or 50,
                "cursor": request.page_token or None,
            },
        )
        reply = await ask(self.service, context, query, TaskListReply)
        return tasks_pb2.ListTasksResponse(
            tasks=[task_message(t) for t in reply.tasks], next_page_token=reply.next_cursor or ""
        )

    async def WatchTask(
        self, request: tasks_pb2.WatchTaskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tasks_pb2.Task]:
        task_id = request.task_id
        validated(TaskGet, {"task_id": task_id})
        give_up = remaining(context, self.settings.watch_max_seconds)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + give_up
        channel = await (await self.link.connection()).channel()
        try:
            changes = await follow_changes(channel, self.service.names.exchange, task_id)
            # Subscribed first, read second: a change after the answer is already queued.
            task = (await self._get(context, task_id)).task
            assert task is not None
            yield task_message(task)
            while not task.status.is_terminal:
                try:
                    newer = await asyncio.wait_for(changes.get(), max(deadline - loop.time(), 0))
                except TimeoutError:
                    raise RpcError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"task {task_id} is still {task.status.value} after {give_up:g}s",
                    ) from None
                # Events may overtake the first answer: never step back to an older state.
                if newer.updated_at >= task.updated_at and newer != task:
                    task = newer
                    yield task_message(task)
        finally:
            await channel.close()

    # -- cancelling ------------------------------------------------------------------------

    async def CancelTask(
        self, request: tasks_pb2.CancelTaskRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.CancelTaskResponse:
        cancel = validated(
            TaskCancel,
            {
                "task_id": request.task_id,
                "reason": request.reason or None,
                "requested_at": utc_now(),
            },
        )
        # Asked first: a cancel of an unknown id would leave the tracker an orphan record.
        task = (await self._get(context, request.task_id)).task
        assert task is not None
        if task.status.is_terminal:
            return tasks_pb2.CancelTaskResponse(
                already_ended=True, status=STATUS_TO_PROTO[task.status]
            )
        try:
            await publish(self.service.broker, self.service.names, cancel)
        except Unroutable as exc:
            raise request_failed(exc, TaskCancel.ROUTING_KEY) from None
        return tasks_pb2.CancelTaskResponse(
            already_ended=False, status=STATUS_TO_PROTO[task.status]
        )


async def follow_changes(
    channel: aio_pika.abc.AbstractChannel, exchange_name: str, task_id: str
) -> asyncio.Queue[TaskView]:
    """Where the changes of `task_id` arrive (see `shared.task_events.follow_task`)."""
    try:
        return await follow_task(channel, exchange_name, task_id)
    except NoTaskExchange:
        raise RpcError(
            grpc.StatusCode.UNAVAILABLE, "the task_tracker has never run here (no exchange)"
        ) from None
