"""Running the task tracker for a test: in-process, on SQLite or PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import fields
from pathlib import Path

import asyncpg
import httpx
import pytest

from services.task_tracker.settings import TrackerSettings
from shared.settings import BaseSettings
from tests.support.waiting import eventually

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
        await connection.execute(
            f"DROP TABLE IF EXISTS {prefix}task_items, {prefix}tasks, {prefix}task_outbox"
        )
    finally:
        await connection.close()


def environment(settings: TrackerSettings) -> dict[str, str]:
    """The settings as FERRY_* variables, to run the tracker as a process."""
    return {**os.environ, **settings.as_environment()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TrackerProcess:
    """`python -m services.task_tracker` as an operator would run it."""

    def __init__(self, settings: TrackerSettings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.task_tracker"],
                env=environment(self.settings),
                stdout=out,
                stderr=out,
            )
        url = f"http://127.0.0.1:{self.settings.http_port}/readyz"

        async def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"tracker exited: {self.log.read_text()[-2000:]}")
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(url, timeout=1)).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(ready, timeout=30, interval=0.1)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)
