"""Task storage: `open_store(url)` picks the backend from the URL scheme."""

from __future__ import annotations

from services.task_tracker.store.base import Applied, StoreUnavailable, SweepRules, TaskStore

_SQLITE = "sqlite:///"


def open_store(url: str, table_prefix: str = "", *, timeout: float = 10.0) -> TaskStore:
    """A store for `url` (not opened yet: `await store.open()` or `async with store`).

    `sqlite:///relative.db`, `sqlite:////abs/path.db`, `sqlite:///:memory:` → SQLite;
    `postgresql://…` or `postgres://…` → PostgreSQL. `table_prefix` keeps several stores
    (tests, say) apart in one database. `timeout` bounds every PostgreSQL statement.
    """
    scheme = url.partition(":")[0]
    if url.startswith(_SQLITE):
        from services.task_tracker.store.sqlite import SqliteTaskStore

        return SqliteTaskStore(url.removeprefix(_SQLITE), table_prefix=table_prefix)
    if scheme in ("postgresql", "postgres"):
        from services.task_tracker.store.postgres import PostgresTaskStore

        return PostgresTaskStore(url, table_prefix=table_prefix, command_timeout=timeout)
    raise ValueError(
        f"unsupported task store URL scheme {scheme!r}:"
        " use sqlite:///path.db or postgresql://user@host/db"
    )


__all__ = ["Applied", "StoreUnavailable", "SweepRules", "TaskStore", "open_store"]
