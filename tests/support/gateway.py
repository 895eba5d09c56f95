"""Running the gateway and the workspace store for a test (helpers, no tests of its own).

Both run in-process on the test's namespace, the gateway on a free port of 127.0.0.1 with
fresh development certificates; `client(...)` opens a mutual-TLS channel to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from services.gateway.app import Gateway
from services.gateway.rpc import Stub
from services.gateway.settings import GRPC_MESSAGE_BYTES, GatewaySettings
from services.gateway.tls import (
    SERVER_FILE,
    DevelopmentCertificates,
    MtlsCredentials,
    make_development_certificates,
)
from services.workspace_store.app import WorkspaceStore
from services.workspace_store.settings import StoreSettings
from shared.settings import BaseSettings
from tests.conftest import Cleanup

WEBHOOK_SECRET = "webhook-secret-for-tests"
HF_SCOPE = {"namespace": "acme", "integration_id": "intg-1"}


@pytest.fixture(scope="session")
def certificates() -> DevelopmentCertificates:
    return make_development_certificates()


def common(base: BaseSettings) -> dict[str, Any]:
    return {f.name: getattr(base, f.name) for f in fields(BaseSettings)}


def gateway_settings(
    base: BaseSettings, certificates: DevelopmentCertificates, tmp_path: Path, **overrides: Any
) -> GatewaySettings:
    credentials = tmp_path / SERVER_FILE
    credentials.write_bytes(certificates.server_credentials.to_json())
    values: dict[str, Any] = {
        **common(base),
        "credentials_file": str(credentials),
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "webhook_host": "127.0.0.1",
        "webhook_port": 0,
        "webhook_secret": WEBHOOK_SECRET,
        "grpc_grace": 1.0,
        **overrides,
    }
    return GatewaySettings(**values)


def store_settings(base: BaseSettings, data_dir: Path, **overrides: Any) -> StoreSettings:
    return StoreSettings(**{**common(base), "data_dir": str(data_dir), **overrides})


@contextlib.asynccontextmanager
async def running_gateway(settings: GatewaySettings, cleanup: Cleanup) -> AsyncIterator[Gateway]:
    gateway = Gateway(settings)
    async with cleanup.running(gateway.service):
        yield gateway


@contextlib.asynccontextmanager
async def running_store(settings: StoreSettings, cleanup: Cleanup) -> AsyncIterator[WorkspaceStore]:
    store = WorkspaceStore(settings)
    async with cleanup.running(store.service):
        yield store


@contextlib.asynccontextmanager
async def client(
    gateway: Gateway, credentials: MtlsCredentials, *, host: str = "localhost"
) -> AsyncIterator[grpc.aio.Channel]:
    options = [
        ("grpc.max_receive_message_length", GRPC_MESSAGE_BYTES),
        ("grpc.max_send_message_length", GRPC_MESSAGE_BYTES),
    ]
    address = f"{host}:{gateway.grpc_port}"
    async with grpc.aio.secure_channel(
        address, credentials.channel_credentials(), options=options
    ) as channel:
        yield channel


def stub(channel: grpc.aio.Channel, module: Any, service: str) -> Stub:
    return Stub(channel, module.DESCRIPTOR.services_by_name[service])
