"""Mutual TLS at the gateway: HumanFirst's credentials file, `ferry certs`, and who gets in
(a client certificate from the trusted CA, valid now) and who does not; plus the standard
health checking and reflection services behind it."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.gateway import cli as gateway_cli
from services.gateway.app import Gateway
from services.gateway.generated.zia.ai.external_integration.v1alpha1 import discovery_pb2
from services.gateway.tls import (
    CLIENT_FILE,
    SERVER_FILE,
    CredentialsError,
    DevelopmentCertificates,
    MtlsCredentials,
    issue,
    make_ca,
    write_development_certificates,
)
from shared.service import StartupFailed
from shared.settings import BaseSettings
from tests.conftest import Cleanup
from tests.support.gateway import (
    certificates,  # noqa: F401 (a fixture)
    client,
    gateway_settings,
    running_gateway,
    stub,
)


@pytest.fixture
async def gateway(
    base_settings: BaseSettings,
    certificates: DevelopmentCertificates,  # noqa: F811
    tmp_path: Path,
    cleanup: Cleanup,
) -> AsyncIterator[Gateway]:
    settings = gateway_settings(base_settings, certificates, tmp_path)
    async with running_gateway(settings, cleanup) as gateway:
        yield gateway


async def capabilities(channel: grpc.aio.Channel) -> discovery_pb2.GetCapabilitiesResponse:
    discovery = stub(channel, discovery_pb2, "Discovery")
    reply = await discovery.unary("GetCapabilities")(
        discovery_pb2.GetCapabilitiesRequest(), timeout=10
    )
    assert isinstance(reply, discovery_pb2.GetCapabilitiesResponse)
    return reply


async def refused(gateway: Gateway, credentials: grpc.ChannelCredentials) -> str:
    address = f"localhost:{gateway.grpc_port}"
    async with grpc.aio.secure_channel(address, credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await capabilities(channel)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    return failure.value.details() or ""


async def test_a_client_with_a_valid_certificate_gets_in_by_name_and_by_address(
    gateway: Gateway,
    certificates: DevelopmentCertificates,  # noqa: F811
) -> None:
    for host in ("localhost", "127.0.0.1"):  # the server certificate covers both
        async with client(gateway, certificates.client_credentials, host=host) as channel:
            assert (await capabilities(channel)).supports_workspaces


async def test_no_certificate_another_ca_and_an_expired_certificate_are_refused(
    gateway: Gateway,
    certificates: DevelopmentCertificates,  # noqa: F811
) -> None:
    ca_pem = certificates.ca.certificate_pem
    await refused(gateway, grpc.ssl_channel_credentials(root_certificates=ca_pem))

    stranger_ca = make_ca("Someone else's CA")
    stranger = issue(stranger_ca, "intruder", client=True)
    await refused(
        gateway,
        grpc.ssl_channel_credentials(ca_pem, stranger.key_pem, stranger.certificate_pem),
    )

    now = dt.datetime.now(dt.UTC)
    expired = issue(
        certificates.ca,
        "ferry-client",
        client=True,
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    await refused(
        gateway, grpc.ssl_channel_credentials(ca_pem, expired.key_pem, expired.certificate_pem)
    )


async def test_health_checking_and_reflection_are_served(
    gateway: Gateway,
    certificates: DevelopmentCertificates,  # noqa: F811
) -> None:
    async with client(gateway, certificates.client_credentials) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "zia.ai.external_integration.v1alpha1.Workspaces", "ferry.v1.Tasks"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = set()
        async for answer in call:
            names |= {s.name for s in answer.list_services_response.service}
        assert {
            "zia.ai.external_integration.v1alpha1.Discovery",
            "zia.ai.external_integration.v1alpha1.Workspaces",
            "zia.ai.external_integration.v1alpha1.Models",
            "ferry.v1.Tasks",
            "ferry.v1.Pipelines",
            "ferry.v1.HfRepos",
            "grpc.health.v1.Health",
        } <= names


def test_ferry_certs_writes_the_pairs_and_both_credentials_files(tmp_path: Path) -> None:
    written = write_development_certificates(tmp_path, ("gateway.internal", "10.0.0.7"))
    names = sorted(p.name for p in written)
    assert names == sorted(
        ["ca.pem", "server.pem", "server.key", "client.pem", "client.key", SERVER_FILE, CLIENT_FILE]
    )
    for secret in ("server.key", "client.key", SERVER_FILE, CLIENT_FILE):
        assert stat.S_IMODE((tmp_path / secret).stat().st_mode) == 0o600
    server = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    names_covered = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names_covered.get_values_for_type(x509.DNSName)) == {"localhost", "gateway.internal"}
    assert {str(a) for a in names_covered.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "10.0.0.7",
    }
    # HumanFirst's shape, read back: the server's pair and the CA it trusts for clients.
    shape = json.loads((tmp_path / SERVER_FILE).read_text())
    assert set(shape) == {"local_keypair", "remote_certificate"}
    assert set(shape["local_keypair"]) == {"certificate", "private_key"}
    server_side = MtlsCredentials.load(tmp_path / SERVER_FILE)
    assert server_side.certificate == (tmp_path / "server.pem").read_bytes()
    assert server_side.remote_certificate == (tmp_path / "ca.pem").read_bytes()
    client_side = MtlsCredentials.load(tmp_path / CLIENT_FILE)
    assert client_side.certificate == (tmp_path / "client.pem").read_bytes()


def test_a_bad_credentials_file_is_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(CredentialsError, match="cannot read"):
        MtlsCredentials.load(missing)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"local_keypair": {"certificate": "x"}}')
    with pytest.raises(CredentialsError, match="remote_certificate"):
        MtlsCredentials.load(wrong)
    garbage = tmp_path / "garbage.json"
    garbage.write_text(
        '{"local_keypair": {"certificate": "x", "private_key": "y"}, "remote_certificate": "z"}'
    )
    with pytest.raises(CredentialsError, match="not a PEM certificate"):
        MtlsCredentials.load(garbage)


async def test_the_gateway_does_not_start_without_credentials(
    base_settings: BaseSettings,
    certificates: DevelopmentCertificates,  # noqa: F811
    tmp_path: Path,
    cleanup: Cleanup,
) -> None:
    settings = gateway_settings(
        base_settings, certificates, tmp_path, credentials_file=str(tmp_path / "absent.json")
    )
    gateway = Gateway(settings)
    cleanup.services.append(gateway.service)
    with pytest.raises(StartupFailed, match="FERRY_CREDENTIALS_FILE: cannot read"):
        await gateway.service.app.start()
    await gateway.service.app.stop()


def test_ferry_certs_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="ferry")
    commands = parser.add_subparsers(dest="command", required=True)
    gateway_cli.add_parser(commands)
    args = parser.parse_args(["certs", "--out", str(tmp_path / "certs"), "--host", "gw"])
    assert args.run(BaseSettings(), args) == 0
    assert (tmp_path / "certs" / SERVER_FILE).exists()
    assert str(tmp_path / "certs" / CLIENT_FILE) in capsys.readouterr().out
