"""The tracker as operators run it (`python -m services.task_tracker`): the embedded SQLite
backend refuses to run beside another consumer of its queues; PostgreSQL replicas may."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.task_tracker.settings import TrackerSettings
from shared.settings import BaseSettings
from shared.topology import Names
from tests.conftest import Cleanup
from tests.support.tracker import TrackerProcess, backend_settings, environment, free_port


@pytest.fixture(params=["sqlite", "postgres"])
async def settings(
    request: pytest.FixtureRequest, base_settings: BaseSettings, tmp_path: Path, cleanup: Cleanup
) -> AsyncIterator[TrackerSettings]:
    async with backend_settings(
        request.param, base_settings, tmp_path, http_port=free_port(), log_level="WARNING"
    ) as settings:
        names = Names(settings.namespace)
        for queue in ("submit", "update", "cancel", "get", "list"):
            cleanup.queues.append(names.queue("task_tracker", queue))
        cleanup.queues.append(names.dead_letter_queue("task_tracker"))
        cleanup.queues.extend(names.parking_queue(d) for d in settings.park_delays)
        yield settings


async def test_a_second_sqlite_tracker_refuses_to_start_and_postgres_replicas_run(
    settings: TrackerSettings, tmp_path: Path
) -> None:
    first = TrackerProcess(settings, tmp_path / "first.log")
    await first.start()
    try:
        second_settings = TrackerSettings(
            **{**settings.__dict__, "http_port": free_port()}  # type: ignore[arg-type]
        )
        if settings.database_url.startswith("postgres"):
            second = TrackerProcess(second_settings, tmp_path / "second.log")
            await second.start()  # ready: both replicas consume
            assert second.stop() == 0
            return
        # Another file on purpose: the lock is about the namespace's queues, not the file.
        second_settings = TrackerSettings(
            **{  # type: ignore[arg-type]
                **second_settings.__dict__,
                "database_url": f"sqlite:///{tmp_path / 'other.db'}",
            }
        )
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "services.task_tracker"],
            env=environment(second_settings),
            capture_output=True,
            timeout=30,
        )
        assert result.returncode != 0
        lines = [line for line in result.stderr.decode().splitlines() if line.strip()]
        problem = [line for line in lines if "SQLite" in line]
        assert len(problem) == 1, lines
        assert "another task tracker" in problem[0]
        assert "use PostgreSQL for several replicas" in problem[0]
    finally:
        assert first.stop() == 0
