"""The Hugging Face collector: the one owner of Hugging Face Hub access.

Consumes `hf.datasets.collect` (a sync task's driving command: mode `all`, `id` or
`since`), and walks the listing one `hf.datasets.page` at a time, each carrying the Hub's
cursor URL, so a crash resumes at the page it was on. For every public dataset it looks up
the parquet files (the dataset viewer) and publishes one `aiod.datasets.upsert`, keyed by
the Hub's `_id`; it reports discovery progress, then discovery complete with the total.
With `prune`, a complete `all` listing ends with `aiod.datasets.prune`. Every call to the
Hub is paced by its `RateLimit` headers, slowing down before the 429.

Also consumes `hf.datasets.changed` (from the webhook receiver): a change re-syncs that
dataset, a delete or a turn to private removes its record. Answers `hf.repos.whoami`
(cached), `hf.repos.create`, `hf.repos.delete` and `hf.repos.visibility`.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.hf_collector.hub import Hub
from services.hf_collector.listing import Lister
from services.hf_collector.repos import Repositories
from services.hf_collector.settings import CollectorSettings
from shared.contracts.hf import (
    HfDatasetChanged,
    HfDatasetsCollect,
    HfRepoCreate,
    HfRepoCreateReply,
    HfRepoDelete,
    HfRepoDeleteReply,
    HfRepoVisibility,
    HfRepoVisibilityReply,
    HfWhoami,
    HfWhoamiReply,
)
from shared.contracts.hf_sync import HfDatasetsPage
from shared.delivery import Delivery
from shared.service import Service
from shared.topology import WorkQueue

SERVICE = "hf_collector"
COLLECT = WorkQueue(SERVICE, "collect", HfDatasetsCollect.ROUTING_KEY, prefetch=4)
PAGE = WorkQueue(SERVICE, "page", HfDatasetsPage.ROUTING_KEY, prefetch=2)
CHANGED = WorkQueue(SERVICE, "changed", HfDatasetChanged.ROUTING_KEY, prefetch=16)
WHOAMI = WorkQueue.request(SERVICE, "repos-whoami", HfWhoami.ROUTING_KEY, prefetch=8)
CREATE = WorkQueue.request(SERVICE, "repos-create", HfRepoCreate.ROUTING_KEY, prefetch=8)
DELETE = WorkQueue.request(SERVICE, "repos-delete", HfRepoDelete.ROUTING_KEY, prefetch=8)
VISIBILITY = WorkQueue.request(
    SERVICE, "repos-visibility", HfRepoVisibility.ROUTING_KEY, prefetch=8
)


@dataclass
class HfCollector:
    settings: CollectorSettings
    service: Service
    hub: Hub
    lister: Lister


def build(settings: CollectorSettings | None = None) -> HfCollector:
    """The collector, its handlers registered; nothing is connected until it runs."""
    settings = settings or CollectorSettings.from_env()
    service = Service(SERVICE, settings, description=__doc__)
    hub = Hub(settings)
    lister = Lister(settings, service, hub)
    repos = Repositories(hub)
    handles = service.handles

    @handles(COLLECT, HfDatasetsCollect)
    async def collect_datasets(body: HfDatasetsCollect, delivery: Delivery) -> None:
        """Start a sync's listing (or, for mode `id`, sync the one dataset)."""
        await lister.collect(body, delivery)

    @handles(PAGE, HfDatasetsPage)
    async def read_page(body: HfDatasetsPage, delivery: Delivery) -> None:
        """Read one listing page: an upsert per public dataset, then the next page."""
        await lister.read_page(body, delivery)

    @handles(CHANGED, HfDatasetChanged)
    async def dataset_changed(body: HfDatasetChanged, delivery: Delivery) -> None:
        """Re-sync one dataset a webhook told about, or remove its record."""
        await lister.on_change(body, delivery)

    @handles(WHOAMI, HfWhoami)
    async def whoami(body: HfWhoami) -> HfWhoamiReply:
        """The token's account (cached)."""
        return await repos.whoami(body)

    @handles(CREATE, HfRepoCreate)
    async def create_repo(body: HfRepoCreate) -> HfRepoCreateReply:
        """Create a dataset, model or space repository."""
        return await repos.create(body)

    @handles(DELETE, HfRepoDelete)
    async def delete_repo(body: HfRepoDelete) -> HfRepoDeleteReply:
        """Delete a repository."""
        return await repos.delete(body)

    @handles(VISIBILITY, HfRepoVisibility)
    async def set_visibility(body: HfRepoVisibility) -> HfRepoVisibilityReply:
        """Make a repository private or public."""
        return await repos.set_visibility(body)

    service.app.after_shutdown(hub.aclose)
    return HfCollector(settings, service, hub, lister)
