"""The task tracker: the one owner of the task table.

Consumes `tasks.submit`, `tasks.update` and `tasks.cancel` (batched into transactions, each
message acked after its batch commits), answers `tasks.get` and `tasks.list`, publishes
`tasks.changed` after every commit, drives each submitted task by publishing its command,
broadcasts `tasks.cancelled` on a task's first cancel, and sweeps for stalled tasks.

Side effects go through the store's outbox: decided in the transaction that applies the
change, published after the commit, deleted once the broker confirmed them; leftovers (a
crash between commit and publish) are published at start and every `outbox_interval`.

While the store is unavailable the tracker stops consuming, holds what it has in flight
(nothing is parked or dead-lettered for an outage), reports not ready, and answers
requests with an error reply; it resumes when a commit succeeds again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import aio_pika
import aiormq
import msgspec
from prometheus_client import Histogram

from services.task_tracker.batcher import CommitBatcher
from services.task_tracker.domain import FollowUp, TaskRecord, mark_undeliverable
from services.task_tracker.settings import TrackerSettings
from services.task_tracker.store import (
    Applied,
    StoreUnavailable,
    SweepRules,
    TaskStore,
    open_store,
)
from shared.contracts.tasks import (
    TaskCancel,
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
from shared.service import Service, StartupFailed
from shared.topology import WorkQueue

SERVICE = "task_tracker"
SUBMIT = WorkQueue(SERVICE, "submit", TaskSubmit.ROUTING_KEY)
UPDATE = WorkQueue(SERVICE, "update", TaskUpdate.ROUTING_KEY)
CANCEL = WorkQueue(SERVICE, "cancel", TaskCancel.ROUTING_KEY)
GET = WorkQueue.request(SERVICE, "get", TaskGet.ROUTING_KEY)
LIST = WorkQueue.request(SERVICE, "list", TaskList.ROUTING_KEY)
COMMAND_QUEUES = (SUBMIT, UPDATE, CANCEL)
# Held exclusively by the one SQLite tracker of a namespace (see `_refuse_a_second_sqlite`).
SQLITE_LOCK = "sqlite-lock"

STORE_UNAVAILABLE = "the task store is unavailable; try again later"

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


class AnotherTrackerRunning(StartupFailed):
    """The embedded (SQLite) backend found another consumer of its queues."""


class TaskTracker:
    def __init__(self, settings: TrackerSettings, store: TaskStore | None = None) -> None:
        self.settings = settings
        self.service = Service(SERVICE, settings)
        self.log = logging.getLogger("ferry.task_tracker")
        self.store = store or open_store(
            settings.database_url, settings.table_prefix, timeout=settings.store_timeout
        )
        self.embedded = settings.database_url.startswith("sqlite")
        self.batcher: CommitBatcher[Change] = CommitBatcher(
            self._commit,
            max_size=settings.batch_size,
            max_delay=settings.batch_delay,
            is_outage=lambda exc: isinstance(exc, StoreUnavailable),
            on_outage=self._on_store_outage,
            on_recovery=self._on_store_recovery,
            retry_max_delay=settings.store_retry_max_delay,
        )
        self._loops: list[asyncio.Task[None]] = []
        self._lock_connection: aio_pika.abc.AbstractConnection | None = None
        self._register_handlers()
        self.service.add_readiness_check(self._not_ready)
        app = self.service.app
        app.on_startup(self._open)
        app.after_startup(self._start_loops)
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
            try:
                record = await self.store.get(body.task_id)
                # An orphan (updates seen, no submit) is not a task yet.
                if record is None or record.is_orphan:
                    return TaskGetReply(error=f"no such task: {body.task_id!r}")
                items = await self.store.items(body.task_id) if body.include_items else []
            except StoreUnavailable:
                return TaskGetReply(error=STORE_UNAVAILABLE)
            return TaskGetReply(task=record.to_view(), items=[i.to_view() for i in items])

        @handles(LIST, TaskList)
        async def list_tasks(body: TaskList) -> TaskListReply:
            statuses = {TaskStatus(s) for s in body.statuses} or None
            try:
                records, cursor = await self.store.list(
                    statuses, body.kind, body.limit, body.cursor
                )
            except StoreUnavailable:
                return TaskListReply(error=STORE_UNAVAILABLE)
            return TaskListReply(tasks=[r.to_view() for r in records], next_cursor=cursor)

    # -- the commit path ----------------------------------------------------------------

    async def _commit(self, changes: Sequence[Change]) -> None:
        """One transaction, then the follow-ups it recorded and its event, all confirmed by
        the broker before the batch's messages are acked."""
        started = time.perf_counter()
        applied = await self.store.apply(changes, _now())
        await self._after_commit(applied)
        batch_sizes.observe(len(changes))
        commit_seconds.observe(time.perf_counter() - started)

    async def _after_commit(self, applied: Applied) -> None:
        records = applied.records
        if applied.follow_ups:
            ids = [f.outbox_id for f in applied.follow_ups]
            _, undeliverable = await self._dispatch(ids=ids)
            records = _replace(records, undeliverable)
        await self._announce(records)

    async def _dispatch(
        self, *, ids: Sequence[int] | None = None, older_than: datetime | None = None
    ) -> tuple[int, list[TaskRecord]]:
        """Publish outbox rows (claimed, so no other replica publishes them too); returns
        how many rows were claimed and the tasks whose driving command found no consumer,
        now marked so."""
        unroutable: list[FollowUp] = []

        async def send(follow_ups: Sequence[FollowUp]) -> list[int]:
            results = await asyncio.gather(
                *(self._publish_follow_up(f) for f in follow_ups), return_exceptions=True
            )
            done: list[int] = []
            for follow_up, result in zip(follow_ups, results, strict=True):
                if isinstance(result, Unroutable):
                    # Nobody consumes that key yet: the task stays QUEUED, says why, and the
                    # sweep drives it again until the driver shows up or it is given up.
                    unroutable.append(follow_up)
                    done.append(follow_up.outbox_id)
                elif isinstance(result, BaseException):
                    # Kept in the outbox: the next pass publishes it.
                    self.log.warning(
                        "publishing a follow-up failed; it stays in the outbox",
                        extra={"task_id": follow_up.task_id, "error": repr(result)},
                    )
                else:
                    done.append(follow_up.outbox_id)
            return done

        claimed = await self.store.dispatch_outbox(send, ids=ids, older_than=older_than)
        if not unroutable:
            return claimed, []
        now = _now()
        for follow_up in unroutable:
            self.log.warning(
                "no consumer for the driving command yet",
                extra={"task_id": follow_up.task_id, "routing_key": follow_up.routing_key},
            )
        marked = await self.store.save_tracker_changes(
            [mark_undeliverable(f.task_id, f.routing_key, now) for f in unroutable]
        )
        return claimed, marked

    async def _publish_follow_up(self, follow_up: FollowUp) -> None:
        await publish(
            self.service.broker,
            self.service.names,
            follow_up.body,
            routing_key=follow_up.routing_key,
            mandatory=follow_up.mandatory,
        )

    async def _announce(self, records: Sequence[TaskRecord]) -> None:
        """`tasks.changed` for the (submitted) tasks, split so that no event exceeds
        `max_message_bytes`: an oversized publish would close the channel every consumer
        of this process shares."""
        views = [msgspec.json.encode(r.to_view()) for r in records if not r.is_orphan]
        for body in events_of(views, self.settings.max_message_bytes, self.log):
            await publish(
                self.service.broker,
                self.service.names,
                body,
                routing_key=TasksChanged.ROUTING_KEY,
                mandatory=False,
            )

    # -- the sweep and the outbox -------------------------------------------------------

    async def sweep(self) -> int:
        """Re-drive stalled tasks, kill unconfirmed cancellations, give up on silent ones,
        delete orphans past their time. Returns how many tasks it changed."""
        settings = self.settings
        now = _now()
        rules = SweepRules(
            stall_after=timedelta(seconds=settings.stall_after),
            give_up_after=timedelta(seconds=settings.give_up_after),
            page_size=settings.sweep_page_size,
        )
        applied = await self.store.sweep(now, rules)
        if applied.records:
            await self._after_commit(applied)
            self.log.info("sweep changed tasks", extra={"count": len(applied.records)})
        orphans = await self.store.delete_orphans(now - timedelta(seconds=settings.orphan_ttl))
        if orphans:
            self.log.info("deleted orphan updates (never submitted)", extra={"count": orphans})
        return len(applied.records)

    async def publish_leftovers(self) -> int:
        """Publish outbox rows a crash (or a broker outage) left behind; returns how many
        rows were claimed."""
        total = 0
        # Rows younger than a second are most likely being published by their committer
        # (which holds them claimed anyway; this only saves a wasted look).
        older_than = _now() - timedelta(seconds=1)
        for _ in range(100):  # a page per round, bounded per pass
            claimed, undeliverable = await self._dispatch(older_than=older_than)
            if undeliverable:
                await self._announce(undeliverable)
            total += claimed
            if not claimed:
                break
        return total

    async def _every(
        self, interval: float, what: str, job: Callable[[], Awaitable[object]]
    ) -> None:
        while True:
            try:
                await job()
            except StoreUnavailable as exc:
                self.log.warning(f"{what} skipped: the task store is unavailable: {exc}")
            except Exception:
                self.log.exception(f"{what} failed; trying again next interval")
            await asyncio.sleep(interval)

    # -- store outages ------------------------------------------------------------------

    async def _on_store_outage(self) -> None:
        # Stop taking new messages: what is in flight waits in the batcher, the rest stays
        # in the queues, and nothing reaches the retry or dead-letter path.
        await self.service.pause("the task store is unavailable")

    async def _on_store_recovery(self) -> None:
        await self.service.resume()

    def _not_ready(self) -> list[str]:
        problems = []
        if self.batcher.in_outage:
            problems.append("task store unavailable")
        if not self.batcher.running:
            problems.append("commit batcher not running")
        return problems

    # -- lifecycle ----------------------------------------------------------------------

    async def _open(self) -> None:
        if self.embedded:
            await self._refuse_a_second_sqlite()
        try:
            await self.store.open()
        except StoreUnavailable as exc:
            raise StartupFailed(f"cannot open the task store: {exc}") from None
        self.batcher.start()

    async def _refuse_a_second_sqlite(self) -> None:
        """SQLite is one process's store: a second tracker on the same namespace would take
        half the messages into a table nobody else reads. Hold an exclusive queue for as
        long as this process runs, and check that nobody else consumes our queues."""
        names = self.service.names
        lock = names.queue(SERVICE, SQLITE_LOCK)
        fix = "run one SQLite tracker per namespace, or use PostgreSQL for several replicas"
        connection = await aio_pika.connect(self.settings.amqp_url)
        try:
            channel = await connection.channel()
            try:
                await channel.declare_queue(lock, exclusive=True, auto_delete=True)
            except aiormq.exceptions.ChannelLockedResource:
                raise AnotherTrackerRunning(
                    f"another task tracker with a SQLite store runs on namespace"
                    f" {self.settings.namespace!r} (it holds {lock}); {fix}"
                ) from None
            for spec in COMMAND_QUEUES:
                queue_name = names.queue(spec.service, spec.purpose)
                probe = await connection.channel()
                try:
                    queue = await probe.declare_queue(queue_name, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    continue  # not declared yet: nobody consumes it
                consumers = queue.declaration_result.consumer_count
                await probe.close()
                if consumers:
                    raise AnotherTrackerRunning(
                        f"{queue_name} already has {consumers} consumer(s) (another task"
                        f" tracker?); a SQLite store allows one; {fix}"
                    )
        except BaseException:
            await connection.close()
            raise
        self._lock_connection = connection

    async def _start_loops(self) -> None:
        settings = self.settings
        self._loops = [
            asyncio.create_task(
                self._every(settings.sweep_interval, "sweep", self.sweep), name="sweeper"
            ),
            asyncio.create_task(
                self._every(settings.outbox_interval, "outbox pass", self.publish_leftovers),
                name="outbox",
            ),
        ]

    async def _close(self) -> None:
        for loop in self._loops:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        await self.batcher.stop(timeout=self.settings.graceful_timeout)
        await self.store.close()
        if self._lock_connection is not None:
            await self._lock_connection.close()


def events_of(views: Sequence[bytes], limit: int, log: logging.Logger) -> list[bytes]:
    """`TasksChanged` bodies holding the encoded `views`, each at most `limit` bytes."""
    head, tail = b'{"version":1,"tasks":[', b"]}"
    room = limit - len(head) - len(tail)
    events: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for view in views:
        if len(view) > room:  # cannot happen with the contract's bounds; never publish it
            log.error("a task view exceeds the message size limit", extra={"bytes": len(view)})
            continue
        if chunk and size + 1 + len(view) > room:
            events.append(head + b",".join(chunk) + tail)
            chunk, size = [], 0
        size += len(view) + (1 if chunk else 0)
        chunk.append(view)
    if chunk:
        events.append(head + b",".join(chunk) + tail)
    return events


def _replace(records: Sequence[TaskRecord], newer: Sequence[TaskRecord]) -> list[TaskRecord]:
    by_id = {r.id: r for r in newer}
    return [by_id.get(r.id, r) for r in records]


def _now() -> datetime:
    return datetime.now(UTC)


def build(settings: TrackerSettings | None = None) -> TaskTracker:
    return TaskTracker(settings or TrackerSettings.from_env())
