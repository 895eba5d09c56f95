"""The task tracker: the one owner of the task table.

Consumes `tasks.submit`, `tasks.update` and `tasks.cancel` (batched into transactions, each
message acked after its batch commits), answers `tasks.get` and `tasks.list`, publishes
`tasks.changed` after every commit and `tasks.cancelled` on cancellation, drives each
submitted task by publishing its command, and sweeps for stalled tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import msgspec
from prometheus_client import Histogram

from services.task_tracker.batcher import CommitBatcher
from services.task_tracker.domain import (
    SweepAction,
    TaskRecord,
    give_up_message,
    kill_message,
    mark_driven,
    mark_given_up,
    mark_killed_by_tracker,
    sweep_decision,
)
from services.task_tracker.settings import TrackerSettings
from services.task_tracker.store import TaskStore, open_store
from shared.contracts.tasks import (
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
)
from shared.messaging import Unroutable, publish
from shared.metrics import registry
from shared.service import Service
from shared.topology import WorkQueue

SERVICE = "task_tracker"
SUBMIT = WorkQueue(SERVICE, "submit", TaskSubmit.ROUTING_KEY)
UPDATE = WorkQueue(SERVICE, "update", TaskUpdate.ROUTING_KEY)
CANCEL = WorkQueue(SERVICE, "cancel", TaskCancel.ROUTING_KEY)
GET = WorkQueue(SERVICE, "get", TaskGet.ROUTING_KEY, message_ttl_ms=60_000)
LIST = WorkQueue(SERVICE, "list", TaskList.ROUTING_KEY, message_ttl_ms=60_000)

Change = TaskSubmit | TaskUpdate | TaskCancel

batch_sizes = Histogram(
    "ferry_tracker_batch_size",
    "Changes per committed batch",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    registry=registry,
)
commit_seconds = Histogram(
    "ferry_tracker_commit_seconds",
    "Time to commit a batch and confirm its follow-ups",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
    registry=registry,
)


class TaskTracker:
    def __init__(self, settings: TrackerSettings, store: TaskStore | None = None) -> None:
        self.settings = settings
        self.service = Service(SERVICE, settings)
        self.log = logging.getLogger("ferry.task_tracker")
        self.store = store or open_store(settings.database_url, settings.table_prefix)
        self.batcher: CommitBatcher[Change] = CommitBatcher(
            self._commit, max_size=settings.batch_size, max_delay=settings.batch_delay
        )
        self._sweeper: asyncio.Task[None] | None = None
        self._register_handlers()
        app = self.service.app
        app.on_startup(self._open)
        app.after_startup(self._start_sweeper)
        # After the broker stopped (and running handlers finished): flush, then close.
        app.after_shutdown(self._close)

    # -- handlers -----------------------------------------------------------------------

    def _register_handlers(self) -> None:
        handles = self.service.handles

        @handles(SUBMIT, TaskSubmit)
        async def submit_task(body: TaskSubmit) -> None:
            """Record a task (QUEUED) and publish its driving command."""
            await self.batcher.submit(body)

        @handles(UPDATE, TaskUpdate)
        async def update_task(body: TaskUpdate) -> None:
            """Merge a worker's report into its task (order-independent)."""
            await self.batcher.submit(body)

        @handles(CANCEL, TaskCancel)
        async def cancel_task(body: TaskCancel) -> None:
            """Ask for a task to be killed; workers hear it on `tasks.cancelled`."""
            await self.batcher.submit(body)

        @handles(GET, TaskGet)
        async def get_task(body: TaskGet) -> TaskGetReply:
            record = await self.store.get(body.task_id)
            if record is None:
                return TaskGetReply(error=f"task {body.task_id!r} not found")
            items = await self.store.items(body.task_id) if body.include_items else []
            return TaskGetReply(task=record.to_view(), items=[i.to_view() for i in items])

        @handles(LIST, TaskList)
        async def list_tasks(body: TaskList) -> TaskListReply:
            statuses = {TaskStatus(s) for s in body.statuses} or None
            records, cursor = await self.store.list(statuses, body.kind, body.limit, body.cursor)
            return TaskListReply(tasks=[r.to_view() for r in records], next_cursor=cursor)

    # -- the commit path ----------------------------------------------------------------

    async def _commit(self, changes: Sequence[Change]) -> None:
        """One transaction, then the follow-ups it calls for, all confirmed by the broker."""
        started = time.perf_counter()
        records = await self.store.apply(changes, _now())
        cancelled = {c.task_id: c.reason for c in changes if isinstance(c, TaskCancel)}
        to_drive = [r for r in records if _awaits_first_drive(r)]
        driven = await self._drive(to_drive)
        if driven:
            records = _replace(records, await self.store.save_tracker_changes(driven))
        await asyncio.gather(
            self._announce(records),
            *(
                self._publish_event(TaskCancelled(task_id=task_id, reason=reason))
                for task_id, reason in cancelled.items()
            ),
        )
        batch_sizes.observe(len(changes))
        commit_seconds.observe(time.perf_counter() - started)

    async def _drive(self, records: Sequence[TaskRecord]) -> list[TaskRecord]:
        """Publish the driving command of each record; returns those now marked driven."""
        driven: list[TaskRecord] = []
        now = _now()
        for record in records:
            command = record.command
            assert command is not None
            body = {**command.body, "task_id": record.id}
            try:
                await publish(
                    self.service.broker,
                    self.service.names,
                    msgspec.json.encode(body),
                    routing_key=command.routing_key,
                )
            except Unroutable:
                # Nobody consumes that key yet: the task stays QUEUED, and the sweep tries
                # again until the driver shows up or the task is given up.
                self.log.warning(
                    "no consumer for the driving command yet",
                    extra={"task_id": record.id, "routing_key": command.routing_key},
                )
                continue
            driven.append(mark_driven(record, now))
        return driven

    async def _announce(self, records: Sequence[TaskRecord]) -> None:
        await self._publish_event(TasksChanged(tasks=[r.to_view() for r in records]))

    async def _publish_event(self, event: TasksChanged | TaskCancelled) -> None:
        await publish(self.service.broker, self.service.names, event, mandatory=False)

    # -- the sweep ----------------------------------------------------------------------

    async def sweep(self) -> int:
        """Re-drive stalled tasks, kill unconfirmed cancellations, give up on silent ones.
        Returns how many tasks it changed."""
        settings = self.settings
        now = _now()
        stall_after = timedelta(seconds=settings.stall_after)
        give_up_after = timedelta(seconds=settings.give_up_after)
        candidates = await self.store.sweep_candidates(now, now - stall_after, 500)
        changed: list[TaskRecord] = []
        to_redrive: list[TaskRecord] = []
        for record in candidates:
            action = sweep_decision(record, now, stall_after, give_up_after)
            if action is SweepAction.KILL:
                changed.append(mark_killed_by_tracker(record, now, kill_message(stall_after)))
            elif action is SweepAction.GIVE_UP:
                silent_for = now - record.touched_at
                changed.append(mark_given_up(record, now, give_up_message(silent_for)))
            elif action is SweepAction.REDRIVE:
                to_redrive.append(record)
        changed.extend(await self._drive(to_redrive))
        if changed:
            await self._announce(await self.store.save_tracker_changes(changed))
            self.log.info("sweep changed tasks", extra={"count": len(changed)})
        return len(changed)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                self.log.exception("sweep failed; trying again next interval")
            await asyncio.sleep(self.settings.sweep_interval)

    # -- lifecycle ----------------------------------------------------------------------

    async def _open(self) -> None:
        await self.store.open()
        self.batcher.start()

    async def _start_sweeper(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="sweeper")

    async def _close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.batcher.stop()
        await self.store.close()


def _awaits_first_drive(record: TaskRecord) -> bool:
    return (
        record.command is not None
        and record.driven_at is None
        and record.status is TaskStatus.QUEUED
        and not record.should_be_killed
    )


def _replace(records: Sequence[TaskRecord], newer: Sequence[TaskRecord]) -> list[TaskRecord]:
    by_id = {r.id: r for r in newer}
    return [by_id.get(r.id, r) for r in records]


def _now() -> datetime:
    return datetime.now(UTC)


def build(settings: TrackerSettings | None = None) -> TaskTracker:
    return TaskTracker(settings or TrackerSettings.from_env())
