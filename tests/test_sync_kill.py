"""The collector and the uploader, run as processes (`python -m services.hf_collector`,
`python -m services.aiod_uploader`), SIGKILLed several times in the middle of a sync: the
sync still ends with exactly one right record per public dataset, none twice."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from shared.contracts.tasks import TaskStatus
from shared.settings import BaseSettings
from tests.conftest import Cleanup
from tests.test_sync_support import (
    ServiceProcess,
    check_end_state,
    collector_settings,
    running,
    stand_ins,
    uploader_settings,
)

pytestmark = [pytest.mark.timeout(170), pytest.mark.slow]

DATASETS = 1000
KILLS = 3


async def test_killing_collector_and_uploader_mid_sync_loses_and_duplicates_nothing(
    base_settings: BaseSettings, cleanup: Cleanup, tmp_path: Path
) -> None:
    # Latency makes the sync last long enough to be killed in the middle, several times.
    base = replace(base_settings, delivery_limit=50)
    with stand_ins(DATASETS, seed=31) as stands:
        stands.fault("hub", {"latency_ms": 5})
        stands.fault("aiod", {"latency_ms": 5})
        collector = ServiceProcess(
            "services.hf_collector",
            collector_settings(base, stands, page_size=100),
            tmp_path / "collector.log",
        )
        uploader = ServiceProcess(
            "services.aiod_uploader",
            uploader_settings(base, stands, upload_concurrency=16),
            tmp_path / "uploader.log",
        )
        # Declared by the in-process copies first, so the processes find their queues.
        async with running(base, stands, cleanup, tmp_path) as sync:
            pass
        async with running(
            base, stands, cleanup, tmp_path, collector=False, uploader=False
        ) as sync:
            collector.start()
            uploader.start()
            try:
                task_id = await sync.submit("all")
                public = len(stands.public())
                for round_ in range(KILLS):
                    # Let some of the sync happen, then kill both and start them again.
                    target = public * (round_ + 1) // (KILLS + 2)
                    await _wait_for_records(stands, target, timeout=60)
                    collector.kill()
                    await asyncio.sleep(0.2)
                    uploader.kill()
                    collector.start()
                    uploader.start()
                task = await sync.finished(task_id, timeout=120)
            finally:
                collector.stop()
                uploader.stop()
            assert task.status == TaskStatus.SUCCESS, (
                task.progress_message,
                (tmp_path / "uploader.log").read_text()[-3000:],
            )
            assert task.result["failed"] == 0
            assert task.result["discovered"] == public
            check_end_state(stands, seed=31)
            # Nothing was created twice, even as a deleted copy.
            assert len(stands.records(deleted=True)) == public


async def _wait_for_records(stands: object, count: int, *, timeout: float) -> None:
    from tests.test_sync_support import StandIns

    assert isinstance(stands, StandIns)
    deadline = asyncio.get_running_loop().time() + timeout
    while len(stands.records()) < count:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"fewer than {count} records after {timeout}s")
        await asyncio.sleep(0.05)
