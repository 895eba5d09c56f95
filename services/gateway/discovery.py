"""HumanFirst `Discovery`: what this integration supports.

Workspaces always (the workspace store is part of every deployment). Models only while the
`nlu_models` service answers `models.capabilities` (see `models.ModelsAvailability`), with
the limits it reports; otherwise HumanFirst must not offer models on this integration.
"""

from __future__ import annotations

import grpc.aio

from services.gateway.generated.zia.ai.external_integration.v1alpha1 import discovery_pb2
from services.gateway.models import ModelsAvailability


class DiscoveryServicer:
    def __init__(self, models: ModelsAvailability | None = None) -> None:
        """`models`: how to learn whether the model service is deployed; None: it is not."""
        self.models = models

    async def GetCapabilities(
        self, request: discovery_pb2.GetCapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> discovery_pb2.GetCapabilitiesResponse:
        capabilities = None if self.models is None else await self.models.capabilities()
        if capabilities is None:
            return discovery_pb2.GetCapabilitiesResponse(
                supports_models=False, supports_workspaces=True
            )
        return discovery_pb2.GetCapabilitiesResponse(
            supports_models=True,
            supports_workspaces=True,
            max_concurrent_models=capabilities.max_concurrent_models,
            model_classification_batch_size=capabilities.model_classification_batch_size,
        )
