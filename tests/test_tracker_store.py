"""The task stores (SQLite and PostgreSQL) against one behaviour suite."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from services.task_tracker.domain import (
    Change,
    FollowUp,
    ItemRecord,
    TaskRecord,
    mark_driven,
    mark_killed_by_tracker,
    mark_undeliverable,
)
from services.task_tracker.store import Applied, SweepRules, TaskStore, open_store
from services.task_tracker.store.sqlite import SqliteTaskStore
from shared.contracts.tasks import (
    DrivingCommand,
    ItemOutcome,
    TaskCancel,
    TaskStatus,
    TaskSubmit,
    TaskUpdate,
)

POSTGRES_URL = os.environ.get(
    "FERRY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOW = datetime(2024, 5, 1, 13, 0, tzinfo=UTC)
COMMAND = DrivingCommand(routing_key="work.run", body={"x": 1})

StoreFactory = Callable[[], AsyncIterator[TaskStore]]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def _postgres_reachable() -> str | None:
    try:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc}"
    await conn.close()
    return None


class Stores:
    """Opens stores of one backend; several may share a database (the shuffle test)."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self.opened: list[tuple[TaskStore, str]] = []

    async def new(self) -> TaskStore:
        name = "t" + uuid.uuid4().hex[:12] + "_"
        if self.backend == "sqlite":
            store = open_store(f"sqlite:///{self.tmp_path / name}.db")
        else:
            store = open_store(POSTGRES_URL, table_prefix=name)
        await store.open()
        self.opened.append((store, name))
        return store

    async def close(self) -> None:
        for store, _ in self.opened:
            await store.close()
        if self.backend == "postgres":
            conn = await asyncpg.connect(POSTGRES_URL)
            try:
                for _, name in self.opened:
                    await conn.execute(
                        f"DROP TABLE IF EXISTS {name}tasks, {name}task_items, {name}task_outbox"
                    )
            finally:
                await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    if request.param == "postgres" and (reason := await _postgres_reachable()):
        pytest.skip(reason)
    stores = Stores(request.param, tmp_path)
    try:
        yield stores
    finally:
        await stores.close()


@pytest.fixture
async def store(stores: Stores) -> TaskStore:
    return await stores.new()


def submit(task_id: str, seconds: float = 0, **fields: Any) -> TaskSubmit:
    fields.setdefault("kind", "k")
    return TaskSubmit(task_id=task_id, submitted_at=at(seconds), **fields)


def update(task_id: str, seconds: float, **fields: Any) -> TaskUpdate:
    return TaskUpdate(task_id=task_id, observed_at=at(seconds), **fields)


def item(key: str, outcome: str, message: str | None = None) -> ItemOutcome:
    return ItemOutcome(item_key=key, outcome=outcome, message=message)  # type: ignore[arg-type]


def scenario() -> list[Change]:
    """A mixed history of a few tasks, with duplicates and equal timestamps."""
    return [
        submit("a", command=COMMAND, params={"p": 1}),
        update("a", 1, status="RUNNING", end_value=3, items=[item("x", "ERRORED", "boom")]),
        update("a", 2, progress_value=1, items=[item("x", "SUCCESS"), item("y", "SKIPPED")]),
        update("a", 2, progress_message="half way", items=[item("z", "ERRORED", "bad")]),
        update("a", 3, status="SUCCESS", result={"rows": 10}),
        update("b", 1, status="RUNNING", progress_value=4),
        submit("b", 0, kind="other", name="bee"),
        update("b", 1, progress_message="tie-one"),
        update("b", 1, progress_message="tie-two"),
        submit("c", 5),
        TaskCancel(task_id="c", reason="stop", requested_at=at(6)),
        TaskCancel(task_id="b", reason="later", requested_at=at(7)),
        update("d", 2, status="QUEUED"),
        submit("a", 9, name="late duplicate"),
        update("a", 1, status="RUNNING", end_value=3, items=[item("x", "ERRORED", "boom")]),
    ]


async def snapshot(store: TaskStore, ids: Sequence[str]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for task_id in ids:
        record = await store.get(task_id)
        assert record is not None
        items = await store.items(task_id)
        view = msgspec.to_builtins(record.to_view())
        # Whether a task was driven before it ended depends on arrival order: bookkeeping,
        # not part of the merged state.
        del view["drive_attempts"]
        state[task_id] = [view, msgspec.to_builtins([i.to_view() for i in items])]
    return state


async def test_apply_returns_one_snapshot_per_touched_task(store: TaskStore) -> None:
    records = (await store.apply(scenario(), NOW)).records
    assert [r.id for r in records] == ["a", "b", "c", "d"]
    by_id = {r.id: r for r in records}
    a = by_id["a"]
    assert a.status is TaskStatus.SUCCESS
    assert a.name == ""  # the earlier submit wins
    assert (a.items_total, a.items_succeeded, a.items_skipped, a.items_failed) == (3, 1, 1, 1)
    assert a.result == {"rows": 10}
    assert a.to_view().driver == "work.run"
    assert by_id["b"].kind == "other"
    assert by_id["b"].progress_message == "tie-two"
    assert by_id["b"].should_be_killed
    assert by_id["b"].status is TaskStatus.KILLED  # no command either: no driver to wait for
    assert by_id["c"].status is TaskStatus.KILLED  # no command: nothing would ever run it
    assert by_id["d"].kind is None
    for record in records:
        assert record == await store.get(record.id)
        assert record.touched_at == NOW
    assert await store.apply([], NOW) == Applied()


async def test_get_and_items(store: TaskStore) -> None:
    assert await store.get("missing") is None
    assert await store.items("missing") == []
    await store.apply(scenario(), NOW)
    items = await store.items("a")
    assert [(i.item_key, i.outcome, i.message) for i in items] == [
        ("x", "SUCCESS", None),
        ("y", "SKIPPED", None),
        ("z", "ERRORED", "bad"),
    ]
    assert items[0] == ItemRecord(
        task_id="a", item_key="x", outcome="SUCCESS", message=None, observed_at=at(2)
    )
    assert len(await store.items("a", limit=2)) == 2


async def test_reapplying_a_batch_changes_nothing(store: TaskStore) -> None:
    ids = ["a", "b", "c", "d"]
    first = await store.apply(scenario(), NOW)
    before = await snapshot(store, ids)
    again = await store.apply(scenario(), NOW)
    assert again.records == first.records
    # Side effects are decided once: the first cancels of b and c (a ended in the batch,
    # before it was ever driven).
    assert sorted((f.task_id, f.purpose) for f in first.follow_ups) == [
        ("b", "cancelled"),
        ("c", "cancelled"),
    ]
    assert again.follow_ups == []
    assert await snapshot(store, ids) == before
    await store.apply(scenario()[::-1], NOW + timedelta(minutes=1))
    assert await snapshot(store, ids) == before


async def test_shuffled_batches_give_the_same_final_state(stores: Stores) -> None:
    ids = ["a", "b", "c", "d"]
    reference = await stores.new()
    await reference.apply(scenario(), NOW)
    expected = await snapshot(reference, ids)
    rng = random.Random(7)
    for _ in range(3):
        shuffled = await stores.new()
        changes = scenario() + rng.sample(scenario(), 5)
        rng.shuffle(changes)
        cuts = sorted(rng.sample(range(1, len(changes)), 3))
        for start, end in zip([0, *cuts], [*cuts, len(changes)], strict=True):
            await shuffled.apply(changes[start:end], NOW)
        assert await snapshot(shuffled, ids) == expected


async def test_a_large_batch_with_many_items(store: TaskStore) -> None:
    changes: list[Change] = [submit(f"bulk-{n:03d}", n) for n in range(300)]
    changes += [
        update(
            f"bulk-{n % 300:03d}", 10 + n, items=[item(f"i{n}", "SUCCESS"), item("s", "SKIPPED")]
        )
        for n in range(600)
    ]
    records = (await store.apply(changes, NOW)).records
    assert len(records) == 300
    assert all(r.items_total == 3 and r.items_skipped == 1 for r in records)
    assert all(r.to_view().progress_value == 3 for r in records)


async def test_list_filters_and_pages(store: TaskStore) -> None:
    changes: list[Change] = []
    for n in range(25):
        changes.append(submit(f"t{n:02d}", n, kind="even" if n % 2 == 0 else "odd"))
        if n % 3 == 0:
            changes.append(update(f"t{n:02d}", 100, status="SUCCESS"))
    changes.append(update("kindless", 50, status="RUNNING"))  # an orphan: not listed
    await store.apply(changes, NOW)

    everything = await page_through(store, None, None, limit=4)
    assert everything == [f"t{n:02d}" for n in range(24, -1, -1)]

    evens = await page_through(store, None, "even", limit=3)
    assert evens == [f"t{n:02d}" for n in range(24, -1, -2)]
    done = await page_through(store, {TaskStatus.SUCCESS}, None, limit=2)
    assert done == [f"t{n:02d}" for n in range(24, -1, -1) if n % 3 == 0]
    odd_open = await page_through(store, {TaskStatus.QUEUED, TaskStatus.RUNNING}, "odd", limit=5)
    assert odd_open == [f"t{n:02d}" for n in range(23, -1, -2) if n % 3 != 0]
    assert await page_through(store, {TaskStatus.KILLED}, None, limit=5) == []

    whole, cursor = await store.list(None, None, limit=100, cursor=None)
    assert cursor is None
    assert len(whole) == 25
    with pytest.raises(ValueError, match="invalid cursor"):
        await store.list(None, None, limit=5, cursor="not a cursor")


async def page_through(
    store: TaskStore, statuses: set[TaskStatus] | None, kind: str | None, limit: int
) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        records, cursor = await store.list(statuses, kind, limit, cursor)
        assert len(records) <= limit
        ids.extend(r.id for r in records)
        pages += 1
        if cursor is None:
            break
    assert pages == max(1, -(-len(ids) // limit))  # no empty trailing page
    return ids


RULES = SweepRules(stall_after=timedelta(minutes=5), give_up_after=timedelta(hours=2))


async def test_the_sweep_redrives_kills_and_gives_up_under_the_row_lock(store: TaskStore) -> None:
    hour_ago = NOW - timedelta(hours=1)
    await store.apply([submit("old", command=COMMAND), submit("done")], hour_ago)
    await store.apply([update("done", 1, status="SUCCESS")], hour_ago)
    await store.apply([submit("fresh", command=COMMAND)], NOW)
    await store.apply([submit("cancelled", command=COMMAND)], hour_ago)
    await store.apply([TaskCancel(task_id="cancelled", requested_at=at(1))], hour_ago)
    await store.apply([submit("silent", command=COMMAND)], NOW - timedelta(hours=3))
    await store.apply([update("orphan", 1, status="RUNNING")], NOW - timedelta(hours=3))

    swept = await store.sweep(NOW, RULES)
    by_id = {r.id: r for r in swept.records}
    assert sorted(by_id) == ["cancelled", "old", "silent"]
    assert (by_id["old"].drive_attempts, by_id["old"].driven_at) == (2, NOW)
    assert by_id["cancelled"].status is TaskStatus.KILLED
    assert by_id["silent"].status is TaskStatus.ERRORED
    assert [(f.task_id, f.purpose) for f in swept.follow_ups] == [("old", "drive")]
    assert all(f.outbox_id for f in swept.follow_ups)
    for record in swept.records:
        assert record == await store.get(record.id)
    # Decided on the row as it now is: just re-driven, so not again.
    assert await store.sweep(NOW + timedelta(minutes=1), RULES) == Applied()


async def test_tracker_changes_are_merged_into_the_stored_row(store: TaskStore) -> None:
    await store.apply([submit("old", command=COMMAND)], NOW)
    stale = await store.get("old")
    assert stale is not None
    # Meanwhile a worker reports; the tracker's stale copy must not erase that.
    await store.apply([update("old", 5, status="RUNNING", progress_value=2)], NOW)
    (saved,) = await store.save_tracker_changes([mark_undeliverable("old", "work.run", NOW)])
    assert saved.status is TaskStatus.RUNNING
    assert saved.progress_value == 2
    assert saved.undeliverable_reason == "no consumer for work.run"
    assert saved == await store.get("old")
    killed = mark_killed_by_tracker(saved, NOW + timedelta(hours=1), "killed by the tracker")
    (saved_again,) = await store.save_tracker_changes([killed, mark_driven(stale, NOW)])
    assert saved_again.status is TaskStatus.KILLED
    assert saved_again.progress_message == "killed by the tracker"
    assert saved_again.drive_attempts == 2
    assert saved_again == await store.get("old")
    listed, _ = await store.list({TaskStatus.KILLED}, None, limit=10, cursor=None)
    assert [r.id for r in listed] == ["old"]
    assert await store.save_tracker_changes([]) == []


async def test_save_tracker_changes_of_an_unknown_task_stores_it(store: TaskStore) -> None:
    record = mark_driven(TaskRecord(id="ghost", updated_at=NOW, touched_at=NOW), NOW)
    (saved,) = await store.save_tracker_changes([record])
    assert saved == record == await store.get("ghost")


async def test_reopening_keeps_the_data(stores: Stores, tmp_path: Path) -> None:
    if stores.backend == "sqlite":
        url, prefix = f"sqlite:///{tmp_path / 'reopen.db'}", ""
    else:
        prefix = "t" + uuid.uuid4().hex[:12] + "_"
        url = POSTGRES_URL
    first = open_store(url, table_prefix=prefix)
    async with first:
        await first.apply(scenario(), NOW)
    second = open_store(url, table_prefix=prefix)
    async with second:
        assert (await second.get("a")) is not None
    stores.opened.append((second, prefix))  # so the PostgreSQL tables are dropped


def test_open_store_picks_the_backend_from_the_url(tmp_path: Path) -> None:
    assert type(open_store("sqlite:///:memory:")).__name__ == "SqliteTaskStore"
    assert type(open_store(f"sqlite:///{tmp_path}/x.db")).__name__ == "SqliteTaskStore"
    assert type(open_store("postgres://u@h/db")).__name__ == "PostgresTaskStore"
    assert type(open_store("postgresql://u@h/db")).__name__ == "PostgresTaskStore"
    with pytest.raises(ValueError, match="'mysql'"):
        open_store("mysql://u@h/db")
    with pytest.raises(ValueError, match="table prefix"):
        open_store("sqlite:///:memory:", table_prefix="x; DROP TABLE y")


async def test_sqlite_in_memory_and_relative_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_store("sqlite:///:memory:") as memory:
        await memory.apply([submit("m")], NOW)
        assert (await memory.get("m")) is not None
    monkeypatch.chdir(tmp_path)
    async with open_store("sqlite:///relative.db") as relative:
        await relative.apply([submit("r")], NOW)
    assert (tmp_path / "relative.db").exists()


async def test_concurrent_writers_on_one_database_lose_nothing(
    stores: Stores, tmp_path: Path
) -> None:
    """Two stores on one database (two tracker replicas) applying overlapping batches at once:
    no deadlock, no lost update, and the same final state as one writer."""
    if stores.backend == "sqlite":
        url, prefix = f"sqlite:///{tmp_path / 'shared.db'}", ""
    else:
        url, prefix = POSTGRES_URL, "t" + uuid.uuid4().hex[:12] + "_"
    replicas = [open_store(url, table_prefix=prefix) for _ in range(2)]
    for replica in replicas:
        await replica.open()
        stores.opened.append((replica, prefix))
    rng = random.Random(3)
    changes: list[Change] = [
        update(f"c{rng.randrange(8)}", n, progress_value=n, items=[item(f"i{n % 13}", "SUCCESS")])
        for n in range(400)
    ]
    batches = [changes[n : n + 20] for n in range(0, len(changes), 20)]
    rng.shuffle(batches)
    await asyncio.gather(
        *(replicas[n % 2].apply(batch[::-1], NOW) for n, batch in enumerate(batches))
    )
    reference = await stores.new()
    await reference.apply(changes, NOW)
    ids = sorted({c.task_id for c in changes})
    assert await snapshot(replicas[0], ids) == await snapshot(reference, ids)


# --- the outbox, the sweep's pages and locks, orphans ------------------------------------


async def test_follow_ups_are_dispatched_once_then_deleted(store: TaskStore) -> None:
    applied = await store.apply([submit("o1", command=COMMAND)], NOW)
    (drive,) = applied.follow_ups
    assert (drive.task_id, drive.purpose, drive.routing_key) == ("o1", "drive", "work.run")
    assert msgspec.json.decode(drive.body) == {"x": 1, "task_id": "o1"}
    sent: list[FollowUp] = []

    async def fail(follow_ups: Sequence[FollowUp]) -> list[int]:
        return []  # the broker did not confirm: the row stays

    async def send(follow_ups: Sequence[FollowUp]) -> list[int]:
        sent.extend(follow_ups)
        return [f.outbox_id for f in follow_ups]

    assert await store.dispatch_outbox(fail, ids=[drive.outbox_id]) == 1
    assert await store.dispatch_outbox(send, older_than=NOW + timedelta(seconds=1)) == 1
    assert sent == [drive]
    assert await store.dispatch_outbox(send, older_than=NOW + timedelta(seconds=1)) == 0
    assert await store.dispatch_outbox(send, ids=[drive.outbox_id]) == 0


async def test_two_replicas_never_both_publish_an_outbox_row(
    stores: Stores, tmp_path: Path
) -> None:
    if stores.backend == "sqlite":
        pytest.skip("one process per SQLite store (the tracker refuses a second one)")
    replicas = await shared_database(stores, tmp_path)
    await replicas[0].apply([submit(f"o{n}", command=COMMAND) for n in range(40)], NOW)
    sent: list[str] = []

    async def slow_send(follow_ups: Sequence[FollowUp]) -> list[int]:
        await asyncio.sleep(0.05)  # a publish in flight while the other replica looks
        sent.extend(f.task_id for f in follow_ups)
        return [f.outbox_id for f in follow_ups]

    later = NOW + timedelta(seconds=1)
    for _ in range(3):
        await asyncio.gather(
            *(r.dispatch_outbox(slow_send, older_than=later, limit=15) for r in replicas)
        )
    assert sorted(sent) == sorted(f"o{n}" for n in range(40))


async def shared_database(stores: Stores, tmp_path: Path) -> list[TaskStore]:
    if stores.backend == "sqlite":
        url, prefix = f"sqlite:///{tmp_path / 'shared.db'}", ""
    else:
        url, prefix = POSTGRES_URL, "t" + uuid.uuid4().hex[:12] + "_"
    replicas = [open_store(url, table_prefix=prefix) for _ in range(2)]
    for replica in replicas:
        await replica.open()
        stores.opened.append((replica, prefix))
    return replicas


async def test_the_sweep_examines_every_stalled_task_in_pages(store: TaskStore) -> None:
    # More candidates than a page, all equally old: before keyset paging the first page
    # was examined again and again and the rest never.
    long_ago = NOW - timedelta(hours=1)
    await store.apply([submit(f"s{n:02d}", command=COMMAND) for n in range(23)], long_ago)
    rules = dataclasses.replace(RULES, page_size=5)
    swept = await store.sweep(NOW, rules)
    assert sorted(r.id for r in swept.records) == [f"s{n:02d}" for n in range(23)]
    assert all(r.drive_attempts == 2 for r in swept.records)
    assert len(swept.follow_ups) == 23


async def test_two_replicas_sweeping_at_once_redrive_each_task_once(
    stores: Stores, tmp_path: Path
) -> None:
    replicas = await shared_database(stores, tmp_path)
    long_ago = NOW - timedelta(hours=1)
    await replicas[0].apply([submit(f"s{n:03d}", command=COMMAND) for n in range(120)], long_ago)
    rules = dataclasses.replace(RULES, page_size=7)
    results = await asyncio.gather(*(r.sweep(NOW, rules) for r in replicas))
    driven = sorted(f.task_id for result in results for f in result.follow_ups)
    assert driven == [f"s{n:03d}" for n in range(120)]
    for n in range(120):
        record = await replicas[1].get(f"s{n:03d}")
        assert record is not None and record.drive_attempts == 2


async def test_orphans_past_their_time_are_deleted(store: TaskStore) -> None:
    old = NOW - timedelta(hours=30)
    await store.apply(
        [update("orphan", 1, status="RUNNING", items=[item("i", "SUCCESS")]), submit("real")],
        old,
    )
    await store.apply([update("young", 1, status="RUNNING")], NOW)
    await store.apply([update("adopted", 1, status="RUNNING")], old)
    await store.apply([submit("adopted")], old)
    assert await store.delete_orphans(NOW - timedelta(hours=24)) == 1
    assert await store.get("orphan") is None
    assert await store.items("orphan") == []
    for kept in ("real", "young", "adopted"):
        assert await store.get(kept) is not None


# --- SQLite durability and the event loop ---------------------------------------------------


async def test_sqlite_commits_are_durable_before_they_are_acked(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'durable.db'}")
    async with store:
        assert isinstance(store, SqliteTaskStore)
        level = await store._run(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
        mode = await store._run(lambda conn: conn.execute("PRAGMA journal_mode").fetchone()[0])
    assert (level, mode) == (2, "wal")  # FULL: the WAL is fsynced at every commit


async def test_waiting_for_the_sqlite_lock_never_blocks_the_event_loop(tmp_path: Path) -> None:
    # Another connection holds the write lock for a while (as a FULL or RESTART checkpoint
    # does): the store waits for it, the event loop must not.
    path = tmp_path / "locked.db"
    store = open_store(f"sqlite:///{path}")
    async with store:
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        loop = asyncio.get_running_loop()
        release = loop.call_later(0.5, holder.execute, "COMMIT")
        gaps: list[float] = []

        async def tick() -> None:
            last = loop.time()
            for _ in range(100):
                await asyncio.sleep(0.01)
                gaps.append(loop.time() - last)
                last = loop.time()

        ticking = asyncio.create_task(tick())
        await asyncio.sleep(0.02)  # the ticker is running
        await store.apply([submit("waited")], NOW)
        ticking.cancel()
        release.cancel()
        holder.close()
        assert await store.get("waited") is not None
    assert gaps and max(gaps) < 0.2, max(gaps)


async def test_sqlite_reads_a_batch_of_items_by_key_whatever_the_task_holds(
    tmp_path: Path,
) -> None:
    """The work of applying ten item outcomes does not grow with the items a task already
    has (it once scanned the whole items table on every batch: 100,000 items made the
    tracker of a sync four times slower). Counted in SQLite VM steps, not seconds."""
    store = SqliteTaskStore(str(tmp_path / "tasks.db"))
    await store.open()
    try:
        await store.apply([submit("big")], NOW)
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1
            return 0  # go on

        async def ten_more(start: int) -> int:
            nonlocal steps
            batch = [item(f"k{n:06}", "SUCCESS") for n in range(start, start + 10)]
            steps = 0
            store._db.set_progress_handler(count, 100)
            try:
                await store.apply([update("big", start, items=batch)], NOW)
            finally:
                store._db.set_progress_handler(None, 0)
            return steps

        await store.apply(
            [update("big", 1, items=[item(f"a{n}", "SUCCESS") for n in range(200)])], NOW
        )
        few = await ten_more(1_000)
        many = [item(f"b{n:06}", "SUCCESS") for n in range(20_000)]
        for start in range(0, len(many), 5_000):
            await store.apply([update("big", 2, items=many[start : start + 5_000])], NOW)
        lots = await ten_more(2_000)
        assert few > 0
        assert lots < 3 * few, (few, lots)  # a scan of 20,000 rows is ~100 times the work
    finally:
        await store.close()
