"""The `hf_collector`'s own step of a dataset sync: one listing page at a time.

`hf.datasets.page` carries the listing's state, not a delta: the URL of the page to read
(the Hub's `Link: rel="next"` cursor URL, followed as given), how many pages and datasets
came before it, and the collect's options. A crash while a page is in hand means that page
is read again; every page before it is done and its upserts confirmed.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import msgspec

from shared.contracts.base import Contract, Identifier

Count = Annotated[int, msgspec.Meta(ge=0)]


class HfDatasetsPage(Contract, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "hf.datasets.page"

    task_id: Identifier
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=4_000)]
    page: Count = 0  # pages read before this one
    discovered: Count = 0  # datasets published before this page
    mode: Literal["all", "since"] = "all"
    since: str | None = None  # mode `since`: stop at the first dataset modified before it
    limit: Annotated[int, msgspec.Meta(ge=1)] | None = None
    prune: bool = False
    force: bool = False


__all__ = ["HfDatasetsPage"]
