"""The task tracker as its users meet it: messages in, replies and events out, on a real
RabbitMQ, once on SQLite and once on PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import aio_pika
import msgspec
import pytest

from services.task_tracker.app import TaskTracker
from services.task_tracker.settings import TrackerSettings
from services.task_tracker.store import open_store
from shared.contracts.tasks import (
    MAX_JSON_BYTES,
    DrivingCommand,
    ItemOutcome,
    TaskCancel,
    TaskCancelled,
    TaskGet,
    TaskGetReply,
    TaskList,
    TaskListReply,
    TasksChanged,
    TaskSubmit,
    TaskUpdate,
    TaskView,
)
from shared.messaging import RemoteError, Requester, publish
from shared.service import ERROR_HEADER, ERROR_KIND_HEADER
from shared.settings import BaseSettings
from tests.conftest import Cleanup
from tests.support.publisher import publish_many
from tests.support.tracker import backend_settings
from tests.support.waiting import drain, eventually

T0 = datetime(2026, 1, 1, tzinfo=UTC)
M = TypeVar("M")


@pytest.fixture(params=["sqlite", "postgres"])
async def settings(
    request: pytest.FixtureRequest, base_settings: BaseSettings, tmp_path: Path
) -> AsyncIterator[TrackerSettings]:
    async with backend_settings(
        request.param,
        base_settings,
        tmp_path,
        sweep_interval=3600.0,
        stall_after=0.3,
        give_up_after=1.5,
    ) as settings:
        yield settings


@pytest.fixture
async def tracker(settings: TrackerSettings, cleanup: Cleanup) -> AsyncIterator[TaskTracker]:
    tracker = TaskTracker(settings)
    async with cleanup.running(tracker.service):
        yield tracker


@pytest.fixture
async def client(tracker: TaskTracker) -> AsyncIterator[Requester]:
    async with Requester(tracker.settings.amqp_url, tracker.service.names) as requester:
        yield requester


class Listener:
    """A private queue bound to one routing key, as a watcher or a worker would have."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    @classmethod
    async def bind(
        cls, connection: aio_pika.abc.AbstractConnection, exchange: str, routing_key: str
    ) -> Listener:
        listener = cls()
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            listener.bodies.append(message.body)

        await queue.consume(on_message, no_ack=True)
        return listener

    def decoded(self, kind: type[M]) -> list[M]:
        return [msgspec.json.decode(b, type=kind) for b in self.bodies]


async def send(tracker: TaskTracker, message: TaskSubmit | TaskUpdate | TaskCancel) -> None:
    await publish(tracker.service.broker, tracker.service.names, message)


def task_getter(client: Requester, task_id: str) -> Callable[[], Awaitable[TaskView | None]]:
    async def get() -> TaskView | None:
        try:
            return (await client.request(TaskGet(task_id=task_id), TaskGetReply)).task
        except RemoteError as exc:
            if "no such task" in str(exc):
                return None
            raise

    return get


def waiting(client: Requester, task_id: str) -> Callable[[], Awaitable[TaskView | None]]:
    async def get() -> TaskView | None:
        task = await task_getter(client, task_id)()
        return task if task is not None and task.waiting_reason else None

    return get


def status_is(client: Requester, task_id: str, *statuses: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        task = await task_getter(client, task_id)()
        return task is not None and task.status in statuses

    return check


async def test_submit_records_the_task_and_publishes_its_command(
    tracker: TaskTracker, client: Requester, amqp: aio_pika.abc.AbstractConnection
) -> None:
    worker = await Listener.bind(amqp, tracker.service.names.exchange, "hf.datasets.collect")
    await send(
        tracker,
        TaskSubmit.now(
            task_id="sync-1",
            kind="hf.sync",
            name="Sync HF datasets",
            params={"mode": "all"},
            command=DrivingCommand(routing_key="hf.datasets.collect", body={"mode": "all"}),
        ),
    )
    await eventually(lambda: worker.bodies)
    assert msgspec.json.decode(worker.bodies[0]) == {"mode": "all", "task_id": "sync-1"}
    task = await eventually(task_getter(client, "sync-1"))
    assert (task.status, task.kind, task.name, task.params) == (
        "QUEUED",
        "hf.sync",
        "Sync HF datasets",
        {"mode": "all"},
    )
    assert (task.driver, task.drive_attempts) == ("hf.datasets.collect", 1)
    # A redelivered submit changes nothing and does not drive the task twice.
    await send(
        tracker,
        TaskSubmit.now(
            task_id="sync-1",
            kind="hf.sync",
            command=DrivingCommand(routing_key="hf.datasets.collect", body={"mode": "all"}),
        ),
    )
    await asyncio.sleep(0.3)
    assert len(worker.bodies) == 1


async def test_updates_merge_into_progress_items_and_events(
    tracker: TaskTracker, client: Requester, amqp: aio_pika.abc.AbstractConnection
) -> None:
    watcher = await Listener.bind(amqp, tracker.service.names.exchange, "tasks.changed")
    await send(tracker, TaskSubmit(task_id="t1", kind="demo", submitted_at=T0))
    await send(
        tracker,
        TaskUpdate(
            task_id="t1",
            status="RUNNING",
            end_value=3,
            progress_message="collecting",
            items=[
                ItemOutcome(item_key="a", outcome="SUCCESS"),
                ItemOutcome(item_key="b", outcome="ERRORED", message="404"),
            ],
            observed_at=T0 + timedelta(seconds=1),
        ),
    )
    await send(
        tracker,
        TaskUpdate(
            task_id="t1",
            status="SUCCESS",
            result={"datasets": 2},
            items=[ItemOutcome(item_key="c", outcome="SKIPPED")],
            observed_at=T0 + timedelta(seconds=2),
        ),
    )
    # Late and out of order: must not move the task backwards.
    await send(tracker, TaskUpdate(task_id="t1", status="RUNNING", observed_at=T0))
    await eventually(status_is(client, "t1", "SUCCESS"))
    await asyncio.sleep(0.2)
    reply = await client.request(TaskGet(task_id="t1", include_items=True), TaskGetReply)
    task = reply.task
    assert task is not None
    assert (task.status, task.progress_value, task.end_value, task.result) == (
        "SUCCESS",
        3,
        3,
        {"datasets": 2},
    )
    assert (task.items_total, task.items_succeeded, task.items_failed, task.items_skipped) == (
        3,
        1,
        1,
        1,
    )
    assert task.started_at == T0  # the earliest RUNNING report, even if it came last
    assert task.ended_at == T0 + timedelta(seconds=2)
    assert sorted((i.item_key, i.outcome) for i in reply.items) == [
        ("a", "SUCCESS"),
        ("b", "ERRORED"),
        ("c", "SKIPPED"),
    ]
    # Watchers saw the whole task each time, ending with its final state.
    events = watcher.decoded(TasksChanged)
    assert events and events[-1].tasks[-1].status == "SUCCESS"
    assert all(t.id == "t1" for e in events for t in e.tasks)


async def test_iaso_documentation_aliases_are_accepted(
    tracker: TaskTracker, client: Requester
) -> None:
    for task_id in ("e1", "k1"):
        await send(tracker, TaskSubmit(task_id=task_id, kind="demo", submitted_at=T0))
    at = b'"observed_at": "2026-01-01T00:00:01Z"'
    await send(tracker, TaskUpdate.decode(b'{"task_id": "e1", "status": "ERROR", ' + at + b"}"))
    await send(tracker, TaskUpdate.decode(b'{"task_id": "k1", "status": "CANCELLED", ' + at + b"}"))
    await eventually(status_is(client, "e1", "ERRORED"))
    await eventually(status_is(client, "k1", "KILLED"))


async def test_list_filters_by_status_and_kind_and_pages(
    tracker: TaskTracker, client: Requester
) -> None:
    for i in range(7):
        await send(
            tracker,
            TaskSubmit(
                task_id=f"l{i}",
                kind="even" if i % 2 == 0 else "odd",
                submitted_at=T0 + timedelta(minutes=i),
            ),
        )
    await send(tracker, TaskUpdate.now(task_id="l0", status="RUNNING"))

    async def all_listed() -> bool:
        reply = await client.request(TaskList(limit=100), TaskListReply)
        return len(reply.tasks) == 7

    await eventually(all_listed)
    await eventually(status_is(client, "l0", "RUNNING"))
    seen: list[str] = []
    cursor = None
    while True:
        reply = await client.request(TaskList(kind="even", limit=2, cursor=cursor), TaskListReply)
        seen += [t.id for t in reply.tasks]
        if reply.next_cursor is None:
            break
        cursor = reply.next_cursor
    assert seen == ["l6", "l4", "l2", "l0"]  # newest first, every page once
    running = await client.request(TaskList(statuses=["RUNNING"]), TaskListReply)
    assert [t.id for t in running.tasks] == ["l0"]


async def test_cancel_flags_the_task_and_tells_the_workers(
    tracker: TaskTracker, client: Requester, amqp: aio_pika.abc.AbstractConnection
) -> None:
    workers = await Listener.bind(amqp, tracker.service.names.exchange, "tasks.cancelled")
    await Listener.bind(amqp, tracker.service.names.exchange, "demo.work.do")
    await send(
        tracker,
        TaskSubmit.now(
            task_id="c1", kind="demo", command=DrivingCommand(routing_key="demo.work.do")
        ),
    )
    await send(tracker, TaskUpdate.now(task_id="c1", status="RUNNING"))
    await eventually(status_is(client, "c1", "RUNNING"))
    await send(tracker, TaskCancel.now(task_id="c1", reason="operator asked"))
    await eventually(lambda: workers.bodies)
    assert workers.decoded(TaskCancelled)[0].task_id == "c1"
    task = await task_getter(client, "c1")()
    assert task is not None and task.should_be_killed and task.status == "RUNNING"
    # The worker confirms: the task ends KILLED.
    await send(tracker, TaskUpdate.now(task_id="c1", status="KILLED"))
    await eventually(status_is(client, "c1", "KILLED"))

    # A queued task with nothing to run it is killed at once.
    await send(tracker, TaskSubmit.now(task_id="c2", kind="demo"))
    await send(tracker, TaskCancel.now(task_id="c2"))
    await eventually(status_is(client, "c2", "KILLED"))


async def test_a_task_whose_driver_is_missing_waits_then_is_driven_by_the_sweep(
    tracker: TaskTracker, client: Requester, amqp: aio_pika.abc.AbstractConnection
) -> None:
    await send(
        tracker,
        TaskSubmit.now(
            task_id="s1", kind="demo", command=DrivingCommand(routing_key="late.work.do")
        ),
    )
    task = await eventually(waiting(client, "s1"))
    # Nobody to take the command: the task says so.
    assert (task.status, task.waiting_reason) == ("QUEUED", "no consumer for late.work.do")
    worker = await Listener.bind(amqp, tracker.service.names.exchange, "late.work.do")
    await asyncio.sleep(tracker.settings.stall_after + 0.1)
    assert await tracker.sweep() == 1
    await eventually(lambda: worker.bodies)
    task = await task_getter(client, "s1")()
    assert task is not None and (task.drive_attempts, task.waiting_reason) == (2, None)


async def test_the_sweep_gives_up_on_a_silent_task_and_kills_unconfirmed_cancels(
    tracker: TaskTracker, client: Requester, amqp: aio_pika.abc.AbstractConnection
) -> None:
    await Listener.bind(amqp, tracker.service.names.exchange, "quiet.work.do")
    await send(
        tracker,
        TaskSubmit.now(
            task_id="g1", kind="demo", command=DrivingCommand(routing_key="quiet.work.do")
        ),
    )
    await send(tracker, TaskUpdate.now(task_id="g1", status="RUNNING"))
    await send(
        tracker,
        TaskSubmit.now(
            task_id="g2", kind="demo", command=DrivingCommand(routing_key="quiet.work.do")
        ),
    )
    await send(tracker, TaskCancel.now(task_id="g2"))
    await eventually(status_is(client, "g1", "RUNNING"))
    await asyncio.sleep(tracker.settings.stall_after + 0.1)
    await tracker.sweep()  # g1 re-driven, g2 killed
    await eventually(status_is(client, "g2", "KILLED"))
    await asyncio.sleep(tracker.settings.give_up_after)
    await tracker.sweep()
    task = await task_getter(client, "g1")()
    assert task is not None and task.status == "ERRORED"
    assert task.progress_message is not None and "given up" in task.progress_message


async def test_bad_messages_are_dead_lettered_and_the_tracker_keeps_serving(
    tracker: TaskTracker, client: Requester, amqp: aio_pika.abc.AbstractConnection
) -> None:
    names = tracker.service.names
    await publish(
        tracker.service.broker, names, b'{"status": "RUNNING"}', routing_key="tasks.update"
    )
    await publish(tracker.service.broker, names, b"\xff\xfe", routing_key="tasks.submit")
    dead = await drain(amqp, names.dead_letter_queue("task_tracker"), expect=2)
    assert {d.headers[ERROR_KIND_HEADER] for d in dead} == {"malformed"}
    assert any("task_id" in str(d.headers[ERROR_HEADER]) for d in dead)
    await send(tracker, TaskSubmit.now(task_id="ok", kind="demo"))
    await eventually(task_getter(client, "ok"))
    with pytest.raises(RemoteError, match=r"^no such task: 'nope'$"):
        await client.request(TaskGet(task_id="nope"), TaskGetReply)


async def test_cancelling_shows_until_the_worker_confirms(
    tracker: TaskTracker, client: Requester, amqp: aio_pika.abc.AbstractConnection
) -> None:
    await Listener.bind(amqp, tracker.service.names.exchange, "demo.work.do")
    await send(
        tracker,
        TaskSubmit.now(
            task_id="v1", kind="demo", command=DrivingCommand(routing_key="demo.work.do")
        ),
    )
    await send(tracker, TaskUpdate.now(task_id="v1", status="RUNNING"))
    await eventually(status_is(client, "v1", "RUNNING"))
    task = await task_getter(client, "v1")()
    assert task is not None and not task.cancelling and task.waiting_reason is None
    await send(tracker, TaskCancel.now(task_id="v1"))

    async def cancelling() -> bool:
        task = await task_getter(client, "v1")()
        return task is not None and task.cancelling

    await eventually(cancelling)
    await send(tracker, TaskUpdate.now(task_id="v1", status="KILLED"))
    await eventually(status_is(client, "v1", "KILLED"))
    assert not await cancelling()


async def test_orphan_updates_are_not_tasks_until_submitted_and_expire(
    settings: TrackerSettings, cleanup: Cleanup, amqp: aio_pika.abc.AbstractConnection
) -> None:
    tracker = TaskTracker(dataclasses.replace(settings, orphan_ttl=0.5))
    cleanup.services.append(tracker.service)
    await tracker.service.app.start()
    try:
        async with Requester(settings.amqp_url, tracker.service.names) as client:
            await send(tracker, TaskUpdate.now(task_id="never", status="RUNNING"))
            await send(tracker, TaskCancel.now(task_id="ghost"))
            await send(tracker, TaskUpdate.now(task_id="late", status="RUNNING"))
            await send(tracker, TaskSubmit.now(task_id="seen", kind="demo"))
            await eventually(task_getter(client, "seen"))
            for orphan in ("never", "ghost", "late"):
                with pytest.raises(RemoteError, match="no such task"):
                    await client.request(TaskGet(task_id=orphan), TaskGetReply)
            listed = await client.request(TaskList(), TaskListReply)
            assert [t.id for t in listed.tasks] == ["seen"]
            # The submit may come after its updates: then it is a task, with their news.
            await send(tracker, TaskSubmit.now(task_id="late", kind="demo"))
            await eventually(status_is(client, "late", "RUNNING"))
            await asyncio.sleep(0.6)
            await tracker.sweep()
            for orphan in ("never", "ghost"):
                assert await tracker.store.get(orphan) is None
            assert await tracker.store.get("late") is not None
    finally:
        await tracker.service.app.stop()


async def test_oversized_params_and_results_are_dead_lettered(
    tracker: TaskTracker, client: Requester, amqp: aio_pika.abc.AbstractConnection
) -> None:
    names = tracker.service.names
    blob = "x" * MAX_JSON_BYTES  # encoded with its quotes: just over the limit
    submit = msgspec.to_builtins(TaskSubmit.now(task_id="big", kind="demo"))
    update = msgspec.to_builtins(TaskUpdate.now(task_id="big", status="SUCCESS"))
    for routing_key, body in (
        ("tasks.submit", {**submit, "params": {"blob": blob}}),
        ("tasks.update", {**update, "result": blob}),
    ):
        await publish(
            tracker.service.broker, names, msgspec.json.encode(body), routing_key=routing_key
        )
    dead = await drain(amqp, names.dead_letter_queue("task_tracker"), expect=2)
    assert {d.headers[ERROR_KIND_HEADER] for d in dead} == {"malformed"}
    errors = sorted(str(d.headers[ERROR_HEADER]) for d in dead)
    assert "`params` is" in errors[0] or "`params` is" in errors[1]
    assert any("`result` is" in e and "limit is 65536 bytes" in e for e in errors)
    assert await task_getter(client, "big")() is None


async def test_events_are_split_to_stay_under_the_message_size_limit(
    settings: TrackerSettings, cleanup: Cleanup, amqp: aio_pika.abc.AbstractConnection
) -> None:
    limit = 20_000
    tracker = TaskTracker(dataclasses.replace(settings, max_message_bytes=limit))
    cleanup.services.append(tracker.service)
    await tracker.service.app.start()
    try:
        names = tracker.service.names
        watcher = await Listener.bind(amqp, names.exchange, "tasks.changed")
        # Forty tasks of ~9 KB each, committed in few batches: no event may exceed the limit.
        submits = [
            TaskSubmit.now(task_id=f"p{n:02d}", kind="demo", params={"blob": "y" * 9000})
            for n in range(40)
        ]
        await publish_many(settings.amqp_url, names, submits)

        def announced() -> set[str]:
            return {t.id for e in watcher.decoded(TasksChanged) for t in e.tasks}

        await eventually(lambda: len(announced()) == 40)
        assert max(len(b) for b in watcher.bodies) <= limit
        assert len(watcher.bodies) >= 20  # two ~9 KB views per event at most
    finally:
        await tracker.service.app.stop()


async def test_the_sweep_examines_every_stalled_task_however_many(
    tracker: TaskTracker, amqp: aio_pika.abc.AbstractConnection
) -> None:
    # More stalled tasks than one page of the sweep (500 by default) holds. None of them may
    # be silent long enough to be given up instead, however slow the machine is today.
    tracker.settings = replace(tracker.settings, give_up_after=600.0)
    stalled = tracker.settings.sweep_page_size + 20
    names = tracker.service.names
    worker = await Listener.bind(amqp, names.exchange, "page.work.do")
    command = DrivingCommand(routing_key="page.work.do")
    await publish_many(
        tracker.settings.amqp_url,
        names,
        [TaskSubmit.now(task_id=f"w{n:03d}", kind="demo", command=command) for n in range(stalled)],
    )
    await eventually(lambda: len(worker.bodies) == stalled)
    await asyncio.sleep(tracker.settings.stall_after + 0.1)
    assert await tracker.sweep() == stalled  # every one, in one sweep
    await eventually(lambda: len(worker.bodies) == 2 * stalled)


async def test_follow_ups_left_by_a_crash_are_published_at_start(
    settings: TrackerSettings, cleanup: Cleanup, amqp: aio_pika.abc.AbstractConnection
) -> None:
    # A tracker that died between its commit and its publish left an outbox row behind.
    crashed = open_store(settings.database_url, settings.table_prefix)
    async with crashed:
        command = DrivingCommand(routing_key="left.work.do", body={"n": 1})
        submit = TaskSubmit(task_id="left", kind="demo", command=command, submitted_at=T0)
        applied = await crashed.apply([submit], datetime.now(UTC) - timedelta(seconds=5))
        assert [f.purpose for f in applied.follow_ups] == ["drive"]
    tracker = TaskTracker(settings)
    cleanup.services.append(tracker.service)
    # The worker is there before the tracker starts (its exchange too, as it declares it).
    channel = await amqp.channel()
    exchange = tracker.service.names.exchange
    await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    worker = await Listener.bind(amqp, exchange, "left.work.do")
    await tracker.service.app.start()
    try:
        await eventually(lambda: worker.bodies)
        assert msgspec.json.decode(worker.bodies[0]) == {"n": 1, "task_id": "left"}
        await asyncio.sleep(0.3)
        assert len(worker.bodies) == 1
        assert await tracker.publish_leftovers() == 0  # published once, then deleted
    finally:
        await tracker.service.app.stop()


async def test_a_task_with_expected_items_ends_success_with_their_counts(
    tracker: TaskTracker, client: Requester
) -> None:
    names = tracker.service.names
    command = DrivingCommand(routing_key="count.work.do")
    outcomes = [
        ItemOutcome(item_key=f"d{n}", outcome="SUCCESS", detail=("created", "unchanged")[n % 2])
        for n in range(9)
    ] + [ItemOutcome(item_key="d9", outcome="ERRORED", message="422: bad licence")]
    await publish_many(
        tracker.settings.amqp_url,
        names,
        [
            TaskSubmit.now(task_id="c1", kind="hf-to-aiod", command=command),
            TaskUpdate.now(task_id="c1", status="RUNNING"),
            *(TaskUpdate.now(task_id="c1", items=[o]) for o in outcomes[:5]),
            TaskUpdate.now(task_id="c1", items_expected=10, result={"discovered": 10}),
            *(TaskUpdate.now(task_id="c1", items=[o]) for o in outcomes[5:]),
        ],
        in_flight=1,  # in order: the completion must not depend on it, but the test reads better
    )
    await eventually(status_is(client, "c1", "SUCCESS"))
    reply = await client.request(TaskGet(task_id="c1", include_items=True), TaskGetReply)
    assert reply.task is not None
    assert reply.task.result == {
        "discovered": 10,
        "created": 5,
        "unchanged": 4,
        "failed": 1,
        "skipped": 0,
    }
    details = {item.item_key: item.detail for item in reply.items}
    assert details["d0"] == "created" and details["d1"] == "unchanged" and details["d9"] is None
