"""HumanFirst `Workspaces`, served by the workspace store over RabbitMQ.

Ids are checked here first (INVALID_ARGUMENT before anything is sent). The workspace data
of ImportWorkspace and ExportWorkspace travels as chunks on a private transfer queue
(`shared.chunks`): an import publishes the request and the chunks at once (the store
writes them to disk as they come); an export declares its own queue, asks, and gathers the
chunks the store sends back. Data is HumanFirst JSON, gzip-compressed both ways
(GetImportParameters says so); an import that says it is plain is taken plain.
"""

from __future__ import annotations

import grpc
import grpc.aio

from services.gateway.generated.zia.ai.external_integration.v1alpha1 import workspace_pb2
from services.gateway.generated.zia.ai.playbook.data.config.v1alpha1 import config_pb2
from services.gateway.rpc import (
    RpcError,
    ask,
    invalid,
    remaining,
    with_transfer,
)
from services.gateway.settings import GatewaySettings
from shared.chunks import (
    ChunkLink,
    TransferLimits,
    declare_transfer_queue,
    delete_transfer_queue,
    new_transfer_id,
    receive_chunks,
    send_chunks,
    transfer_queue,
)
from shared.contracts.workspaces import (
    WorkspaceCreate,
    WorkspaceExport,
    WorkspaceExportReply,
    WorkspaceGet,
    WorkspaceImport,
    WorkspaceImportReply,
    WorkspaceInfo,
    WorkspaceList,
    WorkspaceListReply,
    WorkspaceReply,
    check_id,
)
from shared.service import Service

HF_JSON = config_pb2.INTENTS_FORMAT_HF_JSON
GZIP_MAGIC = b"\x1f\x8b"


def format_options() -> config_pb2.IntentsDataOptions:
    return config_pb2.IntentsDataOptions(gzip_encoding=True)


def _workspace(info: WorkspaceInfo | None) -> workspace_pb2.Workspace:
    if info is None:
        raise RpcError(grpc.StatusCode.INTERNAL, "the workspace store answered without a workspace")
    return workspace_pb2.Workspace(id=info.id, name=info.name, description=info.description)


class WorkspacesServicer:
    def __init__(self, service: Service, settings: GatewaySettings, link: ChunkLink) -> None:
        self.service = service
        self.settings = settings
        self.link = link
        self.send_limits = TransferLimits(
            chunk_bytes=settings.chunk_bytes,
            window=settings.transfer_window,
            max_bytes=settings.max_message_bytes_grpc,
        )
        self.receive_limits = TransferLimits(
            chunk_bytes=settings.max_message_bytes,
            window=settings.transfer_window,
            idle_timeout=settings.transfer_idle_timeout,
            max_bytes=settings.max_message_bytes_grpc,
        )

    async def ListWorkspaces(
        self, request: workspace_pb2.ListWorkspacesRequest, context: grpc.aio.ServicerContext
    ) -> workspace_pb2.ListWorkspacesResponse:
        query = WorkspaceList(
            namespace=check_id("namespace", request.namespace),
            integration_id=check_id("integration_id", request.integration_id),
        )
        reply = await ask(self.service, context, query, WorkspaceListReply)
        return workspace_pb2.ListWorkspacesResponse(
            workspaces=[_workspace(info) for info in reply.workspaces]
        )

    async def GetWorkspace(
        self, request: workspace_pb2.GetWorkspaceRequest, context: grpc.aio.ServicerContext
    ) -> workspace_pb2.Workspace:
        query = WorkspaceGet(
            namespace=check_id("namespace", request.namespace),
            integration_id=check_id("integration_id", request.integration_id),
            workspace_id=check_id("workspace_id", request.workspace_id),
        )
        return _workspace((await ask(self.service, context, query, WorkspaceReply)).workspace)

    async def CreateWorkspace(
        self, request: workspace_pb2.CreateWorkspaceRequest, context: grpc.aio.ServicerContext
    ) -> workspace_pb2.Workspace:
        wanted = request.workspace
        if len(wanted.name) > 4000 or len(wanted.description) > 4000:
            raise invalid("workspace.name and workspace.description: at most 4,000 characters")
        command = WorkspaceCreate(
            namespace=check_id("namespace", request.namespace),
            integration_id=check_id("integration_id", request.integration_id),
            workspace_id=check_id("workspace_id", wanted.id) if wanted.id else None,
            name=wanted.name,
            description=wanted.description,
        )
        return _workspace((await ask(self.service, context, command, WorkspaceReply)).workspace)

    async def GetImportParameters(
        self,
        request: workspace_pb2.GetImportParametersRequest,
        context: grpc.aio.ServicerContext,
    ) -> workspace_pb2.GetImportParametersResponse:
        check_id("namespace", request.namespace)
        check_id("integration_id", request.integration_id)
        check_id("workspace_id", request.workspace_id)
        return workspace_pb2.GetImportParametersResponse(
            data_format=HF_JSON, format_options=format_options()
        )

    async def ImportWorkspace(
        self, request: workspace_pb2.ImportWorkspaceRequest, context: grpc.aio.ServicerContext
    ) -> workspace_pb2.ImportWorkspaceResponse:
        namespace = check_id("namespace", request.namespace)
        integration_id = check_id("integration_id", request.integration_id)
        workspace_id = check_id("workspace_id", request.workspace_id)
        if request.data_format not in (HF_JSON, config_pb2.INTENTS_FORMAT_INVALID):
            name = config_pb2.IntentsDataFormat.Name(request.data_format)
            raise invalid(f"data_format {name} is not supported: send INTENTS_FORMAT_HF_JSON")
        options = request.format_options
        if options.zip_encoding:
            raise invalid("zip_encoding is not supported: send gzip_encoding (or plain) data")
        gzip = options.gzip_encoding
        data = request.data
        if gzip and not data.startswith(GZIP_MAGIC):
            raise invalid("format_options.gzip_encoding is set but the data is not gzip")
        transfer_id = new_transfer_id()
        command = WorkspaceImport(
            namespace=namespace,
            integration_id=integration_id,
            workspace_id=workspace_id,
            transfer_id=transfer_id,
            gzip=gzip,
        )
        timeout = remaining(context, self.settings.transfer_timeout)
        queue = transfer_queue(self.service.names, transfer_id)
        channel = await self.link.channel()
        try:
            await declare_transfer_queue(channel, queue, self.send_limits)
            asking = self.service.request(command, WorkspaceImportReply, timeout=timeout)
            sending = send_chunks(channel, queue, transfer_id, [data], self.send_limits)
            del data  # the request keeps the bytes; the chunks are slices of them
            await with_transfer(asking, sending, command.ROUTING_KEY)
        finally:
            await delete_transfer_queue(channel, queue)
            await channel.close()
        return workspace_pb2.ImportWorkspaceResponse()

    async def ExportWorkspace(
        self, request: workspace_pb2.ExportWorkspaceRequest, context: grpc.aio.ServicerContext
    ) -> workspace_pb2.ExportWorkspaceResponse:
        transfer_id = new_transfer_id()
        query = WorkspaceExport(
            namespace=check_id("namespace", request.namespace),
            integration_id=check_id("integration_id", request.integration_id),
            workspace_id=check_id("workspace_id", request.workspace_id),
            transfer_id=transfer_id,
            gzip=True,
        )
        timeout = remaining(context, self.settings.transfer_timeout)
        queue = transfer_queue(self.service.names, transfer_id)
        chunks: list[bytes] = []
        channel = await self.link.channel()
        try:
            await declare_transfer_queue(channel, queue, self.receive_limits, exclusive=True)
            receiving = receive_chunks(
                channel, queue, transfer_id, chunks.append, self.receive_limits
            )
            asking = self.service.request(query, WorkspaceExportReply, timeout=timeout)
            reply, received = await with_transfer(asking, receiving, query.ROUTING_KEY)
        finally:
            await delete_transfer_queue(channel, queue)
            await channel.close()
        if received.sha256 != reply.sha256:
            raise RpcError(grpc.StatusCode.DATA_LOSS, "the exported workspace arrived corrupt")
        data = b"".join(chunks)
        chunks.clear()
        return workspace_pb2.ExportWorkspaceResponse(
            data_format=HF_JSON, format_options=format_options(), data=data
        )
