"""Prune: after a complete listing, remove the platform's records the listing did not see.

Where the seen ids live: in the task's *seen queue* on the broker (`seen_queue_name`), one
`SeenChunk` per listing page, published (and confirmed) by the collector before it moves on
to the next page. It is durable, it survives a crash of either service, every replica of
either reaches it, and it costs no store of our own; the tracker's item keys would hold the
same set, but only behind a reply that cannot grow to a full catalogue's size.

A prune never runs on a partial listing: the prune message says how many pages the listing
had, and unless the queue holds a chunk for each, nothing is removed. A safety cap refuses
to remove more than `max_fraction` of the platform's records unless `force` is given (a
broken listing must not empty the catalogue). The decision, once taken, is written to the
seen queue too, so a redelivered prune removes the same records and reports the same count
rather than deciding again on a catalogue it already changed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aio_pika
import aio_pika.abc
import msgspec

from services.aiod_uploader.catalogue import AiodCatalogue
from shared.contracts.aiod import SEEN_QUEUE_ARGUMENTS, DatasetPrune, SeenChunk, seen_queue_name
from shared.topology import Names

log = logging.getLogger("ferry.aiod_uploader.prune")

PRUNE_ITEM = "prune"  # the task item that carries a refused or impossible prune


@dataclass(frozen=True)
class SeenIds:
    pages: frozenset[int]
    ids: frozenset[str]
    decided: tuple[str, ...] | None  # the ids a previous run of this prune chose to remove


@dataclass(frozen=True)
class PruneDecision:
    remove: tuple[str, ...]  # platform ids
    refused: str | None = None  # why nothing is removed


class SeenLedger:
    """Reads (and appends the decision to) a task's seen queue, on a connection of its own."""

    def __init__(self, amqp_url: str, names: Names) -> None:
        self.amqp_url = amqp_url
        self.names = names
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> aio_pika.abc.AbstractRobustConnection:
        async with self._lock:
            if self._connection is None or self._connection.is_closed:
                self._connection = await aio_pika.connect_robust(self.amqp_url, timeout=10)
            return self._connection

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def read(self, task_id: str) -> SeenIds:
        """Every chunk of the queue; they stay in it (taken unacked, returned on close)."""
        connection = await self._connect()
        channel = await connection.channel()
        pages: set[int] = set()
        ids: set[str] = set()
        decided: tuple[str, ...] | None = None
        try:
            queue = await channel.declare_queue(
                self.names(seen_queue_name(task_id)), durable=True, arguments=SEEN_QUEUE_ARGUMENTS
            )
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                chunk = msgspec.json.decode(message.body, type=SeenChunk)
                if chunk.decided:
                    decided = (decided or ()) + tuple(chunk.ids)
                else:
                    pages.add(chunk.page)
                    ids.update(chunk.ids)
        finally:
            await channel.close()  # every message taken goes back into the queue
        return SeenIds(frozenset(pages), frozenset(ids), decided)

    async def record_decision(self, task_id: str, remove: tuple[str, ...]) -> None:
        connection = await self._connect()
        channel = await connection.channel(publisher_confirms=True)
        try:
            for start in range(0, max(len(remove), 1), 20_000):  # ~600 kB per chunk at most
                chunk = SeenChunk(page=0, ids=list(remove[start : start + 20_000]), decided=True)
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        msgspec.json.encode(chunk),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        content_type="application/json",
                    ),
                    routing_key=self.names(seen_queue_name(task_id)),
                    mandatory=True,
                )
        finally:
            await channel.close()


async def decide(
    body: DatasetPrune, seen: SeenIds, catalogue: AiodCatalogue, page_size: int
) -> PruneDecision:
    """What to remove: the records whose platform id the complete listing did not see."""
    if seen.decided is not None:
        return PruneDecision(seen.decided)
    missing = sorted(set(range(body.pages)) - seen.pages)
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        return PruneDecision(
            (),
            refused=f"prune skipped: the record of the datasets seen is missing pages {shown}"
            f" of {body.pages} (expired, or the listing did not finish); nothing was removed",
        )
    records: list[str] = []
    offset = 0
    while True:
        page = await catalogue.list_page(offset, page_size)
        records.extend(
            str(r["platform_resource_identifier"])
            for r in page
            if r.get("platform_resource_identifier") is not None
        )
        if len(page) < page_size:
            break
        offset += len(page)
    stale = tuple(pid for pid in dict.fromkeys(records) if pid not in seen.ids)
    if not stale:
        return PruneDecision(())
    # Of the records there will be once the sync is done: those seen, and those not.
    share = len(stale) / max(len(seen.ids | set(records)), 1)
    if share > body.max_fraction and not body.force:
        return PruneDecision(
            (),
            refused=f"prune refused: {len(stale)} of the {len(seen.ids | set(records))} records"
            f" ({share:.0%}) were not in the listing, above the safety cap of"
            f" {body.max_fraction:.0%}; nothing was removed. Check the listing, or run the"
            " sync again with --force-prune if they really are gone",
        )
    return PruneDecision(stale)
