"""Contracts of the Hugging Face side: the dataset sync's driving command and the change
events (`hf.datasets.*`), and repository management requests (`hf.repos.*`), all owned by
the `hf_collector`.

`hf.datasets.collect` is a task's driving command (the tracker publishes it with
`task_id`): `mode` `all` lists every dataset the filters select, `id` one dataset (`value`
= `owner/name`), `since` those modified since `value` (RFC 3339). `prune` removes from
AI-on-Demand what left the selection; more than the collector's safety cap of removals
needs `force`.

`hf.datasets.changed` is what the gateway hears from a Hub webhook about one dataset.

Repository requests answer with a reply whose `error` starts with the failure's kind when
it is one the caller can act on (`NotFound: ...`, `AlreadyExists: ...`,
`InvalidArgument: ...`, see `shared.contracts.workspaces.Fault`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

import msgspec

from shared.contracts.base import Contract, Identifier, Reply, ShortText

SyncMode = Literal["all", "id", "since"]
RepoType = Literal["dataset", "model", "space"]
WebhookAction = Literal["create", "delete", "move", "update"]
# `owner/name`, as the Hub spells repository ids.
RepoName = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=200
    ),
]
ObjectId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{24}$")]  # the Hub's `_id`
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class HfDatasetsCollect(Contract, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "hf.datasets.collect"

    task_id: Identifier
    mode: SyncMode
    value: Text | None = None  # mode `id`: owner/name; mode `since`: an RFC 3339 instant
    author: Text | None = None
    search: Text | None = None
    filter: list[Text] = []
    limit: Annotated[int, msgspec.Meta(ge=1)] | None = None
    prune: bool = False
    force: bool = False  # prune beyond the safety cap

    def __post_init__(self) -> None:
        if self.mode == "all":
            if self.value is not None:
                raise ValueError("mode `all` takes no value")
        elif self.value is None:
            raise ValueError(f"mode `{self.mode}` needs a value")
        elif self.mode == "id":
            msgspec.convert(self.value, RepoName)  # ValidationError names the pattern
        else:
            try:
                moment = datetime.fromisoformat(self.value.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(
                    f"mode `since`: {self.value!r} is not an RFC 3339 instant"
                ) from None
            if moment.tzinfo is None:
                raise ValueError(f"mode `since`: {self.value!r} needs a time zone (e.g. Z)")
        if self.force and not self.prune:
            raise ValueError("`force` only applies with `prune`")


class HfDatasetChanged(Contract, kw_only=True):
    """A Hub webhook said this dataset's metadata may have changed (created, updated,
    moved: `moved_to` is its new name, deleted, or made private)."""

    ROUTING_KEY: ClassVar[str] = "hf.datasets.changed"

    repo_id: ObjectId  # the repository's `_id`: the same across renames
    name: RepoName
    action: WebhookAction
    private: bool
    moved_to: RepoName | None = None


class HfWhoami(Contract, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "hf.repos.whoami"


class HfWhoamiReply(Reply, kw_only=True):
    name: str = ""
    type: str = ""  # user, org or app
    fullname: str = ""
    orgs: list[str] = []


class HfRepoCreate(Contract, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "hf.repos.create"

    repo_id: RepoName
    type: RepoType = "dataset"
    private: bool = True
    space_sdk: Literal["gradio", "streamlit", "docker", "static"] | None = None

    def __post_init__(self) -> None:
        if self.type == "space" and self.space_sdk is None:
            raise ValueError("a space needs `space_sdk` (gradio, streamlit, docker or static)")
        if self.type != "space" and self.space_sdk is not None:
            raise ValueError("`space_sdk` applies to spaces only")


class HfRepoCreateReply(Reply, kw_only=True):
    url: str = ""


class HfRepoDelete(Contract, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "hf.repos.delete"

    repo_id: RepoName
    type: RepoType = "dataset"


class HfRepoDeleteReply(Reply, kw_only=True):
    pass


class HfRepoVisibility(Contract, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "hf.repos.visibility"

    repo_id: RepoName
    type: RepoType = "dataset"
    private: bool


class HfRepoVisibilityReply(Reply, kw_only=True):
    pass


__all__ = [
    "HfDatasetChanged",
    "HfDatasetsCollect",
    "HfRepoCreate",
    "HfRepoCreateReply",
    "HfRepoDelete",
    "HfRepoDeleteReply",
    "HfRepoVisibility",
    "HfRepoVisibilityReply",
    "HfWhoami",
    "HfWhoamiReply",
    "ShortText",
]
