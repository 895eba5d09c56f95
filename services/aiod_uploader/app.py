"""The AIoD uploader: the one owner of AI-on-Demand access.

Consumes `aiod.datasets.upsert` (one Hugging Face dataset: mapped to an AIoD dataset, then
created, replaced only when something changed, or left alone; many in flight per worker,
`FERRY_UPLOAD_CONCURRENCY`), `aiod.datasets.remove` (a dataset deleted on the Hub or made
private: its record goes) and `aiod.datasets.prune` (after a complete listing: the records
the listing did not see go, within a safety cap). Each dataset ends as one outcome of its
task item: created, updated, unchanged, deleted, or failed with AIoD's reason.

Authenticates with a client-credentials token (cached, renewed before it expires and once
on a 401). At start it checks that the client holds the `platform_<name>` role; if it does
not, or its credentials are refused, it says so in one line, reports not ready, and ends
every task it gets ERRORED with what to fix (the uploads wait in the dead-letter queue).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.aiod_uploader.catalogue import AiodCatalogue
from services.aiod_uploader.prune import SeenLedger
from services.aiod_uploader.reporting import OutcomeReporter
from services.aiod_uploader.settings import UploaderSettings
from services.aiod_uploader.uploads import Uploader
from shared.contracts.aiod import DatasetPrune, DatasetRemove, DatasetUpsert
from shared.service import Service
from shared.topology import WorkQueue

SERVICE = "aiod_uploader"
REMOVE = WorkQueue(SERVICE, "remove", DatasetRemove.ROUTING_KEY, prefetch=16)
PRUNE = WorkQueue(SERVICE, "prune", DatasetPrune.ROUTING_KEY, prefetch=1)


def upsert_queue(settings: UploaderSettings) -> WorkQueue:
    return WorkQueue(
        SERVICE, "upsert", DatasetUpsert.ROUTING_KEY, prefetch=settings.upload_concurrency
    )


@dataclass
class AiodUploader:
    settings: UploaderSettings
    service: Service
    catalogue: AiodCatalogue
    uploader: Uploader


def build(settings: UploaderSettings | None = None) -> AiodUploader:
    """The uploader, its handlers registered; nothing is connected until it runs."""
    settings = settings or UploaderSettings.from_env()
    service = Service(SERVICE, settings, description=__doc__)
    catalogue = AiodCatalogue(settings)
    reporter = OutcomeReporter(
        service, interval=settings.report_interval, batch_size=settings.report_batch_size
    )
    ledger = SeenLedger(settings.amqp_url, service.names)
    uploader = Uploader(settings, service, catalogue, reporter, ledger)
    handles = service.handles

    @handles(upsert_queue(settings), DatasetUpsert)
    async def upsert_dataset(body: DatasetUpsert) -> None:
        """Create, update or leave alone the AIoD record of one Hub dataset."""
        await uploader.upsert(body)

    @handles(REMOVE, DatasetRemove)
    async def remove_dataset(body: DatasetRemove) -> None:
        """Remove the AIoD record of a dataset that left the Hub's public catalogue."""
        await uploader.remove(body)

    @handles(PRUNE, DatasetPrune)
    async def prune_datasets(body: DatasetPrune) -> None:
        """After a complete listing, remove the records it did not see (within the cap)."""
        await uploader.prune(body)

    service.add_readiness_check(uploader.readiness)
    service.app.after_startup(uploader.start_preflight)

    async def close() -> None:
        await catalogue.aclose()
        await ledger.close()

    service.app.after_shutdown(close)
    return AiodUploader(settings, service, catalogue, uploader)
