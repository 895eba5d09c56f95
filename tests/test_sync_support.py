"""What the sync tests share (no tests here): the stand-ins of the Hub and AIoD served from a
thread, the tracker, collector and uploader run in-process or as processes, and checks of
the end state against the Hub's catalogue."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec

from services.aiod_uploader.app import AiodUploader
from services.aiod_uploader.app import build as build_uploader
from services.aiod_uploader.mapping import says_the_same, to_aiod
from services.aiod_uploader.settings import UploaderSettings
from services.hf_collector.app import HfCollector
from services.hf_collector.app import build as build_collector
from services.hf_collector.hub import HubItem
from services.hf_collector.settings import CollectorSettings
from services.sandbox import aiod as aiod_stand_in
from services.sandbox import hf_hub
from services.sandbox.hf_catalogue import HubDataset as CatalogueDataset
from services.sandbox.hf_catalogue import file_size, parquet_layout
from services.sandbox.server import Listening, ServerThread
from services.task_tracker.app import TaskTracker
from shared.contracts.aiod import HubDataset, ParquetFile, seen_queue_name
from shared.contracts.hf import HfDatasetsCollect
from shared.contracts.tasks import (
    DrivingCommand,
    ItemView,
    TaskGet,
    TaskGetReply,
    TaskSubmit,
    TaskView,
)
from shared.messaging import RemoteError, Requester, publish
from shared.service import Service
from shared.settings import BaseSettings
from tests.conftest import Cleanup
from tests.support.tracker import free_port, tracker_settings
from tests.support.waiting import eventually

HF_TOKEN = hf_hub.DEFAULT_TOKEN
CONNECTOR, ROLELESS = aiod_stand_in.DEFAULT_CLIENTS[:2]
PLATFORM = "huggingface"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


# -- the stand-ins ------------------------------------------------------------------------------


@dataclass
class StandIns:
    thread: ServerThread
    hub: Listening
    aiod: Listening

    def catalogue(self) -> list[CatalogueDataset]:
        state = self.hub.app[hf_hub.HUB]
        return self.thread.call_soon(lambda: [d for d in state.catalogue.datasets if d])

    def public(self) -> dict[str, CatalogueDataset]:
        """The datasets a sync must leave a record of: public and not disabled, by `_id`."""
        return {d.object_id: d for d in self.catalogue() if not d.private and not d.disabled}

    def records(self, *, deleted: bool = False) -> list[dict[str, Any]]:
        """The platform's records (live ones, or all of them with `deleted`), as read."""
        state = self.aiod.app[aiod_stand_in.AIOD]
        return self.thread.call_soon(
            lambda: [
                r.sandbox_view()
                for r in state.records.values()
                if r.platform == PLATFORM and (deleted or r.date_deleted is None)
            ]
        )

    def fault(self, stand_in: str, *changes: dict[str, Any]) -> None:
        url = (self.hub if stand_in == "hub" else self.aiod).url + "/_sandbox/faults"
        httpx.post(url, json=list(changes), timeout=10).raise_for_status()

    def clear_faults(self) -> None:
        for listening in (self.hub, self.aiod):
            httpx.delete(listening.url + "/_sandbox/faults", timeout=10).raise_for_status()

    def rename(self, count: int) -> list[dict[str, Any]]:
        answer = httpx.post(self.hub.url + "/_sandbox/renames", json={"count": count}, timeout=10)
        answer.raise_for_status()
        renamed: list[dict[str, Any]] = answer.json()
        return renamed


@contextlib.contextmanager
def stand_ins(
    datasets: int,
    *,
    seed: int = 0,
    hub: hf_hub.HubOptions | None = None,
    aiod: aiod_stand_in.AiodOptions | None = None,
) -> Iterator[StandIns]:
    hub_options = hub or hf_hub.HubOptions(datasets=datasets, seed=seed, quota=100_000)
    apps = [
        ("hf-hub", hf_hub.create_app(hub_options), 0),
        ("aiod", aiod_stand_in.create_app(aiod or aiod_stand_in.AiodOptions(seed=seed)), 0),
    ]
    thread = ServerThread(apps)
    with thread as (hub_listening, aiod_listening):
        yield StandIns(thread, hub_listening, aiod_listening)


# -- settings -----------------------------------------------------------------------------------


def _common(base: BaseSettings) -> dict[str, Any]:
    return {f.name: getattr(base, f.name) for f in fields(BaseSettings)}


def collector_settings(base: BaseSettings, stands: StandIns, **overrides: Any) -> CollectorSettings:
    values: dict[str, Any] = {
        **_common(base),
        "hf_endpoint": stands.hub.url,
        "hf_viewer_url": stands.hub.url,
        "hf_token": HF_TOKEN,
        "http_timeout": 2.0,
        **overrides,
    }
    return CollectorSettings(**values)


def uploader_settings(base: BaseSettings, stands: StandIns, **overrides: Any) -> UploaderSettings:
    values: dict[str, Any] = {
        **_common(base),
        "aiod_api_url": stands.aiod.url + "/",
        "aiod_auth_url": stands.aiod.url + "/aiod-auth/",
        "aiod_client_id": CONNECTOR.client_id,
        "aiod_client_secret": CONNECTOR.secret,
        "http_timeout": 2.0,
        **overrides,
    }
    return UploaderSettings(**values)


# -- running the services -----------------------------------------------------------------------


@dataclass
class Sync:
    """The tracker, and whichever of the collector and uploader run in this process."""

    base: BaseSettings
    stands: StandIns
    cleanup: Cleanup
    tracker: TaskTracker
    requester: Requester
    collector: HfCollector | None = None
    uploader: AiodUploader | None = None
    task_ids: list[str] = field(default_factory=list)

    @property
    def names(self) -> Any:
        return self.tracker.service.names

    async def submit(self, mode: str = "all", **body: Any) -> str:
        """Submit a sync task as `ferry sync hf-to-aiod` does; its id."""
        task_id = f"sync-{len(self.task_ids)}-{os.urandom(4).hex()}"
        command_body = {"mode": mode, **body}
        HfDatasetsCollect(task_id=task_id, **command_body)  # the same checks as the collector
        self.task_ids.append(task_id)
        self.cleanup.queues.append(self.names(seen_queue_name(task_id)))
        await publish(
            self.tracker.service.broker,
            self.names,
            TaskSubmit(
                task_id=task_id,
                kind="hf-to-aiod",
                params=command_body,
                command=DrivingCommand(
                    routing_key=HfDatasetsCollect.ROUTING_KEY, body=command_body
                ),
                submitted_at=datetime.now(UTC),
            ),
        )
        return task_id

    async def task(self, task_id: str, *, items: bool = False) -> TaskGetReply | None:
        try:
            return await self.requester.request(
                TaskGet(task_id=task_id, include_items=items), TaskGetReply
            )
        except RemoteError as exc:
            if "no such task" in str(exc):
                return None
            raise

    async def finished(self, task_id: str, *, timeout: float = 60) -> TaskView:
        """The task once it is terminal (SUCCESS, ERRORED, ...), waiting up to `timeout`."""

        async def ended() -> TaskView | None:
            reply = await self.task(task_id)
            task = reply.task if reply else None
            return task if task is not None and task.status.is_terminal else None

        found: TaskView = await eventually(ended, timeout=timeout, interval=0.2)
        return found

    async def items(self, task_id: str) -> list[ItemView]:
        reply = await self.task(task_id, items=True)
        assert reply is not None
        return reply.items


@contextlib.asynccontextmanager
async def running(
    base: BaseSettings,
    stands: StandIns,
    cleanup: Cleanup,
    tmp_path: Path,
    *,
    collector: CollectorSettings | bool = True,
    uploader: UploaderSettings | bool = True,
    tracker_overrides: dict[str, Any] | None = None,
) -> AsyncIterator[Sync]:
    """The tracker and (unless told `False`) the collector and uploader, in this process."""
    started: list[Service] = []
    tracker = TaskTracker(tracker_settings(base, "sqlite", tmp_path, **(tracker_overrides or {})))
    parts: list[Any] = [tracker]
    if collector is not False:
        parts.append(
            build_collector(
                collector
                if isinstance(collector, CollectorSettings)
                else collector_settings(base, stands)
            )
        )
    if uploader is not False:
        parts.append(
            build_uploader(
                uploader
                if isinstance(uploader, UploaderSettings)
                else uploader_settings(base, stands)
            )
        )
    try:
        for part in parts:
            cleanup.services.append(part.service)
            await part.service.app.start()
            started.append(part.service)
        async with Requester(base.amqp_url, tracker.service.names) as requester:
            yield Sync(
                base,
                stands,
                cleanup,
                tracker,
                requester,
                collector=next((p for p in parts if isinstance(p, HfCollector)), None),
                uploader=next((p for p in parts if isinstance(p, AiodUploader)), None),
            )
    finally:
        for service in reversed(started):
            await service.app.stop()


class ServiceProcess:
    """`python -m services.<name>` with its settings in the environment, killable."""

    def __init__(self, module: str, settings: BaseSettings, log: Path) -> None:
        self.module = module
        self.settings = settings
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **self.settings.as_environment(), "FERRY_HTTP_PORT": str(free_port())}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env=env,
                stdout=out,
                stderr=out,
                cwd=PROJECT_ROOT,
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


# -- the end state ------------------------------------------------------------------------------


def expected_record(dataset: CatalogueDataset, seed: int, hub_url: str) -> dict[str, Any]:
    """What the record of a catalogue dataset must say, through the listing's own rendering."""
    item = msgspec.json.decode(
        msgspec.json.encode(hf_hub.render(dataset, hf_hub.FULL_FIELDS, seed)), type=HubItem
    )
    files = [
        ParquetFile(
            config=config,
            split=split,
            url=f"{hub_url}/datasets/{dataset.repo_id}/resolve/refs%2Fconvert%2Fparquet"
            f"/{config}/{split}/0000.parquet",
            filename="0000.parquet",
            size=file_size(dataset, config, split),
        )
        for config, splits in (parquet_layout(dataset) if dataset.has_parquet else [])
        for split in splits
    ]
    hub_dataset = HubDataset(
        object_id=item.object_id,
        repo_id=item.repo_id,
        private=item.private,
        created_at=item.created_at,
        description=item.description,
        license=item.license,
        tags=item.tags,
        parquet_files=files,
    )
    return to_aiod(hub_dataset, PLATFORM).as_json()


def check_end_state(stands: StandIns, *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Exactly one live record per public dataset, each saying what it must; returns them."""
    records = stands.records()
    counts = Counter(r["platform_resource_identifier"] for r in records)
    duplicates = {pid: n for pid, n in counts.items() if n > 1}
    assert not duplicates, f"duplicate records: {list(duplicates.items())[:5]}"
    by_pid = {r["platform_resource_identifier"]: r for r in records}
    public = stands.public()
    missing = public.keys() - by_pid.keys()
    extra = by_pid.keys() - public.keys()
    assert not missing, f"{len(missing)} datasets without a record, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} records of no public dataset, e.g. {sorted(extra)[:3]}"
    wrong = [
        pid
        for pid, dataset in public.items()
        if not says_the_same(expected_record(dataset, seed, stands.hub.url), by_pid[pid])
    ]
    assert not wrong, f"{len(wrong)} records say something else, e.g. {by_pid[wrong[0]]}"
    return by_pid


def distribution_size_kb(size: int) -> int:
    return math.ceil(size / 1000)
