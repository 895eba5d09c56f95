"""Prune: after a complete `all` listing, the records of datasets that left the Hub's public
catalogue go; never after a partial listing, and not beyond the safety cap unless forced."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.sandbox import hf_hub
from shared.contracts.tasks import TaskStatus
from shared.settings import BaseSettings
from tests.conftest import Cleanup
from tests.test_sync_support import (
    StandIns,
    check_end_state,
    collector_settings,
    running,
    stand_ins,
)

pytestmark = pytest.mark.timeout(120)

DATASETS = 300


def _take_down(stands: StandIns, count: int) -> list[str]:
    """Delete `count` public datasets from the Hub; their `_id`s."""
    state = stands.hub.app[hf_hub.HUB]
    victims = list(stands.public().values())[:count]

    def delete() -> None:
        for dataset in victims:
            state.catalogue.delete(dataset.repo_id)

    stands.thread.call_soon(delete)
    return [d.object_id for d in victims]


async def test_prune_removes_the_records_of_datasets_gone_from_the_hub(
    base_settings: BaseSettings, cleanup: Cleanup, tmp_path: Path
) -> None:
    # Pages of 50: the seen ids of six pages must all be there before anything goes.
    with stand_ins(DATASETS, seed=11) as stands:
        collector = collector_settings(base_settings, stands, page_size=50)
        async with running(base_settings, stands, cleanup, tmp_path, collector=collector) as sync:
            assert sync.collector is not None
            first = await sync.finished(await sync.submit("all"))
            assert first.status == TaskStatus.SUCCESS
            before = len(stands.records())
            gone = _take_down(stands, 12)  # 4%: under the 10% cap
            task = await sync.finished(await sync.submit("all", prune=True))
            assert task.status == TaskStatus.SUCCESS, task.progress_message
            assert task.result["deleted"] == len(gone)
            assert task.result["unchanged"] == before - len(gone)
            assert task.result["discovered"] == before - len(gone)
            records = check_end_state(stands, seed=11)
            assert not set(gone) & records.keys()
            deleted = {
                r["platform_resource_identifier"]
                for r in stands.records(deleted=True)
                if r["_date_deleted"]
            }
            assert deleted == set(gone)


async def test_prune_refuses_above_the_cap_unless_forced_and_never_after_a_partial_listing(
    base_settings: BaseSettings, cleanup: Cleanup, tmp_path: Path
) -> None:
    with stand_ins(DATASETS, seed=12) as stands:
        collector = collector_settings(base_settings, stands, page_size=50)
        async with running(base_settings, stands, cleanup, tmp_path, collector=collector) as sync:
            assert (await sync.finished(await sync.submit("all"))).status == TaskStatus.SUCCESS
            before = len(stands.records())
            gone = _take_down(stands, 60)  # 20%: over the cap

            refused = await sync.finished(await sync.submit("all", prune=True))
            assert "prune refused" in (refused.progress_message or "")
            assert "--force-prune" in (refused.progress_message or "")
            assert refused.result["failed"] == 1 and refused.result.get("deleted", 0) == 0
            assert len(stands.records()) == before  # nothing went

            partial = await sync.finished(await sync.submit("all", prune=True, limit=10))
            assert partial.status == TaskStatus.ERRORED
            assert "--prune needs a complete listing: drop --limit" in (
                partial.progress_message or ""
            )
            since = await sync.finished(
                await sync.submit("since", value="2026-01-01T00:00:00Z", prune=True)
            )
            assert since.status == TaskStatus.ERRORED
            assert len(stands.records()) == before

            forced = await sync.finished(await sync.submit("all", prune=True, force=True))
            assert forced.status == TaskStatus.SUCCESS, forced.progress_message
            assert forced.result["deleted"] == len(gone)
            check_end_state(stands, seed=12)
