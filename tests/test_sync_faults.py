"""The sync under failure: 20% of the calls to both stand-ins fail (429, 5xx, timeouts); AIoD
goes down for longer than the in-process retry budget; the Hub's rate limit is tight. Each
time the end state is the same as without them: one right record per public dataset."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from services.sandbox import hf_hub
from shared.contracts.tasks import TaskStatus
from shared.settings import BaseSettings
from tests.conftest import Cleanup
from tests.test_sync_support import (
    check_end_state,
    collector_settings,
    running,
    stand_ins,
    uploader_settings,
)

pytestmark = pytest.mark.timeout(150)

# Faults drawn per request, in this order: together about 20% of every call.
FAULTS = (
    {"status": 429, "fraction": 0.07},
    {"status": 503, "fraction": 0.05},
    {"status": 500, "fraction": 0.03},
    {"timeout": True, "fraction": 0.06, "hold_seconds": 2},
)


def patient(base: BaseSettings) -> BaseSettings:
    """More in-process attempts and a short client timeout, as a flaky peer calls for."""
    return replace(
        base,
        retry_attempts=6,
        retry_base_delay=0.02,
        retry_max_delay=0.3,
        retry_budget=8.0,
        http_timeout=0.5,
        park_delays=(0.5, 1.0, 2.0),
    )


async def test_a_fifth_of_all_calls_failing_on_both_sides_gives_the_same_end_state(
    base_settings: BaseSettings, cleanup: Cleanup, tmp_path: Path
) -> None:
    base = patient(base_settings)
    # A short rate-limit window: an injected 429 carries `RateLimit: ...;t=` of at most 2 s.
    hub = hf_hub.HubOptions(datasets=400, seed=21, quota=100_000, window_seconds=2)
    with stand_ins(400, seed=21, hub=hub) as stands:
        stands.fault("hub", *FAULTS, {"seed": 1})
        stands.fault("aiod", *FAULTS, {"seed": 2})
        collector = collector_settings(base, stands, page_size=100, http_timeout=0.5)
        uploader = uploader_settings(base, stands, http_timeout=0.5)
        async with running(
            base, stands, cleanup, tmp_path, collector=collector, uploader=uploader
        ) as sync:
            task = await sync.finished(await sync.submit("all"), timeout=120)
            assert task.status == TaskStatus.SUCCESS, task.progress_message
            assert task.result["failed"] == 0
            check_end_state(stands, seed=21)


async def test_an_aiod_outage_longer_than_the_retry_budget_ends_with_every_item_uploaded(
    base_settings: BaseSettings, cleanup: Cleanup, tmp_path: Path
) -> None:
    # In-process retries give up after 1 s; parked messages come back after 1, 2, 4 s.
    base = replace(base_settings, park_delays=(1.0, 2.0, 4.0))
    with stand_ins(300, seed=22) as stands:
        collector = collector_settings(base, stands, page_size=100)
        async with running(base, stands, cleanup, tmp_path, collector=collector) as sync:
            stands.fault("aiod", {"outage_seconds": 4})
            task = await sync.finished(await sync.submit("all"), timeout=60)
            assert task.status == TaskStatus.SUCCESS, task.progress_message
            assert task.result["failed"] == 0
            assert task.result["created"] == len(stands.public())
            check_end_state(stands, seed=22)


async def test_the_hub_rate_limit_is_honoured_before_the_429(
    base_settings: BaseSettings,
    cleanup: Cleanup,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 24 listing pages against 8 requests per 2 s window: the collector must spread them.
    hub = hf_hub.HubOptions(datasets=72, seed=23, quota=8, window_seconds=2)
    with stand_ins(72, seed=23, hub=hub) as stands:
        collector = collector_settings(base_settings, stands, page_size=3)
        caplog.set_level(logging.WARNING, logger="ferry")
        async with running(base_settings, stands, cleanup, tmp_path, collector=collector) as sync:
            started = asyncio.get_running_loop().time()
            task = await sync.finished(await sync.submit("all"), timeout=60)
            took = asyncio.get_running_loop().time() - started
            assert task.status == TaskStatus.SUCCESS, task.progress_message
            check_end_state(stands, seed=23)
        limited = [r for r in caplog.records if "rate limited" in r.getMessage()]
        retried = [r for r in caplog.records if "429" in str(getattr(r, "error", ""))]
        assert not limited and not retried, "the collector met a 429"
        assert took >= 24 / 8 * 2 - 2  # it waited for windows to reset
