"""The PostgreSQL task store (asyncpg): several tracker replicas may share one database.

Concurrency: every write path locks the rows of the tasks it touches (`FOR UPDATE`, in id
order so two replicas cannot deadlock) before it reads, merges and writes them. Tasks not
stored yet are first inserted as placeholders (`body` = JSON null), so a brand-new task is
locked like any other instead of being inserted twice by racing replicas. Items are only
ever written under their task's row lock, so they need no lock of their own.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.task_tracker.domain import (
    Change,
    ItemRecord,
    TaskRecord,
    apply_batch,
    touched_item_keys,
    utc,
)
from services.task_tracker.store.base import (
    NON_TERMINAL,
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


class PostgresTaskStore(TaskStore):
    def __init__(
        self, url: str, table_prefix: str = "", min_pool: int = 1, max_pool: int = 10
    ) -> None:
        prefix = check_prefix(table_prefix)
        self._url = url
        self._pool_size = (min_pool, max_pool)
        self._tasks = f"{prefix}tasks"
        self._items = f"{prefix}task_items"
        self._pool_or_none: asyncpg.Pool | None = None

    @property
    def _pool(self) -> asyncpg.Pool:
        if self._pool_or_none is None:
            raise RuntimeError("the task store is not open")
        return self._pool_or_none

    async def open(self) -> None:
        min_size, max_size = self._pool_size
        self._pool_or_none = await asyncpg.create_pool(
            self._url, min_size=min_size, max_size=max_size
        )
        t, i = self._tasks, self._items
        async with self._pool.acquire() as conn, conn.transaction():
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
                    PRIMARY KEY (task_id, item_key)
                );
                """
            )

    async def close(self) -> None:
        if self._pool_or_none is not None:
            await self._pool_or_none.close()
            self._pool_or_none = None

    # --- writes ---------------------------------------------------------------------------

    async def apply(self, changes: Sequence[Change], now: datetime) -> builtins.list[TaskRecord]:
        if not changes:
            return []
        ids = sorted({change.task_id for change in changes})
        item_keys = sorted(touched_item_keys(changes))
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO {self._tasks} (id, status, sort_at, touched_at, body)"
                " SELECT id, 'QUEUED', $2, $2, $3 FROM unnest($1::text[]) AS u(id) ORDER BY id"
                " ON CONFLICT (id) DO NOTHING",
                ids,
                utc(now),
                _PLACEHOLDER,
            )
            records = await self._lock(conn, ids)
            items: dict[tuple[str, str], ItemRecord] = {}
            if item_keys:
                rows = await conn.fetch(
                    "SELECT i.task_id, i.item_key, i.outcome, i.message, i.observed_at"
                    f" FROM {self._items} AS i"
                    " JOIN unnest($1::text[], $2::text[]) AS k(task_id, item_key)"
                    " ON i.task_id = k.task_id AND i.item_key = k.item_key",
                    [task_id for task_id, _ in item_keys],
                    [item_key for _, item_key in item_keys],
                )
                for row in rows:
                    item = ItemRecord(**dict(row))
                    items[(item.task_id, item.item_key)] = item
            outcome = apply_batch(changes, records, items, now)
            await self._write(conn, outcome.changed)
            if outcome.items:
                await conn.executemany(
                    f"INSERT INTO {self._items}"
                    " (task_id, item_key, outcome, message, observed_at)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (task_id, item_key) DO UPDATE SET"
                    " outcome = excluded.outcome, message = excluded.message,"
                    " observed_at = excluded.observed_at",
                    [
                        (i.task_id, i.item_key, i.outcome, i.message, i.observed_at)
                        for i in outcome.items
                    ],
                )
        return builtins.list(outcome.records.values())

    async def save_tracker_changes(
        self, records: Sequence[TaskRecord]
    ) -> builtins.list[TaskRecord]:
        # The sweep reads its candidates without locks; two replicas may decide on the same
        # task. Re-merging under the row lock makes their writes commute (KILLED twice is
        # KILLED once, drive_attempts is a max), at worst a command is published twice,
        # which at-least-once workers tolerate anyway.
        if not records:
            return []
        async with self._pool.acquire() as conn, conn.transaction():
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

    async def _write(self, conn: asyncpg.Connection, records: Sequence[TaskRecord]) -> None:
        if not records:
            return
        await conn.executemany(
            f"INSERT INTO {self._tasks} (id, kind, status, sort_at, touched_at, body)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET"
            " kind = excluded.kind, status = excluded.status, sort_at = excluded.sort_at,"
            " touched_at = excluded.touched_at, body = excluded.body",
            [(r.id, r.kind, r.status.value, sort_at(r), r.touched_at, _json(r)) for r in records],
        )

    # --- reads ----------------------------------------------------------------------------

    async def get(self, task_id: str) -> TaskRecord | None:
        body = await self._pool.fetchval(f"SELECT body FROM {self._tasks} WHERE id = $1", task_id)
        return None if body is None or body == _PLACEHOLDER else decode_record(body)

    async def items(self, task_id: str, limit: int = 1000) -> builtins.list[ItemRecord]:
        rows = await self._pool.fetch(
            "SELECT task_id, item_key, outcome, message, observed_at"
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
        where: builtins.list[str] = []
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
            f"SELECT body FROM {self._tasks}"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f" ORDER BY sort_at DESC, id DESC LIMIT ${len(args)}"
        )
        rows = await self._pool.fetch(sql, *args)
        records = [decode_record(row["body"]) for row in rows]
        return page(records, limit)

    async def sweep_candidates(
        self, now: datetime, older_than: datetime, limit: int
    ) -> builtins.list[TaskRecord]:
        rows = await self._pool.fetch(
            f"SELECT body FROM {self._tasks}"
            " WHERE status = ANY($1::text[]) AND touched_at < $2"
            " ORDER BY touched_at LIMIT $3",
            builtins.list(NON_TERMINAL),
            utc(older_than),
            limit,
        )
        return [decode_record(row["body"]) for row in rows]


def _json(record: TaskRecord) -> str:
    # asyncpg sends `json` parameters as text.
    return encode_record(record).decode()
