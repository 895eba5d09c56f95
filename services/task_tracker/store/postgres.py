"""The PostgreSQL task store (asyncpg): several tracker replicas may share one database.

Concurrency: every write path locks the rows of the tasks it touches (`FOR UPDATE`, in id
order so two replicas cannot deadlock) before it reads, merges and writes them. Tasks not
stored yet are first inserted as placeholders (`body` = JSON null), so a brand-new task is
locked like any other instead of being inserted twice by racing replicas. Items are only
ever written under their task's row lock, so they need no lock of their own. Side effects
(the first drive, `tasks.cancelled`) are decided on the locked rows and recorded in the
outbox table in the same transaction; outbox rows and the sweep's candidates are claimed
with `FOR UPDATE SKIP LOCKED`, so two replicas never both act on one.

Every statement has a timeout (`command_timeout`), and the connection-level failures of
asyncpg surface as `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from services.task_tracker.domain import (
    Change,
    FollowUp,
    ItemRecord,
    TaskRecord,
    plan_batch,
    sweep_task,
    touched_item_keys,
    utc,
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
    page,
    remerge,
    sort_at,
)
from shared.contracts.tasks import TaskStatus

_PLACEHOLDER = "null"

# What says "the database cannot be reached" rather than "this statement is wrong".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # class 08
    asyncpg.InterfaceError,  # the connection is closed, the pool is closing
    asyncpg.exceptions.OperatorInterventionError,  # class 57: admin shutdown, terminated
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, disk full
)


class PostgresTaskStore(TaskStore):
    def __init__(
        self,
        url: str,
        table_prefix: str = "",
        min_pool: int = 1,
        max_pool: int = 10,
        command_timeout: float = 10.0,
    ) -> None:
        prefix = check_prefix(table_prefix)
        self._url = url
        self._pool_size = (min_pool, max_pool)
        self._command_timeout = command_timeout
        self._tasks = f"{prefix}tasks"
        self._items = f"{prefix}task_items"
        self._outbox = f"{prefix}task_outbox"
        self._pool_or_none: asyncpg.Pool | None = None

    @property
    def _pool(self) -> asyncpg.Pool:
        if self._pool_or_none is None:
            raise RuntimeError("the task store is not open")
        return self._pool_or_none

    @asynccontextmanager
    async def _connection(self, *, transaction: bool = True) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection (in a transaction unless told not to); connection-level
        failures, acquiring included, become `StoreUnavailable`."""
        try:
            async with self._pool.acquire(timeout=self._command_timeout) as conn:
                if transaction:
                    async with conn.transaction():
                        yield conn
                else:
                    yield conn
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc

    async def open(self) -> None:
        min_size, max_size = self._pool_size
        try:
            self._pool_or_none = await asyncpg.create_pool(
                self._url,
                min_size=min_size,
                max_size=max_size,
                timeout=self._command_timeout,  # to connect
                command_timeout=self._command_timeout,  # every statement
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc
        t, i, o = self._tasks, self._items, self._outbox
        async with self._connection() as conn:
            # Replicas starting together would race on CREATE TABLE IF NOT EXISTS.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"ferry:{t}")
            await conn.execute(
                f"""
                CREATE TABLE IF NOT EXISTS {t} (
                    id text PRIMARY KEY,
                    kind text,
                    status text NOT NULL,
                    sort_at timestamptz NOT NULL,   -- see base.sort_at
                    touched_at timestamptz NOT NULL,
                    body json NOT NULL              -- the whole TaskRecord, msgspec JSON
                );
                CREATE INDEX IF NOT EXISTS {t}_by_sort ON {t} (sort_at, id);
                CREATE INDEX IF NOT EXISTS {t}_by_kind ON {t} (kind, sort_at, id);
                CREATE INDEX IF NOT EXISTS {t}_by_status ON {t} (status, sort_at, id);
                CREATE INDEX IF NOT EXISTS {t}_sweep ON {t} (touched_at)
                    WHERE status IN ('QUEUED', 'RUNNING');
                CREATE TABLE IF NOT EXISTS {i} (
                    task_id text NOT NULL,
                    item_key text NOT NULL,
                    outcome text NOT NULL,
                    message text,
                    observed_at timestamptz NOT NULL,
                    detail text,
                    PRIMARY KEY (task_id, item_key)
                );
                -- Item details came later: a database made before them gets the column.
                ALTER TABLE {i} ADD COLUMN IF NOT EXISTS detail text;
                CREATE INDEX IF NOT EXISTS {t}_orphans ON {t} (touched_at) WHERE kind IS NULL;
                CREATE TABLE IF NOT EXISTS {o} (
                    id bigserial PRIMARY KEY,
                    task_id text NOT NULL,
                    purpose text NOT NULL,
                    routing_key text NOT NULL,
                    body bytea NOT NULL,
                    created_at timestamptz NOT NULL
                );
                """
            )

    async def close(self) -> None:
        if self._pool_or_none is not None:
            pool, self._pool_or_none = self._pool_or_none, None
            try:
                await asyncio.wait_for(pool.close(), self._command_timeout)
            except _UNAVAILABLE:
                pool.terminate()

    # --- writes ---------------------------------------------------------------------------

    async def apply(self, changes: Sequence[Change], now: datetime) -> Applied:
        if not changes:
            return Applied()
        ids = sorted({change.task_id for change in changes})
        item_keys = sorted(touched_item_keys(changes))
        # Round trips are what a batch waits for (each one also yields the event loop to
        # the deliveries arriving meanwhile): create-or-lock-and-read is one statement, the
        # writes of tasks and items another.
        async with self._connection() as conn:
            # A placeholder for each task not stored yet, and a row lock on every one, in id
            # order (no deadlock between replicas). The no-op update is what locks an
            # existing row and returns its stored body.
            rows = await conn.fetch(
                f"INSERT INTO {self._tasks} AS t (id, status, sort_at, touched_at, body)"
                " SELECT id, 'QUEUED', $2, $2, $3 FROM unnest($1::text[]) AS u(id) ORDER BY id"
                " ON CONFLICT (id) DO UPDATE SET id = t.id RETURNING t.id, t.body",
                ids,
                utc(now),
                _PLACEHOLDER,
            )
            records = {
                row["id"]: decode_record(row["body"]) for row in rows if row["body"] != _PLACEHOLDER
            }
            items: dict[tuple[str, str], ItemRecord] = {}
            if item_keys:
                rows = await conn.fetch(
                    "SELECT i.task_id, i.item_key, i.outcome, i.message, i.observed_at, i.detail"
                    f" FROM {self._items} AS i"
                    " JOIN unnest($1::text[], $2::text[]) AS k(task_id, item_key)"
                    " ON i.task_id = k.task_id AND i.item_key = k.item_key",
                    [task_id for task_id, _ in item_keys],
                    [item_key for _, item_key in item_keys],
                )
                for row in rows:
                    item = ItemRecord(**dict(row))
                    items[(item.task_id, item.item_key)] = item
            outcome = plan_batch(changes, records, items, now)
            await self._write(conn, outcome.changed, outcome.items)
            follow_ups = await self._record_follow_ups(conn, outcome.follow_ups, now)
        return Applied(builtins.list(outcome.records.values()), follow_ups)

    async def _record_follow_ups(
        self, conn: asyncpg.Connection, follow_ups: Sequence[FollowUp], now: datetime
    ) -> builtins.list[FollowUp]:
        if not follow_ups:
            return []
        rows = await conn.fetch(
            f"INSERT INTO {self._outbox} (task_id, purpose, routing_key, body, created_at)"
            " SELECT u.task_id, u.purpose, u.routing_key, u.body, $5"
            " FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[])"
            " AS u(task_id, purpose, routing_key, body)"
            " RETURNING id, task_id, purpose",
            [f.task_id for f in follow_ups],
            [f.purpose for f in follow_ups],
            [f.routing_key for f in follow_ups],
            [f.body for f in follow_ups],
            utc(now),
        )
        # One follow-up per (task, purpose) in a transaction: that pair names its row.
        ids = {(row["task_id"], row["purpose"]): row["id"] for row in rows}
        return [
            FollowUp(f.task_id, f.purpose, f.routing_key, f.body, ids[(f.task_id, f.purpose)])
            for f in follow_ups
        ]

    async def save_tracker_changes(
        self, records: Sequence[TaskRecord]
    ) -> builtins.list[TaskRecord]:
        # Re-merged under the row lock: concurrent updates and replicas are never overwritten.
        if not records:
            return []
        async with self._connection() as conn:
            stored = await self._lock(conn, sorted({r.id for r in records}))
            merged = remerge(stored, records)
            await self._write(conn, [r for r in merged.values() if r != stored.get(r.id)])
        return builtins.list(merged.values())

    async def _lock(self, conn: asyncpg.Connection, ids: Sequence[str]) -> dict[str, TaskRecord]:
        rows = await conn.fetch(
            f"SELECT id, body FROM {self._tasks} WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
            ids,
        )
        return {
            row["id"]: decode_record(row["body"]) for row in rows if row["body"] != _PLACEHOLDER
        }

    async def _write(
        self,
        conn: asyncpg.Connection,
        records: Sequence[TaskRecord],
        items: Sequence[ItemRecord] = (),
    ) -> None:
        """Upsert tasks and items in one statement (each id, each item key, at most once)."""
        if not records and not items:
            return
        await conn.execute(
            f"WITH written_tasks AS (INSERT INTO {self._tasks}"
            " (id, kind, status, sort_at, touched_at, body)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[],"
            " $5::timestamptz[], $6::json[])"
            " ON CONFLICT (id) DO UPDATE SET"
            " kind = excluded.kind, status = excluded.status, sort_at = excluded.sort_at,"
            " touched_at = excluded.touched_at, body = excluded.body RETURNING 1),"
            f" written_items AS (INSERT INTO {self._items}"
            " (task_id, item_key, outcome, message, observed_at, detail)"
            " SELECT * FROM unnest($7::text[], $8::text[], $9::text[], $10::text[],"
            " $11::timestamptz[], $12::text[])"
            " ON CONFLICT (task_id, item_key) DO UPDATE SET"
            " outcome = excluded.outcome, message = excluded.message,"
            " observed_at = excluded.observed_at, detail = excluded.detail RETURNING 1)"
            " SELECT (SELECT count(*) FROM written_tasks), (SELECT count(*) FROM written_items)",
            [r.id for r in records],
            [r.kind for r in records],
            [r.status.value for r in records],
            [sort_at(r) for r in records],
            [r.touched_at for r in records],
            [_json(r) for r in records],
            [i.task_id for i in items],
            [i.item_key for i in items],
            [i.outcome for i in items],
            [i.message for i in items],
            [i.observed_at for i in items],
            [i.detail for i in items],
        )

    # --- reads ----------------------------------------------------------------------------

    # --- the sweep, the outbox, orphans -----------------------------------------------------

    async def sweep(self, now: datetime, rules: SweepRules) -> Applied:
        applied = Applied()
        older_than = utc(now - rules.stall_after)
        after_at, after_id = datetime.min.replace(tzinfo=older_than.tzinfo), ""
        while True:  # keyset pages: every candidate once, however many there are
            async with self._connection() as conn:
                # SKIP LOCKED: a row another replica holds is being decided there.
                rows = await conn.fetch(
                    f"SELECT touched_at, id, body FROM {self._tasks}"
                    " WHERE status = ANY($1::text[]) AND kind IS NOT NULL AND touched_at < $2"
                    " AND (touched_at, id) > ($3, $4) ORDER BY touched_at, id LIMIT $5"
                    " FOR UPDATE SKIP LOCKED",
                    builtins.list(NON_TERMINAL),
                    older_than,
                    after_at,
                    after_id,
                    rules.page_size,
                )
                changed: builtins.list[TaskRecord] = []
                follow_ups: builtins.list[FollowUp] = []
                for row in rows:
                    # Decided on the locked row, as it is now: a replica that just re-drove
                    # it has already moved `driven_at`.
                    record = decode_record(row["body"])
                    verdict = sweep_task(record, now, rules.stall_after, rules.give_up_after)
                    if verdict is not None:
                        changed.append(verdict[0])
                        follow_ups.extend(verdict[1])
                await self._write(conn, changed)
                applied.extend(
                    Applied(changed, await self._record_follow_ups(conn, follow_ups, now))
                )
            if len(rows) < rules.page_size:
                return applied
            after_at, after_id = rows[-1]["touched_at"], rows[-1]["id"]

    async def dispatch_outbox(
        self,
        send: Sender,
        *,
        ids: Sequence[int] | None = None,
        older_than: datetime | None = None,
        limit: int = 500,
    ) -> int:
        columns = f"SELECT id, task_id, purpose, routing_key, body FROM {self._outbox}"
        # The rows stay locked while they are published and until they are deleted: another
        # replica's claim skips them, and finds them gone once this commits.
        async with self._connection() as conn:
            if ids is not None:
                rows = await conn.fetch(
                    f"{columns} WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE SKIP LOCKED",
                    builtins.list(ids),
                )
            else:
                rows = await conn.fetch(
                    f"{columns} WHERE created_at < $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
                    utc(older_than or datetime.max),
                    limit,
                )
            if not rows:
                return 0
            claimed = [
                FollowUp(r["task_id"], r["purpose"], r["routing_key"], r["body"], r["id"])
                for r in rows
            ]
            done = builtins.list(await send(claimed))
            if done:
                await conn.execute(f"DELETE FROM {self._outbox} WHERE id = ANY($1::bigint[])", done)
        return len(claimed)

    async def delete_orphans(self, older_than: datetime) -> int:
        async with self._connection() as conn:
            # Row locks are taken by DELETE: an update applied meanwhile (which locks the
            # row) moves touched_at, and the re-check then spares the row.
            deleted = await conn.fetch(
                f"DELETE FROM {self._tasks} WHERE kind IS NULL AND touched_at < $1 RETURNING id",
                utc(older_than),
            )
            ids = [row["id"] for row in deleted]
            if ids:
                await conn.execute(
                    f"DELETE FROM {self._items} WHERE task_id = ANY($1::text[])", ids
                )
        return len(ids)

    # --- reads ----------------------------------------------------------------------------

    async def get(self, task_id: str) -> TaskRecord | None:
        async with self._connection(transaction=False) as conn:
            body = await conn.fetchval(f"SELECT body FROM {self._tasks} WHERE id = $1", task_id)
        return None if body is None or body == _PLACEHOLDER else decode_record(body)

    async def items(self, task_id: str, limit: int = 1000) -> builtins.list[ItemRecord]:
        async with self._connection(transaction=False) as conn:
            rows = await conn.fetch(
                "SELECT task_id, item_key, outcome, message, observed_at, detail"
                f" FROM {self._items} WHERE task_id = $1 ORDER BY item_key LIMIT $2",
                task_id,
                limit,
            )
        return [ItemRecord(**dict(row)) for row in rows]

    async def list(
        self,
        statuses: set[TaskStatus] | None,
        kind: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[builtins.list[TaskRecord], str | None]:
        # The query is built from the filters present, so each shape gets its own plan and
        # uses its index (a generic "$1 IS NULL OR ..." would not).
        where: builtins.list[str] = ["kind IS NOT NULL"]  # orphans are not tasks (yet)
        args: builtins.list[Any] = []
        if statuses:
            args.append(sorted(s.value for s in statuses))
            where.append(f"status = ANY(${len(args)}::text[])")
        if kind is not None:
            args.append(kind)
            where.append(f"kind = ${len(args)}")
        if cursor is not None:
            after_at, after_id = decode_cursor(cursor)
            args.extend((after_at, after_id))
            where.append(f"(sort_at, id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit + 1)  # one extra row tells whether there is a next page
        sql = (
            f"SELECT body FROM {self._tasks} WHERE {' AND '.join(where)}"
            f" ORDER BY sort_at DESC, id DESC LIMIT ${len(args)}"
        )
        async with self._connection(transaction=False) as conn:
            rows = await conn.fetch(sql, *args)
        records = [decode_record(row["body"]) for row in rows]
        return page(records, limit)


def _json(record: TaskRecord) -> str:
    # asyncpg sends `json` parameters as text.
    return encode_record(record).decode()
