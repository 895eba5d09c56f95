"""HumanFirst `Models`: not served until a model service is deployed (Discovery says so,
and every RPC answers UNIMPLEMENTED with that reason)."""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio

from services.gateway.generated.zia.ai.external_integration.v1alpha1 import models_pb2
from services.gateway.rpc import RpcError

NOT_DEPLOYED = (
    "models are not supported by this integration: no model service is deployed in Ferry"
    " (Discovery.GetCapabilities answers supports_models=false)"
)


class ModelsServicer:
    """Every RPC of `Models`, each refusing the same way."""

    def __getattr__(self, name: str) -> Any:
        if name not in models_pb2.DESCRIPTOR.services_by_name["Models"].methods_by_name:
            raise AttributeError(name)

        async def not_deployed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            raise RpcError(grpc.StatusCode.UNIMPLEMENTED, f"{name}: {NOT_DEPLOYED}")

        return not_deployed
