"""Contracts of the AI-on-Demand side of the dataset sync, owned by the `aiod_uploader`.

`aiod.datasets.upsert` carries one Hugging Face dataset as the `hf_collector` read it (its
metadata and its parquet files); the uploader maps it to an AIoD dataset and creates,
replaces or leaves alone the record keyed by `(platform, platform_resource_identifier)`,
the identifier being the Hub's `_id` (the same across renames). `item_key` is that `_id`,
so a redelivery, or the same dataset listed twice, is the same task item.

`aiod.datasets.remove` removes the record of one `_id` (the dataset was deleted on the Hub or
made private). `aiod.datasets.prune` removes, after a complete listing, every record of the
platform whose `_id` the listing did not see; the ids seen are in the task's *seen queue*
(`seen_queue_name`), one `SeenChunk` per listing page, written by the collector before it
moves on to the next page, so they survive crashes and are shared by every replica.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec

from shared.contracts.base import Contract, Identifier, ItemCommand

ObjectId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{24}$")]  # the Hub's `_id`
Count = Annotated[int, msgspec.Meta(ge=0)]
Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
# Why a record goes: the dataset was deleted, made private, disabled, or is not found.
RemoveReason = Literal["deleted", "private", "disabled", "gone"]


class ParquetFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """One file of the dataset viewer's parquet conversion (`/parquet?dataset=ID`)."""

    config: str
    split: str
    url: str
    filename: str
    size: int | None = None  # bytes


class HubDataset(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """A dataset as the Hub lists it: what the mapping to AIoD needs, nothing more."""

    object_id: ObjectId  # `_id`
    repo_id: str  # `id`: owner/name, changes with a rename
    private: bool = False
    gated: bool | str = False
    created_at: str | None = None  # ISO 8601; absent for some repos
    last_modified: str | None = None
    description: str | None = None
    license: str | list[str] | None = None  # `cardData.license`: a string or a list
    tags: list[str] = []
    parquet_files: list[ParquetFile] = []


class DatasetUpsert(ItemCommand, kw_only=True):
    """Create or update the AIoD record of one Hub dataset; `item_key` is its `_id`."""

    ROUTING_KEY: ClassVar[str] = "aiod.datasets.upsert"

    dataset: HubDataset

    def __post_init__(self) -> None:
        if self.item_key != self.dataset.object_id:
            raise ValueError("`item_key` must be the dataset's `object_id`")


class DatasetRemove(ItemCommand, kw_only=True):
    """Remove the AIoD record of one Hub dataset (`item_key` is its `_id`), if there is one."""

    ROUTING_KEY: ClassVar[str] = "aiod.datasets.remove"

    reason: RemoveReason = "deleted"


class DatasetPrune(Contract, kw_only=True):
    """After a complete listing: remove the platform's records whose `_id` was not seen.

    `pages` is how many pages the listing had: the seen queue must hold a chunk of each, or
    the listing is not known to be complete and nothing is removed. `discovered` is how many
    distinct datasets the listing found (the task's expected items before the removals).
    """

    ROUTING_KEY: ClassVar[str] = "aiod.datasets.prune"

    task_id: Identifier
    pages: Annotated[int, msgspec.Meta(ge=1)]
    discovered: Count
    force: bool = False  # remove even beyond the safety cap
    max_fraction: Fraction = 0.1  # the safety cap: the share of records a prune may remove


class SeenChunk(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """The `_id`s one listing page saw (in the task's seen queue); or, with `decided`, the
    prune's decision: the `_id`s it is removing, kept so a redelivered prune repeats it."""

    page: Count
    ids: list[str]
    decided: bool = False
    version: int = 1


def seen_queue_name(task_id: str) -> str:
    """The seen queue of a task, before the namespace prefix (`Names(...)(this)`)."""
    return f"ferry.hf_sync.seen.{task_id}"


# A classic durable queue (read many times over, so no delivery limit), gone after a day
# unused: a sync's seen ids outlive its prune only as long as a redelivery may need them.
SEEN_QUEUE_EXPIRES_MS = 86_400_000
SEEN_QUEUE_ARGUMENTS: dict[str, Any] = {
    "x-queue-type": "classic",
    "x-expires": SEEN_QUEUE_EXPIRES_MS,
}


__all__ = [
    "SEEN_QUEUE_ARGUMENTS",
    "SEEN_QUEUE_EXPIRES_MS",
    "DatasetPrune",
    "DatasetRemove",
    "DatasetUpsert",
    "HubDataset",
    "ParquetFile",
    "RemoveReason",
    "SeenChunk",
    "seen_queue_name",
]
