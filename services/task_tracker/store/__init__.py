"""Task storage: `open_store(url)` picks the backend from the URL scheme."""

from __future__ import annotations

from services.task_tracker.store.base import TaskStore

_SQLITE = "sqlite:///"


def open_store(url: str, table_prefix: str = "") -> TaskStore:
    """A store for `url` (not opened yet: `await store.open()` or `async with store`).

    `sqlite:///relative.db`, `sqlite:////abs/path.db`, `sqlite:///:memory:` → SQLite;
    `postgresql://…` or `postgres://…` → PostgreSQL. `table_prefix` keeps several stores
    (tests, say) apart in one database.
    """
    scheme = url.partition(":")[0]
    if url.startswith(_SQLITE):
        from services.task_tracker.store.sqlite import SqliteTaskStore

        return SqliteTaskStore(url.removeprefix(_SQLITE), table_prefix=table_prefix)
    if scheme in ("postgresql", "postgres"):
        from services.task_tracker.store.postgres import PostgresTaskStore

        return PostgresTaskStore(url, table_prefix=table_prefix)
    raise ValueError(
        f"unsupported task store URL scheme {scheme!r}:"
        " use sqlite:///path.db or postgresql://user@host/db"
    )


__all__ = ["TaskStore", "open_store"]
