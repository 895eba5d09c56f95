"""Running the task tracker for a test: in-process, on SQLite or PostgreSQL."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import fields
from pathlib import Path

import asyncpg
import pytest

from services.task_tracker.settings import TrackerSettings
from shared.settings import BaseSettings

POSTGRES_URL = os.environ.get(
    "FERRY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


async def postgres_available() -> bool:
    try:
        connection = await asyncpg.connect(POSTGRES_URL, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await connection.close()
    return True


@contextlib.asynccontextmanager
async def backend_settings(
    backend: str, base: BaseSettings, tmp_path: Path, **overrides: object
) -> AsyncIterator[TrackerSettings]:
    """Tracker settings on `backend` ("sqlite" or "postgres"); PostgreSQL tables are
    dropped afterwards, and the test is skipped when PostgreSQL cannot be reached."""
    if backend == "postgres" and not await postgres_available():
        pytest.skip("PostgreSQL is not reachable at FERRY_TEST_POSTGRES_URL")
    settings = tracker_settings(base, backend, tmp_path, **overrides)
    try:
        yield settings
    finally:
        await drop_tables(settings)


def tracker_settings(
    base: BaseSettings, backend: str, tmp_path: Path, **overrides: object
) -> TrackerSettings:
    common = {f.name: getattr(base, f.name) for f in fields(BaseSettings)}
    if backend == "postgres":
        database = {"database_url": POSTGRES_URL, "table_prefix": f"{base.namespace}_"}
    else:
        database = {"database_url": f"sqlite:///{tmp_path / 'tasks.db'}"}
    return TrackerSettings(**{**common, **database, **overrides})  # type: ignore[arg-type]


async def drop_tables(settings: TrackerSettings) -> None:
    if not settings.database_url.startswith("postgres"):
        return
    connection = await asyncpg.connect(settings.database_url)
    try:
        prefix = settings.table_prefix
        await connection.execute(f"DROP TABLE IF EXISTS {prefix}task_items, {prefix}tasks")
    finally:
        await connection.close()


def environment(settings: TrackerSettings) -> dict[str, str]:
    """The settings as FERRY_* variables, to run the tracker as a process."""
    return {**os.environ, **settings.as_environment()}
