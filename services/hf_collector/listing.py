"""The dataset listing of a sync: `hf.datasets.collect` starts it, `hf.datasets.page` walks it.

A collect of mode `all` or `since` publishes the first page message. Each page message is
read: the next page's message (the Hub's cursor URL) is published at once, so the listing
reads on, then this page's parquet files are looked up (many at once) and one
`aiod.datasets.upsert` published per public dataset — all confirmed before the page is
acked. So a crash resumes at the pages that were in hand, and every page acked is done.
`since` reads the listing sorted by last modification (the Hub sorts descending) and stops
at the first dataset older than the value; `all` reads it by creation time, an order that
updates and renames do not reshuffle under the cursor.

When the listing ends the collector reports discovery complete with the number of datasets
it found (`items_expected`): the tracker ends the task once every one has an outcome. With
`prune`, each page's ids also go to the task's seen queue, and the end of a complete
listing hands the prune to the uploader instead (which reports the final count).

Private and disabled datasets are not in the public catalogue: they are not synced (and a
prune removes their records).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from faststream.rabbit import QueueType, RabbitQueue

from services.hf_collector.hub import Hub, HubItem, HubRunFailure
from services.hf_collector.settings import CollectorSettings
from shared.contracts.aiod import (
    SEEN_QUEUE_EXPIRES_MS,
    DatasetPrune,
    DatasetRemove,
    DatasetUpsert,
    HubDataset,
    RemoveReason,
    SeenChunk,
    seen_queue_name,
)
from shared.contracts.base import read_instant
from shared.contracts.hf import HfDatasetChanged, HfDatasetsCollect
from shared.contracts.hf_sync import HfDatasetsPage
from shared.contracts.tasks import TaskGet, TaskGetReply, TaskSubmit, TaskUpdate
from shared.delivery import Delivery
from shared.messaging import NoReply, RemoteError, Unroutable, publish
from shared.retry import describe
from shared.service import Service

log = logging.getLogger("ferry.hf_collector.listing")

CHANGE_TASK_KIND = "hf-dataset-change"


class Lister:
    def __init__(self, settings: CollectorSettings, service: Service, hub: Hub) -> None:
        self.settings = settings
        self.service = service
        self.hub = hub
        self._declared_seen: set[str] = set()

    # -- hf.datasets.collect --------------------------------------------------------------

    async def collect(self, body: HfDatasetsCollect, delivery: Delivery) -> None:
        if await self._discovery_done(body.task_id):
            log.info(
                "collect of a task whose discovery is done: nothing to do",
                extra={"task_id": body.task_id},
            )
            return
        problem = _prune_problem(body)
        if problem is not None:
            await self._end(body.task_id, problem)
            return
        await self._update(
            TaskUpdate(
                task_id=body.task_id,
                status="RUNNING",
                progress_message=f"listing Hugging Face datasets (mode {body.mode})",
                observed_at=_now(),
            )
        )
        try:
            if body.mode == "id":
                assert body.value is not None  # the contract checks it
                await self._collect_one(body.task_id, body.value, delivery)
                return
            first = self.hub.first_page_url(
                sort="lastModified" if body.mode == "since" else "createdAt",
                author=body.author,
                search=body.search,
                filters=list(body.filter),
            )
        except HubRunFailure as failure:
            await self._end(body.task_id, str(failure))
            return
        await delivery.publish(
            HfDatasetsPage(
                task_id=body.task_id,
                url=first,
                mode="since" if body.mode == "since" else "all",
                since=body.value if body.mode == "since" else None,
                limit=body.limit,
                prune=body.prune,
                force=body.force,
            )
        )

    async def _collect_one(self, task_id: str, repo_id: str, delivery: Delivery) -> None:
        item = await self.hub.dataset_info(repo_id)
        if item is None:
            await self._end(
                task_id,
                f"no dataset {repo_id} on the Hugging Face Hub (or it is not visible with"
                " this token): check the id",
            )
            return
        if item.is_public:
            await delivery.publish(await self._upsert(task_id, item))
        else:  # gone from the public catalogue: its record goes too
            reason: RemoveReason = "private" if item.private else "disabled"
            await delivery.publish(
                DatasetRemove(task_id=task_id, item_key=item.object_id, reason=reason)
            )
        await self._update(
            TaskUpdate(
                task_id=task_id,
                items_expected=1,
                result={"discovered": 1},
                progress_message=f"discovery complete: 1 dataset ({repo_id})",
                observed_at=_now(),
            )
        )

    # -- hf.datasets.page -----------------------------------------------------------------

    async def read_page(self, body: HfDatasetsPage, delivery: Delivery) -> None:
        try:
            page = await self.hub.list_page(body.url)
        except HubRunFailure as failure:
            await self._end(body.task_id, str(failure))
            return
        since = read_instant(body.since)
        ended = page.next_url is None
        chosen: dict[str, HubItem] = {}
        for item in page.items:
            modified = read_instant(item.last_modified)
            if since is not None and modified is not None and modified < since:
                ended = True  # sorted newest first: everything after is older still
                break
            if item.is_public:
                chosen.setdefault(item.object_id, item)
        items = list(chosen.values())
        if body.limit is not None and body.discovered + len(items) >= body.limit:
            items = items[: body.limit - body.discovered]
            ended = True
        discovered = body.discovered + len(items)
        pages = body.page + 1
        if body.prune:
            await self._record_seen(body.task_id, body.page, [i.object_id for i in items])
        if not ended:
            # The next page goes first: the listing reads on while this page's parquet files
            # are looked up. This page is acked only once its own upserts are confirmed, so
            # a crash still brings back exactly the pages not done.
            assert page.next_url is not None
            following = msgspec.structs.replace(
                body, url=page.next_url, page=pages, discovered=discovered
            )
            await delivery.publish(following)
        await delivery.publish_many(await self._upserts(body.task_id, items))
        if not ended:
            await self._update(
                TaskUpdate(
                    task_id=body.task_id,
                    progress_message=f"discovering: {discovered} datasets in {pages} pages",
                    observed_at=_now(),
                )
            )
            return
        if body.prune:
            await delivery.publish(
                DatasetPrune(
                    task_id=body.task_id,
                    pages=pages,
                    discovered=discovered,
                    force=body.force,
                    max_fraction=self.settings.prune_max_fraction,
                )
            )
            message = f"discovery complete: {discovered} datasets in {pages} pages; pruning next"
            await self._update(
                TaskUpdate(
                    task_id=body.task_id,
                    progress_message=message,
                    result={"discovered": discovered},
                    observed_at=_now(),
                )
            )
            return
        await self._update(
            TaskUpdate(
                task_id=body.task_id,
                items_expected=discovered,
                result={"discovered": discovered},
                progress_message=f"discovery complete: {discovered} datasets in {pages} pages",
                observed_at=_now(),
            )
        )

    async def _upserts(self, task_id: str, items: Sequence[HubItem]) -> list[DatasetUpsert]:
        gate = asyncio.Semaphore(self.settings.parquet_concurrency)

        async def one(item: HubItem) -> DatasetUpsert:
            async with gate:
                return await self._upsert(task_id, item)

        return list(await asyncio.gather(*(one(item) for item in items)))

    async def _upsert(self, task_id: str, item: HubItem) -> DatasetUpsert:
        files = await self.hub.parquet_files(item.repo_id)
        dataset = HubDataset(
            object_id=item.object_id,
            repo_id=item.repo_id,
            private=item.private,
            gated=item.gated,
            created_at=item.created_at,
            last_modified=item.last_modified,
            description=item.description,
            license=item.license,
            tags=item.tags,
            parquet_files=files,
        )
        return DatasetUpsert(task_id=task_id, item_key=item.object_id, dataset=dataset)

    async def _record_seen(self, task_id: str, page: int, ids: list[str]) -> None:
        """Append this page's ids to the task's seen queue (confirmed before moving on)."""
        name = self.service.names(seen_queue_name(task_id))
        if name not in self._declared_seen:
            await self.service.broker.declare_queue(
                RabbitQueue(
                    name,
                    durable=True,
                    queue_type=QueueType.CLASSIC,
                    arguments={"x-expires": SEEN_QUEUE_EXPIRES_MS},
                )
            )
            self._declared_seen.add(name)
        chunk = msgspec.json.encode(SeenChunk(page=page, ids=ids))
        await publish(self.service.broker, self.service.names, chunk, exchange="", routing_key=name)

    # -- hf.datasets.changed --------------------------------------------------------------

    async def on_change(self, body: HfDatasetChanged, delivery: Delivery) -> None:
        """One dataset changed on the Hub: re-sync it, or remove its record when it was
        deleted or made private. Each change is a task of its own (one item), named after
        the event, so a redelivered event is the same task."""
        event = delivery.message_id or hashlib.sha256(body.encode()).hexdigest()
        task_id = "hf-change-" + hashlib.sha256(event.encode()).hexdigest()[:24]
        name = body.moved_to or body.name
        await delivery.publish(
            TaskSubmit(
                task_id=task_id,
                kind=CHANGE_TASK_KIND,
                name=f"{body.action} {name}",
                params={"repo_id": body.repo_id, "name": name, "action": body.action},
                submitted_at=_now(),
            )
        )
        command: DatasetUpsert | DatasetRemove
        if body.action == "delete" or body.private:
            reason: RemoveReason = "deleted" if body.action == "delete" else "private"
            command = DatasetRemove(task_id=task_id, item_key=body.repo_id, reason=reason)
        else:
            try:
                item = await self.hub.dataset_info(name)
            except HubRunFailure as failure:
                await self._end(task_id, str(failure))
                return
            if item is None or item.object_id != body.repo_id:
                # Not there under this name any more (deleted, or made private since):
                # what the event was about has left the public catalogue.
                command = DatasetRemove(task_id=task_id, item_key=body.repo_id, reason="gone")
            elif not item.is_public:
                command = DatasetRemove(
                    task_id=task_id,
                    item_key=body.repo_id,
                    reason="private" if item.private else "disabled",
                )
            else:
                command = await self._upsert(task_id, item)
        await delivery.publish(command)
        await self._update(
            TaskUpdate(
                task_id=task_id,
                status="RUNNING",
                items_expected=1,
                progress_message=f"{body.action} of {name}: {command.ROUTING_KEY}",
                observed_at=_now(),
            )
        )

    # -- reporting ------------------------------------------------------------------------

    async def _discovery_done(self, task_id: str) -> bool:
        """Whether a re-driven collect finds its task's discovery already complete (then a
        new listing would only repeat it). Unknown (tracker silent): not done."""
        try:
            reply = await self.service.request(TaskGet(task_id=task_id), TaskGetReply, timeout=5)
        except (NoReply, RemoteError, Unroutable, OSError) as exc:
            log.info(
                "could not ask the tracker about the task",
                extra={"task_id": task_id, "error": describe(exc)},
            )
            return False
        task = reply.task
        if task is None:
            return False
        expected: Any = getattr(task, "items_expected", None)
        return bool(task.status.is_terminal or expected is not None)

    async def _end(self, task_id: str, message: str) -> None:
        log.error(f"task {task_id} cannot go on: {message}")
        await self._update(
            TaskUpdate(
                task_id=task_id, status="ERRORED", progress_message=message, observed_at=_now()
            )
        )

    async def _update(self, update: TaskUpdate) -> None:
        await publish(self.service.broker, self.service.names, update)


def _prune_problem(body: HfDatasetsCollect) -> str | None:
    """Why this collect may not prune: only a complete, unfiltered `all` listing may."""
    if not body.prune:
        return None
    if body.mode != "all":
        return f"--prune needs --mode all (a `{body.mode}` listing does not see every dataset)"
    narrowed = [
        flag
        for flag, value in (
            ("--author", body.author),
            ("--search", body.search),
            ("--filter", body.filter),
            ("--limit", body.limit),
        )
        if value
    ]
    if narrowed:
        return (
            f"--prune needs a complete listing: drop {', '.join(narrowed)} (records outside"
            " the selection would be removed)"
        )
    return None


def _now() -> datetime:
    return datetime.now(UTC)
