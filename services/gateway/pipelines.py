"""`ferry.v1.Pipelines`: the OpenHexa pipelines the launcher can run, and their parameters,
asked of the openhexa_launcher (`openhexa.pipelines.list` / `.get`)."""

from __future__ import annotations

from typing import Any

import grpc.aio
import msgspec

from services.gateway.generated.ferry.v1 import pipelines_pb2
from services.gateway.rpc import ask, invalid, validated
from shared.contracts.openhexa import (
    PipelineDetail,
    PipelineGet,
    PipelineGetReply,
    PipelineList,
    PipelineListReply,
    PipelineParameter,
)
from shared.service import Service


def _json(value: Any) -> str:
    return "" if value is None else msgspec.json.encode(value).decode()


def _parameter(spec: PipelineParameter) -> pipelines_pb2.PipelineParameter:
    return pipelines_pb2.PipelineParameter(
        code=spec.code,
        type=spec.type,
        name=spec.name or "",
        choices_json=_json(spec.choices),
        default_json=_json(spec.default),
        required=spec.required,
        multiple=spec.multiple,
        help=spec.help or "",
    )


def pipeline_message(detail: PipelineDetail) -> pipelines_pb2.Pipeline:
    message = pipelines_pb2.Pipeline(
        id=detail.id, code=detail.code, name=detail.name or "", type=detail.type or ""
    )
    if detail.version is not None:
        version = detail.version
        message.version.CopyFrom(
            pipelines_pb2.PipelineVersion(
                id=version.id,
                number=version.number,
                name=version.name or "",
                parameters=[_parameter(p) for p in version.parameters],
            )
        )
    return message


class PipelinesServicer:
    def __init__(self, service: Service) -> None:
        self.service = service

    async def ListPipelines(
        self, request: pipelines_pb2.ListPipelinesRequest, context: grpc.aio.ServicerContext
    ) -> pipelines_pb2.ListPipelinesResponse:
        if len(request.name) > 4000:
            raise invalid("name: at most 4,000 characters")
        reply = await ask(
            self.service, context, PipelineList(name=request.name or None), PipelineListReply
        )
        return pipelines_pb2.ListPipelinesResponse(
            pipelines=[
                pipelines_pb2.PipelineSummary(
                    id=p.id,
                    code=p.code,
                    name=p.name or "",
                    type=p.type or "",
                    current_version_id=p.current_version_id or "",
                    current_version_number=p.current_version_number or 0,
                )
                for p in reply.pipelines
            ]
        )

    async def GetPipeline(
        self, request: pipelines_pb2.GetPipelineRequest, context: grpc.aio.ServicerContext
    ) -> pipelines_pb2.Pipeline:
        fields = {
            "pipeline_id": request.pipeline_id or None,
            "pipeline_code": request.pipeline_code or None,
            "version_id": request.version_id or None,
        }
        query = validated(PipelineGet, fields)
        reply = await ask(self.service, context, query, PipelineGetReply)
        if reply.pipeline is None:
            raise invalid("the openhexa_launcher answered without a pipeline")
        return pipeline_message(reply.pipeline)
