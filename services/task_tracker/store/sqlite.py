"""The SQLite task store: stdlib sqlite3, one connection, one writer.

Statements run on the event loop's own thread. With WAL and synchronous=NORMAL a commit
does not wait for the disk, and a batch takes a millisecond or two; handing each batch to a
worker thread instead cost the tracker about a quarter of its throughput in GIL hand-offs
(bench/tracker.py). What does wait for the disk, the WAL checkpoint with its fsync, is taken
off the writer: a checkpointer thread with its own connection runs it in the background.
"""

from __future__ import annotations

import builtins
import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from services.task_tracker.domain import (
    Change,
    ItemRecord,
    TaskRecord,
    apply_batch,
    touched_item_keys,
)
from services.task_tracker.store.base import (
    NON_TERMINAL,
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


class SqliteTaskStore(TaskStore):
    def __init__(self, path: str, table_prefix: str = "") -> None:
        prefix = check_prefix(table_prefix)
        self._path = path
        self._tasks = f"{prefix}tasks"
        self._items = f"{prefix}task_items"
        self._conn: sqlite3.Connection | None = None
        self._checkpointer: _Checkpointer | None = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the task store is not open")
        return self._conn

    async def open(self) -> None:
        self._conn = self._connect()
        if self._path != ":memory:":
            self._checkpointer = _Checkpointer(self._path)
            self._checkpointer.start()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        conn = sqlite3.connect(self._path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        if self._path != ":memory:":
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it
        t, i = self._tasks, self._items
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
            CREATE TABLE IF NOT EXISTS {i} (
                task_id TEXT NOT NULL,
                item_key TEXT NOT NULL,
                outcome TEXT NOT NULL,
                message TEXT,
                observed_at INTEGER NOT NULL,  -- epoch microseconds
                PRIMARY KEY (task_id, item_key)
            ) WITHOUT ROWID;
            """
        )
        return conn

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- writes ---------------------------------------------------------------------------

    async def apply(self, changes: Sequence[Change], now: datetime) -> builtins.list[TaskRecord]:
        if not changes:
            return []
        return self._apply(self._db, changes, now)

    def _apply(
        self, conn: sqlite3.Connection, changes: Sequence[Change], now: datetime
    ) -> builtins.list[TaskRecord]:
        ids = sorted({change.task_id for change in changes})
        with _transaction(conn):
            records = self._load(conn, ids)
            items = self._load_items(conn, sorted(touched_item_keys(changes)))
            outcome = apply_batch(changes, records, items, now)
            self._write(conn, outcome.changed)
            conn.executemany(
                f"INSERT INTO {self._items} (task_id, item_key, outcome, message, observed_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (task_id, item_key) DO UPDATE SET"
                " outcome = excluded.outcome, message = excluded.message,"
                " observed_at = excluded.observed_at",
                [
                    (i.task_id, i.item_key, i.outcome, i.message, to_micros(i.observed_at))
                    for i in outcome.items
                ],
            )
        return builtins.list(outcome.records.values())

    async def save_tracker_changes(
        self, records: Sequence[TaskRecord]
    ) -> builtins.list[TaskRecord]:
        if not records:
            return []
        return self._save(self._db, records)

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
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ",".join(["(?, ?)"] * len(chunk))
            rows = conn.execute(
                f"SELECT task_id, item_key, outcome, message, observed_at FROM {self._items}"
                f" WHERE (task_id, item_key) IN (VALUES {marks})",
                [part for key in chunk for part in key],
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

    # --- reads ----------------------------------------------------------------------------

    async def get(self, task_id: str) -> TaskRecord | None:
        return self._load(self._db, [task_id]).get(task_id)

    async def items(self, task_id: str, limit: int = 1000) -> builtins.list[ItemRecord]:
        sql = (
            f"SELECT task_id, item_key, outcome, message, observed_at FROM {self._items}"
            " WHERE task_id = ? ORDER BY item_key LIMIT ?"
        )
        rows = self._db.execute(sql, (task_id, limit)).fetchall()
        return [_item(row) for row in rows]

    async def list(
        self,
        statuses: set[TaskStatus] | None,
        kind: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[builtins.list[TaskRecord], str | None]:
        where: builtins.list[str] = []
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
            f"SELECT body FROM {self._tasks}"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY sort_at DESC, id DESC LIMIT ?"
        )
        args.append(limit + 1)  # one extra row tells whether there is a next page
        rows = self._db.execute(sql, args).fetchall()
        records = [decode_record(body) for (body,) in rows]
        return page(records, limit)

    async def sweep_candidates(
        self, now: datetime, older_than: datetime, limit: int
    ) -> builtins.list[TaskRecord]:
        sql = (
            f"SELECT body FROM {self._tasks} WHERE status IN (?, ?) AND touched_at < ?"
            " ORDER BY touched_at LIMIT ?"
        )
        args = (*NON_TERMINAL, to_micros(older_than), limit)
        rows = self._db.execute(sql, args).fetchall()
        return [decode_record(body) for (body,) in rows]


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front: the read-merge-write cannot interleave with
    # another writer (another process on the same file, say).
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _item(row: tuple[str, str, str, str | None, int]) -> ItemRecord:
    task_id, item_key, outcome, message, observed_at = row
    return ItemRecord(
        task_id=task_id,
        item_key=item_key,
        outcome=outcome,  # type: ignore[arg-type]  # only ever written from an ItemRecord
        message=message,
        observed_at=from_micros(observed_at),
    )


class _Checkpointer(threading.Thread):
    """Moves the WAL into the database file every `interval` seconds, off the writer.

    PASSIVE never blocks the writer; if the WAL keeps growing under a steady write load,
    a RESTART now and then lets it start over from the beginning.
    """

    def __init__(self, path: str, interval: float = 1.0) -> None:
        super().__init__(name="sqlite-checkpointer", daemon=True)
        self._path = path
        self._interval = interval
        self._stopping = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=100")
        rounds = 0
        try:
            while not self._stopping.wait(self._interval):
                rounds += 1
                mode = "RESTART" if rounds % 30 == 0 else "PASSIVE"
                with contextlib.suppress(sqlite3.OperationalError):  # busy: next round
                    conn.execute(f"PRAGMA wal_checkpoint({mode})")
            with contextlib.suppress(sqlite3.OperationalError):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=10)
