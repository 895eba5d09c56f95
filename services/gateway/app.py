"""The gateway: Ferry's only ingress.

A `grpc.aio` server with mutual TLS (credentials in HumanFirst's `mtls-credentials.json`
shape; a client certificate is required) serving

- HumanFirst's custom-integration services `zia.ai.external_integration.v1alpha1`
  `Discovery`, `Workspaces` (by the workspace_store) and `Models` (by nlu_models when one
  answers; UNIMPLEMENTED, saying so, until one is deployed), wire-compatible with
  HumanFirst's protos;
- Ferry's own `ferry.v1` `Tasks` (by the task_tracker), `Pipelines` (by the
  openhexa_launcher) and `HfRepos` (by the hf_collector);
- standard gRPC health checking and reflection;

and, on its own port, the Hugging Face Hub webhook endpoint `POST /webhooks/huggingface`,
which queues `hf.datasets.changed`. Every RPC is a publish or a request over RabbitMQ to
the service that owns the work; the gateway consumes nothing itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import grpc
import grpc.aio
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.gateway import webhooks
from services.gateway.discovery import DiscoveryServicer
from services.gateway.generated.ferry.v1 import hf_repos_pb2, pipelines_pb2, tasks_pb2
from services.gateway.generated.zia.ai.external_integration.v1alpha1 import (
    discovery_pb2,
    models_pb2,
    workspace_pb2,
)
from services.gateway.hf_repos import HfReposServicer
from services.gateway.models import ModelsAvailability, ModelsServicer
from services.gateway.pipelines import PipelinesServicer
from services.gateway.rpc import bind
from services.gateway.settings import GatewaySettings
from services.gateway.tasks import TasksServicer
from services.gateway.tls import CredentialsError, MtlsCredentials
from services.gateway.workspaces import WorkspacesServicer
from shared.chunks import ChunkLink
from shared.contracts.hf import HfDatasetChanged
from shared.messaging import publish
from shared.service import Service, StartupFailed

SERVICE = "gateway"
HEALTH_INTERVAL = 2.0  # seconds between health status refreshes from readiness


@dataclass(frozen=True)
class Served:
    descriptor: ServiceDescriptor
    servicer: object


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.service = Service(SERVICE, settings, description=__doc__)
        self.log = logging.getLogger("ferry.gateway")
        self.link = ChunkLink(settings.amqp_url)
        service = self.service
        # Whether an nlu_models service answers: Discovery and Models both ask it.
        self.models = ModelsAvailability(service)
        self.served = [
            Served(
                discovery_pb2.DESCRIPTOR.services_by_name["Discovery"],
                DiscoveryServicer(self.models),
            ),
            Served(
                workspace_pb2.DESCRIPTOR.services_by_name["Workspaces"],
                WorkspacesServicer(service, settings, self.link),
            ),
            Served(
                models_pb2.DESCRIPTOR.services_by_name["Models"],
                ModelsServicer(service, settings, self.link, self.models),
            ),
            Served(
                tasks_pb2.DESCRIPTOR.services_by_name["Tasks"],
                TasksServicer(service, settings, self.link),
            ),
            Served(
                pipelines_pb2.DESCRIPTOR.services_by_name["Pipelines"], PipelinesServicer(service)
            ),
            Served(hf_repos_pb2.DESCRIPTOR.services_by_name["HfRepos"], HfReposServicer(service)),
        ]
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.grpc_port: int | None = None
        self.webhooks: webhooks.WebhookEndpoint | None = None
        if settings.webhook_port is not None and settings.webhook_secret:
            self.webhooks = webhooks.WebhookEndpoint(
                settings.webhook_secret,
                self._publish_change,
                max_body_bytes=settings.webhook_max_body_bytes,
            )
        self._health_task: asyncio.Task[None] | None = None
        service.add_readiness_check(self._serving)
        service.app.after_startup(self.start)
        service.app.on_shutdown(self.stop)
        service.app.after_shutdown(self.link.close)

    @property
    def service_names(self) -> list[str]:
        return [served.descriptor.full_name for served in self.served]

    def _serving(self) -> list[str]:
        return [] if self.server is not None else ["gRPC server not started"]

    async def _publish_change(self, change: HfDatasetChanged) -> None:
        await publish(self.service.broker, self.service.names, change)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        try:
            credentials = MtlsCredentials.load(settings.credentials_file)
        except CredentialsError as exc:
            raise StartupFailed(
                f"FERRY_CREDENTIALS_FILE: {exc} (HumanFirst's mtls-credentials.json; for"
                " development, `ferry certs --out certs` makes one)"
            ) from None
        limit = settings.max_message_bytes_grpc
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
            ]
        )
        server.add_generic_rpc_handlers([bind(s.descriptor, s.servicer) for s in self.served])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        address = f"{settings.grpc_host}:{settings.grpc_port}"
        try:
            self.grpc_port = server.add_secure_port(address, credentials.server_credentials())
        except RuntimeError as exc:
            raise StartupFailed(f"cannot listen on {address} for gRPC ({exc})") from None
        await server.start()
        self.server = server
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._health_task = asyncio.create_task(self._follow_readiness())
        self.log.info("gRPC server listening", extra={"address": address, "port": self.grpc_port})
        if self.webhooks is None and settings.webhook_port is not None:
            self.log.warning("webhook endpoint off: FERRY_WEBHOOK_SECRET is not set")
        if self.webhooks is not None:
            tls = None
            if settings.webhook_tls_cert and settings.webhook_tls_key:
                try:
                    tls = webhooks.tls_context(settings.webhook_tls_cert, settings.webhook_tls_key)
                except (OSError, ValueError) as exc:
                    raise StartupFailed(f"FERRY_WEBHOOK_TLS_CERT/KEY: {exc}") from None
            assert settings.webhook_port is not None
            try:
                await self.webhooks.start(settings.webhook_host, settings.webhook_port, tls)
            except OSError as exc:
                raise StartupFailed(
                    f"cannot listen on port {settings.webhook_port} for webhooks ({exc.strerror})"
                ) from None
            self.log.info(
                "webhook endpoint listening",
                extra={"port": self.webhooks.port, "tls": tls is not None},
            )

    async def stop(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        if self.webhooks is not None:
            await self.webhooks.stop()
        if self.server is not None:
            await self.health.enter_graceful_shutdown()
            await self.server.stop(self.settings.grpc_grace)
            self.server = None

    async def _set_health(self, status: int) -> None:
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def _follow_readiness(self) -> None:
        """NOT_SERVING while the broker is unreachable: every RPC would fail then."""
        current = health_pb2.HealthCheckResponse.SERVING
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            problems = await self.service.readiness()
            wanted = (
                health_pb2.HealthCheckResponse.NOT_SERVING
                if problems
                else health_pb2.HealthCheckResponse.SERVING
            )
            if wanted != current:
                await self._set_health(wanted)
                current = wanted


def build(settings: GatewaySettings | None = None) -> Gateway:
    return Gateway(settings or GatewaySettings.from_env())
