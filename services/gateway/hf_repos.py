"""`ferry.v1.HfRepos`: Hugging Face Hub repository management, asked of the hf_collector
(`hf.repos.whoami`, `.create`, `.delete`, `.visibility`), which holds the Hub token."""

from __future__ import annotations

import grpc.aio

from services.gateway.generated.ferry.v1 import hf_repos_pb2
from services.gateway.rpc import ask, invalid, validated
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
from shared.service import Service

REPO_TYPES: dict[int, str] = {
    hf_repos_pb2.REPO_TYPE_DATASET: "dataset",
    hf_repos_pb2.REPO_TYPE_MODEL: "model",
    hf_repos_pb2.REPO_TYPE_SPACE: "space",
}


def _repo_type(value: int) -> str:
    if value not in REPO_TYPES:
        raise invalid("type: give REPO_TYPE_DATASET, REPO_TYPE_MODEL or REPO_TYPE_SPACE")
    return REPO_TYPES[value]


class HfReposServicer:
    def __init__(self, service: Service) -> None:
        self.service = service

    async def Whoami(
        self, request: hf_repos_pb2.WhoamiRequest, context: grpc.aio.ServicerContext
    ) -> hf_repos_pb2.WhoamiResponse:
        reply = await ask(self.service, context, HfWhoami(), HfWhoamiReply)
        return hf_repos_pb2.WhoamiResponse(
            name=reply.name, type=reply.type, fullname=reply.fullname, orgs=reply.orgs
        )

    async def CreateRepo(
        self, request: hf_repos_pb2.CreateRepoRequest, context: grpc.aio.ServicerContext
    ) -> hf_repos_pb2.CreateRepoResponse:
        command = validated(
            HfRepoCreate,
            {
                "repo_id": request.repo_id,
                "type": _repo_type(request.type),
                "private": request.private,
                "space_sdk": request.space_sdk or None,
            },
        )
        reply = await ask(self.service, context, command, HfRepoCreateReply)
        return hf_repos_pb2.CreateRepoResponse(url=reply.url)

    async def DeleteRepo(
        self, request: hf_repos_pb2.DeleteRepoRequest, context: grpc.aio.ServicerContext
    ) -> hf_repos_pb2.DeleteRepoResponse:
        command = validated(
            HfRepoDelete, {"repo_id": request.repo_id, "type": _repo_type(request.type)}
        )
        await ask(self.service, context, command, HfRepoDeleteReply)
        return hf_repos_pb2.DeleteRepoResponse()

    async def UpdateRepoVisibility(
        self, request: hf_repos_pb2.UpdateRepoVisibilityRequest, context: grpc.aio.ServicerContext
    ) -> hf_repos_pb2.UpdateRepoVisibilityResponse:
        command = validated(
            HfRepoVisibility,
            {
                "repo_id": request.repo_id,
                "type": _repo_type(request.type),
                "private": request.private,
            },
        )
        await ask(self.service, context, command, HfRepoVisibilityReply)
        return hf_repos_pb2.UpdateRepoVisibilityResponse()
