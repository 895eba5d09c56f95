"""Repository management on the Hub, as request/reply (`hf.repos.*`): whoami (cached),
create (a dataset, model or space; private or public), delete, change visibility.

A failure the caller can act on comes back as an error reply that starts with its kind
(`NotFound: ...`, `AlreadyExists: ...`, `InvalidArgument: ...`); the rest say what failed.
"""

from __future__ import annotations

from services.hf_collector.hub import Hub
from shared.contracts.hf import (
    HfRepoCreate,
    HfRepoCreateReply,
    HfRepoDelete,
    HfRepoDeleteReply,
    HfRepoVisibility,
    HfRepoVisibilityReply,
    HfWhoami,
    HfWhoamiReply,
)


class Repositories:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def whoami(self, body: HfWhoami) -> HfWhoamiReply:
        del body
        account = await self.hub.whoami()
        return HfWhoamiReply(
            name=account.name,
            type=account.type,
            fullname=account.fullname,
            orgs=[org.name for org in account.orgs if org.name],
        )

    async def create(self, body: HfRepoCreate) -> HfRepoCreateReply:
        url = await self.hub.create_repo(
            body.repo_id, body.type, private=body.private, space_sdk=body.space_sdk
        )
        return HfRepoCreateReply(url=url)

    async def delete(self, body: HfRepoDelete) -> HfRepoDeleteReply:
        await self.hub.delete_repo(body.repo_id, body.type)
        return HfRepoDeleteReply()

    async def set_visibility(self, body: HfRepoVisibility) -> HfRepoVisibilityReply:
        await self.hub.set_visibility(body.repo_id, body.type, private=body.private)
        return HfRepoVisibilityReply()
