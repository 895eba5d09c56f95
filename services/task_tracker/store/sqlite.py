"""The SQLite task store: stdlib sqlite3, in WAL mode with synchronous=FULL.

Durability: a commit's WAL frames are fsynced before COMMIT returns, so an ack means the
change survives a power loss (synchronous=NORMAL, as before, could lose the last commits).

The event loop never waits for a lock. Statements run on the loop's thread on a connection
with no busy timeout: when the database is locked by someone else, the statement fails at
once and the same work is handed to a dedicated thread with a connection of its own, which
waits for the lock there. Doing every batch on that thread instead was measured
(bench/tracker.py, 1,000 updates/s): p99 publish-to-visible went from 25 ms to 565 ms, the
two threads trading the GIL for every batch; the fsync of a FULL commit on the loop costs
well under a millisecond here. The WAL checkpoint runs on a thread and connection of its
own (see `_Checkpointer`); when it takes the writer's lock, the loop does not wait for it.

One process only: this backend keeps no locks between processes beyond SQLite's own, so
the tracker refuses to run it beside another consumer of its queues (see app.py).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from services.task_tracker.domain import (
    Change,
    FollowUp,
    ItemRecord,
    TaskRecord,
    plan_batch,
    sweep_task,
    touched_item_keys,
)
from services.task_tracker.store.base import (
    NON_TERMINAL,
    Applied,
    Sender,
    StoreUnavailable,
    SweepRules,
    TaskStore,
    check_prefix,
    decode_cursor,
    decode_record,
    encode_record,
    from_micros,
    page,
    remerge,
    sort_at,
    to_micros,
)
from shared.contracts.tasks import TaskStatus

# Stay well below SQLite's host-parameter limit when building IN lists.
_CHUNK = 400

R = TypeVar("R")


class SqliteTaskStore(TaskStore):
    def __init__(self, path: str, table_prefix: str = "") -> None:
        prefix = check_prefix(table_prefix)
        self._path = path
        self._tasks = f"{prefix}tasks"
        self._items = f"{prefix}task_items"
        self._outbox = f"{prefix}task_outbox"
        self._conn: sqlite3.Connection | None = None  # the loop's: never waits for a lock
        self._waiting_conn: sqlite3.Connection | None = None  # the thread's: waits for it
        self._thread: ThreadPoolExecutor | None = None
        self._checkpointer: _Checkpointer | None = None
        # Outbox rows being published by this process: the leftover pass leaves them alone.
        self._claimed: set[int] = set()

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the task store is not open")
        return self._conn

    async def _run(self, func: Callable[..., R], *args: object) -> R:
        """`func(connection, *args)`: on the loop if the database is free, else on the
        store's thread, which waits for the lock. `func` must be safe to run again after a
        failure (every write is one transaction, rolled back on error)."""
        if self._thread is None or self._waiting_conn is None:
            raise RuntimeError("the task store is not open")
        try:
            try:
                return func(self._db, *args)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._thread, func, self._waiting_conn, *args)
        except sqlite3.OperationalError as exc:  # disk I/O error, disk full, lock timeout...
            raise StoreUnavailable(f"SQLite: {exc}") from exc

    async def open(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-store")
        self._conn = self._connect(busy_timeout_ms=0)
        if self._path == ":memory:":
            self._waiting_conn = self._conn  # one database per connection: share it
        else:
            self._waiting_conn = self._connect(busy_timeout_ms=10_000)
            self._checkpointer = _Checkpointer(self._path)
            self._checkpointer.start()

    def _connect(self, busy_timeout_ms: int) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread=False:
        # the waiting connection is used on the store's thread, made and closed on the loop.
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit's WAL frames are fsynced before COMMIT returns, so an ack means
        # the change survives a power loss (NORMAL loses the last commits).
        conn.execute("PRAGMA synchronous=FULL")
        if self._path != ":memory:":
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it
        t, i, o = self._tasks, self._items, self._outbox
        conn.executescript(
            f"""
            CREATE TABLE IF NOT EXISTS {t} (
                id TEXT PRIMARY KEY,
                kind TEXT,
                status TEXT NOT NULL,
                sort_at INTEGER NOT NULL,      -- epoch microseconds, see base.sort_at
                touched_at INTEGER NOT NULL,   -- epoch microseconds
                body BLOB NOT NULL             -- the whole TaskRecord, msgspec JSON
            );
            CREATE INDEX IF NOT EXISTS {t}_by_sort ON {t} (sort_at, id);
            CREATE INDEX IF NOT EXISTS {t}_by_kind ON {t} (kind, sort_at, id);
            CREATE INDEX IF NOT EXISTS {t}_by_status ON {t} (status, sort_at, id);
            CREATE INDEX IF NOT EXISTS {t}_sweep ON {t} (touched_at)
                WHERE status IN ('QUEUED', 'RUNNING');
            CREATE INDEX IF NOT EXISTS {t}_orphans ON {t} (touched_at) WHERE kind IS NULL;
            CREATE TABLE IF NOT EXISTS {i} (
                task_id TEXT NOT NULL,
                item_key TEXT NOT NULL,
                outcome TEXT NOT NULL,
                message TEXT,
                observed_at INTEGER NOT NULL,  -- epoch microseconds
                detail TEXT,
                PRIMARY KEY (task_id, item_key)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS {o} (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                task_id TEXT NOT NULL,
                purpose TEXT NOT NULL,
                routing_key TEXT NOT NULL,
                body BLOB NOT NULL,
                created_at INTEGER NOT NULL    -- epoch microseconds
            );
            """
        )
        # Item details came later: a database made before them gets the column.
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({i})")}
        if "detail" not in columns:
            conn.execute(f"ALTER TABLE {i} ADD COLUMN detail TEXT")
        return conn

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        if self._waiting_conn is not None and self._waiting_conn is not self._conn:
            self._waiting_conn.close()
        self._waiting_conn = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- writes ---------------------------------------------------------------------------

    async def apply(self, changes: Sequence[Change], now: datetime) -> Applied:
        if not changes:
            return Applied()
        return await self._run(self._apply, changes, now)

    def _apply(self, conn: sqlite3.Connection, changes: Sequence[Change], now: datetime) -> Applied:
        ids = sorted({change.task_id for change in changes})
        with _transaction(conn):
            records = self._load(conn, ids)
            items = self._load_items(conn, sorted(touched_item_keys(changes)))
            plan = plan_batch(changes, records, items, now)
            self._write(conn, plan.changed)
            conn.executemany(
                f"INSERT INTO {self._items}"
                " (task_id, item_key, outcome, message, observed_at, detail)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (task_id, item_key) DO UPDATE SET"
                " outcome = excluded.outcome, message = excluded.message,"
                " observed_at = excluded.observed_at, detail = excluded.detail",
                [
                    (
                        i.task_id,
                        i.item_key,
                        i.outcome,
                        i.message,
                        to_micros(i.observed_at),
                        i.detail,
                    )
                    for i in plan.items
                ],
            )
            follow_ups = self._record_follow_ups(conn, plan.follow_ups, now)
        return Applied(builtins.list(plan.records.values()), follow_ups)

    def _record_follow_ups(
        self, conn: sqlite3.Connection, follow_ups: Sequence[FollowUp], now: datetime
    ) -> builtins.list[FollowUp]:
        recorded = []
        for f in follow_ups:
            cursor = conn.execute(
                f"INSERT INTO {self._outbox} (task_id, purpose, routing_key, body, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (f.task_id, f.purpose, f.routing_key, f.body, to_micros(now)),
            )
            assert cursor.lastrowid is not None
            recorded.append(_with_id(f, cursor.lastrowid))
        return recorded

    async def save_tracker_changes(
        self, records: Sequence[TaskRecord]
    ) -> builtins.list[TaskRecord]:
        if not records:
            return []
        return await self._run(self._save, records)

    def _save(
        self, conn: sqlite3.Connection, records: Sequence[TaskRecord]
    ) -> builtins.list[TaskRecord]:
        with _transaction(conn):
            stored = self._load(conn, sorted({r.id for r in records}))
            merged = remerge(stored, records)
            self._write(conn, [r for r in merged.values() if r != stored.get(r.id)])
        return builtins.list(merged.values())

    def _load(self, conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, TaskRecord]:
        records: dict[str, TaskRecord] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(f"SELECT id, body FROM {self._tasks} WHERE id IN ({marks})", chunk)
            records.update((task_id, decode_record(body)) for task_id, body in rows)
        return records

    def _load_items(
        self, conn: sqlite3.Connection, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], ItemRecord]:
        items: dict[tuple[str, str], ItemRecord] = {}
        by_task: dict[str, list[str]] = {}
        for task_id, item_key in keys:
            by_task.setdefault(task_id, []).append(item_key)
        # One task at a time: `task_id = ? AND item_key IN (...)` is a primary-key search,
        # where `(task_id, item_key) IN (VALUES ...)` scans the whole table on every batch.
        for task_id, item_keys in by_task.items():
            for start in range(0, len(item_keys), _CHUNK):
                chunk = item_keys[start : start + _CHUNK]
                rows = conn.execute(
                    "SELECT task_id, item_key, outcome, message, observed_at, detail"
                    f" FROM {self._items}"
                    f" WHERE task_id = ? AND item_key IN ({','.join('?' * len(chunk))})",
                    [task_id, *chunk],
                )
                for row in rows:
                    item = _item(row)
                    items[(item.task_id, item.item_key)] = item
        return items

    def _write(self, conn: sqlite3.Connection, records: Sequence[TaskRecord]) -> None:
        conn.executemany(
            f"INSERT INTO {self._tasks} (id, kind, status, sort_at, touched_at, body)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
            " kind = excluded.kind, status = excluded.status, sort_at = excluded.sort_at,"
            " touched_at = excluded.touched_at, body = excluded.body",
            [
                (
                    r.id,
                    r.kind,
                    r.status.value,
                    to_micros(sort_at(r)),
                    to_micros(r.touched_at),
                    encode_record(r),
                )
                for r in records
            ],
        )

    # --- the sweep, the outbox, orphans -----------------------------------------------------

    async def sweep(self, now: datetime, rules: SweepRules) -> Applied:
        applied = Applied()
        after: tuple[int, str] = (-1, "")
        older_than = to_micros(now - rules.stall_after)
        while True:  # keyset pages: every candidate once, however many there are
            got, last, full = await self._run(self._sweep_page, now, rules, older_than, after)
            applied.extend(got)
            if not full or last is None:
                return applied
            after = last

    def _sweep_page(
        self,
        conn: sqlite3.Connection,
        now: datetime,
        rules: SweepRules,
        older_than: int,
        after: tuple[int, str],
    ) -> tuple[Applied, tuple[int, str] | None, bool]:
        with _transaction(conn):
            rows = conn.execute(
                f"SELECT touched_at, id, body FROM {self._tasks}"
                " WHERE status IN (?, ?) AND kind IS NOT NULL AND touched_at < ?"
                " AND (touched_at, id) > (?, ?) ORDER BY touched_at, id LIMIT ?",
                (*NON_TERMINAL, older_than, *after, rules.page_size),
            ).fetchall()
            changed: builtins.list[TaskRecord] = []
            follow_ups: builtins.list[FollowUp] = []
            for _, _, body in rows:
                verdict = sweep_task(
                    decode_record(body), now, rules.stall_after, rules.give_up_after
                )
                if verdict is not None:
                    changed.append(verdict[0])
                    follow_ups.extend(verdict[1])
            self._write(conn, changed)
            recorded = self._record_follow_ups(conn, follow_ups, now)
        last = (rows[-1][0], rows[-1][1]) if rows else None
        return Applied(changed, recorded), last, len(rows) == rules.page_size

    async def dispatch_outbox(
        self,
        send: Sender,
        *,
        ids: Sequence[int] | None = None,
        older_than: datetime | None = None,
        limit: int = 500,
    ) -> int:
        rows = await self._run(self._outbox_rows, ids, older_than, limit)
        claimed = [f for f in rows if f.outbox_id not in self._claimed]
        if not claimed:
            return 0
        claimed_ids = {f.outbox_id for f in claimed}
        self._claimed |= claimed_ids
        try:
            done = builtins.list(await send(claimed))
            if done:
                await self._run(self._delete_outbox, done)
        finally:
            self._claimed -= claimed_ids
        return len(claimed)

    def _outbox_rows(
        self,
        conn: sqlite3.Connection,
        ids: Sequence[int] | None,
        older_than: datetime | None,
        limit: int,
    ) -> builtins.list[FollowUp]:
        columns = f"SELECT id, task_id, purpose, routing_key, body FROM {self._outbox}"
        if ids is not None:
            rows = conn.execute(
                f"{columns} WHERE id IN ({','.join('?' * len(ids))}) ORDER BY id",
                builtins.list(ids),
            ).fetchall()
        else:
            before = to_micros(older_than) if older_than is not None else 2**62
            rows = conn.execute(
                f"{columns} WHERE created_at < ? ORDER BY id LIMIT ?", (before, limit)
            ).fetchall()
        return [
            FollowUp(task_id, purpose, routing_key, bytes(body), outbox_id=row_id)
            for row_id, task_id, purpose, routing_key, body in rows
        ]

    def _delete_outbox(self, conn: sqlite3.Connection, ids: Sequence[int]) -> None:
        with _transaction(conn):
            conn.executemany(f"DELETE FROM {self._outbox} WHERE id = ?", [(i,) for i in ids])

    async def delete_orphans(self, older_than: datetime) -> int:
        return await self._run(self._delete_orphans, to_micros(older_than))

    def _delete_orphans(self, conn: sqlite3.Connection, older_than: int) -> int:
        with _transaction(conn):
            ids = [
                task_id
                for (task_id,) in conn.execute(
                    f"SELECT id FROM {self._tasks} WHERE kind IS NULL AND touched_at < ?",
                    (older_than,),
                )
            ]
            conn.executemany(f"DELETE FROM {self._items} WHERE task_id = ?", [(i,) for i in ids])
            conn.executemany(f"DELETE FROM {self._tasks} WHERE id = ?", [(i,) for i in ids])
        return len(ids)

    # --- reads ----------------------------------------------------------------------------

    async def get(self, task_id: str) -> TaskRecord | None:
        return (await self._run(self._load, [task_id])).get(task_id)

    async def items(self, task_id: str, limit: int = 1000) -> builtins.list[ItemRecord]:
        sql = (
            f"SELECT task_id, item_key, outcome, message, observed_at, detail FROM {self._items}"
            " WHERE task_id = ? ORDER BY item_key LIMIT ?"
        )

        def fetch(conn: sqlite3.Connection) -> builtins.list[ItemRecord]:
            return [_item(row) for row in conn.execute(sql, (task_id, limit)).fetchall()]

        return await self._run(fetch)

    async def list(
        self,
        statuses: set[TaskStatus] | None,
        kind: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[builtins.list[TaskRecord], str | None]:
        where: builtins.list[str] = ["kind IS NOT NULL"]  # orphans are not tasks (yet)
        args: builtins.list[object] = []
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args.extend(sorted(s.value for s in statuses))
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if cursor is not None:
            after_at, after_id = decode_cursor(cursor)
            where.append("(sort_at, id) < (?, ?)")
            args.extend((to_micros(after_at), after_id))
        sql = (
            f"SELECT body FROM {self._tasks} WHERE {' AND '.join(where)}"
            " ORDER BY sort_at DESC, id DESC LIMIT ?"
        )
        args.append(limit + 1)  # one extra row tells whether there is a next page

        def fetch(conn: sqlite3.Connection) -> builtins.list[TaskRecord]:
            return [decode_record(body) for (body,) in conn.execute(sql, args).fetchall()]

        return page(await self._run(fetch), limit)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """The database is locked by another connection (as opposed to broken)."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _with_id(follow_up: FollowUp, outbox_id: int) -> FollowUp:
    return FollowUp(
        follow_up.task_id, follow_up.purpose, follow_up.routing_key, follow_up.body, outbox_id
    )


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front: the read-merge-write cannot interleave with
    # another writer (another process on the same file, say).
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # the failure may have ended it already
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _item(row: tuple[str, str, str, str | None, int, str | None]) -> ItemRecord:
    task_id, item_key, outcome, message, observed_at, detail = row
    return ItemRecord(
        task_id=task_id,
        item_key=item_key,
        outcome=outcome,  # type: ignore[arg-type]  # only ever written from an ItemRecord
        message=message,
        observed_at=from_micros(observed_at),
        detail=detail,
    )


class _Checkpointer(threading.Thread):
    """Moves the WAL into the database file every `interval` seconds, off the loop.

    PASSIVE copies what it can without taking any lock. Under a steady write load that is
    never all of the WAL (new frames arrive meanwhile), so SQLite never rewinds it and it
    grows without bound (120 MB after 2,000 batches, measured, and every read slows down);
    so once it exceeds `max_wal_bytes`, a TRUNCATE checkpoint takes the writer's lock,
    copies the rest and empties the file. That blocks writers for its duration, but no
    writer waits on the event loop: the loop's connection fails at once and hands its
    batch to the store's thread, which waits (see `SqliteTaskStore._run`).
    """

    def __init__(
        self, path: str, interval: float = 1.0, max_wal_bytes: int = 4 * 1024 * 1024
    ) -> None:
        super().__init__(name="sqlite-checkpointer", daemon=True)
        self._path = path
        self._wal = Path(f"{path}-wal")
        self._interval = interval
        self._max_wal_bytes = max_wal_bytes
        self._stopping = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=1000")
        try:
            while not self._stopping.wait(self._interval):
                try:
                    size = self._wal.stat().st_size
                except OSError:
                    size = 0
                with contextlib.suppress(sqlite3.OperationalError):  # busy: next round
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    if size > self._max_wal_bytes:
                        # Only what arrived during the PASSIVE pass is left to copy, so
                        # writers are held for a moment only.
                        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=10)
