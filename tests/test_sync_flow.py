"""The Hugging Face → AI-on-Demand sync end to end, on the real broker and the stand-ins:
a full sync and its idempotent repeat, renames, `since` and `id`, change events, a record
AIoD refuses, and the failures an operator must fix (credentials, the platform role)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.sandbox import aiod as aiod_stand_in
from services.sandbox.hf_catalogue import iso
from shared.contracts.hf import HfDatasetChanged
from shared.contracts.tasks import TaskStatus
from shared.messaging import publish
from shared.settings import BaseSettings
from tests.conftest import Cleanup
from tests.test_sync_support import (
    ROLELESS,
    StandIns,
    check_end_state,
    running,
    stand_ins,
    uploader_settings,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def stands_2000() -> Iterator[StandIns]:
    with stand_ins(2000, seed=3) as stands:
        yield stands


@pytest.fixture
def stands_60() -> Iterator[StandIns]:
    with stand_ins(60, seed=5) as stands:
        yield stands


def counts(task: Any) -> dict[str, int]:
    result = task.result or {}
    return {k: result.get(k, 0) for k in ("created", "updated", "unchanged", "deleted", "failed")}


async def test_a_full_sync_leaves_one_right_record_per_dataset_and_a_rerun_changes_nothing(
    base_settings: BaseSettings, stands_2000: StandIns, cleanup: Cleanup, tmp_path: Path
) -> None:
    stands = stands_2000
    public = stands.public()
    async with running(base_settings, stands, cleanup, tmp_path) as sync:
        first = await sync.finished(await sync.submit("all"), timeout=90)
        assert first.status == TaskStatus.SUCCESS, first.progress_message
        records = check_end_state(stands, seed=3)
        assert len(records) == len(public)
        assert first.result["discovered"] == len(public)
        assert counts(first) == {
            "created": len(public), "updated": 0, "unchanged": 0, "deleted": 0, "failed": 0,
        }  # fmt: skip
        # The awkward cases, each looked at on its own.
        by_name = {r["name"]: r for r in records.values()}
        catalogue = {d.index: d for d in stands.catalogue()}
        no_created_at, huge, license_list = catalogue[1], catalogue[2], catalogue[3]
        assert by_name[no_created_at.repo_id]["date_published"] is None
        description = by_name[huge.repo_id]["description"]["plain"]
        assert len(description) == 65_535 and description.endswith(" [...]")
        assert isinstance(by_name[license_list.repo_id]["license"], str)
        with_files = [r for r in records.values() if r["distribution"]]
        assert len(with_files) == sum(d.has_parquet for d in public.values())
        file = with_files[0]["distribution"][0]
        assert file["content_url"].startswith(stands.hub.url + "/datasets/")
        assert file["content_size_kb"] >= 1 and "Split:" in file["description"]
        assert all(
            "aiod_entry" not in r or r["aiod_entry"]["status"] == "published"
            for r in records.values()
        )

        before = {pid: r["aiod_entry"]["date_modified"] for pid, r in records.items()}
        second = await sync.finished(await sync.submit("all"), timeout=90)
        assert second.status == TaskStatus.SUCCESS, second.progress_message
        assert counts(second) == {
            "created": 0, "updated": 0, "unchanged": len(public), "deleted": 0, "failed": 0,
        }  # fmt: skip
        after = check_end_state(stands, seed=3)
        assert {pid: r["aiod_entry"]["date_modified"] for pid, r in after.items()} == before


async def test_a_renamed_repo_updates_its_record(
    base_settings: BaseSettings, stands_60: StandIns, cleanup: Cleanup, tmp_path: Path
) -> None:
    stands = stands_60
    async with running(base_settings, stands, cleanup, tmp_path) as sync:
        assert (await sync.finished(await sync.submit("all"))).status == TaskStatus.SUCCESS
        renamed = stands.rename(3)
        public_renamed = [r for r in renamed if r["_id"] in stands.public()]
        assert public_renamed
        task = await sync.finished(await sync.submit("all"))
        assert task.status == TaskStatus.SUCCESS
        records = check_end_state(stands, seed=5)
        for change in public_renamed:
            assert records[change["_id"]]["name"] == change["id"]
        assert counts(task)["updated"] == len(public_renamed)
        assert counts(task)["created"] == 0


async def test_since_syncs_only_what_changed_after_the_instant_and_id_syncs_one(
    base_settings: BaseSettings, stands_60: StandIns, cleanup: Cleanup, tmp_path: Path
) -> None:
    stands = stands_60
    public = sorted(stands.public().values(), key=lambda d: d.last_modified, reverse=True)
    # Between the 10th and 11th most recently modified public dataset.
    cut = public[9].last_modified - (public[9].last_modified - public[10].last_modified) / 2
    later = {d.object_id for d in stands.catalogue() if d.last_modified >= cut}
    since = iso(cut)
    async with running(base_settings, stands, cleanup, tmp_path) as sync:
        task = await sync.finished(await sync.submit("since", value=since))
        assert task.status == TaskStatus.SUCCESS, task.progress_message
        synced = {r["platform_resource_identifier"] for r in stands.records()}
        assert synced == later & stands.public().keys()
        assert task.result["discovered"] == 10

        one = public[30]
        task = await sync.finished(await sync.submit("id", value=one.repo_id))
        assert task.status == TaskStatus.SUCCESS
        assert task.result["created"] == 1
        assert one.object_id in {r["platform_resource_identifier"] for r in stands.records()}

        missing = await sync.finished(await sync.submit("id", value="nobody/no-such-dataset"))
        assert missing.status == TaskStatus.ERRORED
        assert "no dataset nobody/no-such-dataset" in (missing.progress_message or "")


async def test_change_events_resync_one_dataset_or_remove_its_record(
    base_settings: BaseSettings, stands_60: StandIns, cleanup: Cleanup, tmp_path: Path
) -> None:
    stands = stands_60
    async with running(base_settings, stands, cleanup, tmp_path) as sync:
        assert (await sync.finished(await sync.submit("all"))).status == TaskStatus.SUCCESS
        public = list(stands.public().values())
        updated, deleted, privatised = public[20], public[21], public[22]
        events = [
            HfDatasetChanged(
                repo_id=updated.object_id, name=updated.repo_id, action="update", private=False
            ),
            HfDatasetChanged(
                repo_id=deleted.object_id, name=deleted.repo_id, action="delete", private=False
            ),
            HfDatasetChanged(
                repo_id=privatised.object_id,
                name=privatised.repo_id,
                action="update",
                private=True,
            ),
        ]
        # The update: the record was changed behind our back; the event puts it right.
        state = stands.aiod.app[aiod_stand_in.AIOD]
        record = next(r for r in stands.records() if r["name"] == updated.repo_id)
        stands.thread.call_soon(
            lambda: state.records[record["identifier"]].body.update(name="stale/name")
        )
        collector = sync.collector
        assert collector is not None
        for event in events:
            await publish(collector.service.broker, collector.service.names, event)

        async def settled() -> bool:
            names = {r["platform_resource_identifier"]: r["name"] for r in stands.records()}
            return (
                names.get(updated.object_id) == updated.repo_id
                and deleted.object_id not in names
                and privatised.object_id not in names
            )

        from tests.support.waiting import eventually

        await eventually(settled, timeout=30, interval=0.2)
        assert len(stands.records()) == len(public) - 2


async def test_a_record_aiod_refuses_fails_with_its_reason_and_the_rest_succeed(
    base_settings: BaseSettings, cleanup: Cleanup, tmp_path: Path
) -> None:
    with stand_ins(30, seed=7) as stands:
        # AIoD refuses the first record posted, for good (a validation failure).
        stands.fault(
            "aiod", {"status": 422, "count": 1, "method": "POST", "path_prefix": "/v2/datasets"}
        )
        async with running(base_settings, stands, cleanup, tmp_path) as sync:
            task = await sync.finished(await sync.submit("all"))
            assert task.status == TaskStatus.SUCCESS, task.progress_message
            public = stands.public()
            assert task.result["failed"] == 1
            assert task.result["created"] == len(public) - 1
            failed = [i for i in await sync.items(task.id) if i.outcome == "ERRORED"]
            assert len(failed) == 1
            assert "AIoD answered 422" in (failed[0].message or "")
            assert failed[0].item_key in public
            assert len(stands.records()) == len(public) - 1


@pytest.mark.parametrize("problem", ["bad secret", "missing role"])
async def test_credentials_an_operator_must_fix_end_the_task_errored_naming_the_fix(
    problem: str, base_settings: BaseSettings, cleanup: Cleanup, tmp_path: Path
) -> None:
    with stand_ins(20, seed=1) as stands:
        if problem == "bad secret":
            settings = uploader_settings(base_settings, stands, aiod_client_secret="wrong")
            fix = "FERRY_AIOD_CLIENT_SECRET"
        else:
            settings = uploader_settings(
                base_settings,
                stands,
                aiod_client_id=ROLELESS.client_id,
                aiod_client_secret=ROLELESS.secret,
            )
            fix = "lacks the role platform_huggingface"
        async with running(base_settings, stands, cleanup, tmp_path, uploader=settings) as sync:
            task = await sync.finished(await sync.submit("all"))
            assert task.status == TaskStatus.ERRORED
            # The uploader ends the task with the fix; each upload it could not make says it
            # too. (The tracker keeps the latest progress message, which a later report of
            # the collector may have replaced: the items are where it stays.)
            failed = [i for i in await sync.items(task.id) if i.outcome == "ERRORED"]
            assert failed and all(fix in (i.message or "") for i in failed)
            assert task.progress_message is not None
            assert stands.records() == []
            uploader = sync.uploader
            assert uploader is not None
            assert any(fix in p for p in await uploader.service.readiness())
