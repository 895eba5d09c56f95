"""HumanFirst `Discovery`: what this integration supports."""

from __future__ import annotations

import grpc.aio

from services.gateway.generated.zia.ai.external_integration.v1alpha1 import discovery_pb2

# No model service is deployed yet: HumanFirst must not offer models on this integration.
SUPPORTS_MODELS = False


class DiscoveryServicer:
    async def GetCapabilities(
        self, request: discovery_pb2.GetCapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> discovery_pb2.GetCapabilitiesResponse:
        return discovery_pb2.GetCapabilitiesResponse(
            supports_models=SUPPORTS_MODELS, supports_workspaces=True
        )
