"""`ferry workspaces ...`: the operator's gRPC client of the gateway, with the client pair,
checking the HumanFirst integration without HumanFirst."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.cli.errors import CliError, UsageError
from services.gateway import cli as gateway_cli
from services.gateway.app import Gateway
from services.gateway.tls import CLIENT_FILE, DevelopmentCertificates
from shared.settings import BaseSettings
from tests.conftest import Cleanup
from tests.support.gateway import (
    certificates,  # noqa: F401 (a fixture)
    gateway_settings,
    running_gateway,
    running_store,
    store_settings,
)

DOCUMENT = b'{"name": "faq", "intents": [{"id": "i-1", "name": "hello"}],\n "examples": []}\n'


@pytest.fixture
async def gateway(
    base_settings: BaseSettings,
    certificates: DevelopmentCertificates,  # noqa: F811
    tmp_path: Path,
    cleanup: Cleanup,
) -> AsyncIterator[Gateway]:
    async with (
        running_store(store_settings(base_settings, tmp_path / "data"), cleanup),
        running_gateway(gateway_settings(base_settings, certificates, tmp_path), cleanup) as gw,
    ):
        yield gw


async def ferry(gateway: Gateway, credentials: Path, *argv: str) -> int:
    """One `ferry workspaces ...` command, in a thread (it runs its own event loop)."""
    parser = argparse.ArgumentParser(prog="ferry")
    gateway_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "workspaces",
            "--gateway",
            f"localhost:{gateway.grpc_port}",
            "--credentials",
            str(credentials),
            "--hf-namespace",
            "ops",
            "--integration-id",
            "check",
            *argv,
        ]
    )
    return int(await asyncio.to_thread(args.run, BaseSettings(), args))


async def test_list_create_import_and_export_through_the_gateway(
    gateway: Gateway,
    certificates: DevelopmentCertificates,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    credentials = tmp_path / CLIENT_FILE
    credentials.write_bytes(certificates.client_credentials.to_json())
    source, target = tmp_path / "faq.json", tmp_path / "out" / "faq.json"
    source.write_bytes(DOCUMENT)
    target.parent.mkdir()

    assert await ferry(gateway, credentials, "import", "faq", str(source), "--create") == 0
    assert await ferry(gateway, credentials, "list") == 0
    assert "faq" in capsys.readouterr().out
    assert await ferry(gateway, credentials, "export", "faq", str(target)) == 0
    assert target.read_bytes() == DOCUMENT

    with pytest.raises(CliError, match=r"NOT_FOUND: no workspace ops/check/ghost"):
        await ferry(gateway, credentials, "export", "ghost", str(target))
    with pytest.raises(CliError, match=r"INVALID_ARGUMENT: workspace_id '\.\./x' contains a path"):
        await ferry(gateway, credentials, "import", "../x", str(source))


async def test_bad_credentials_or_address_are_one_clear_line(
    gateway: Gateway, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="ferry certs"):
        await ferry(gateway, tmp_path / "missing.json", "list")
    stranger = tmp_path / "stranger"
    gateway_cli.write_certificates(stranger)  # another CA: the gateway refuses it
    with pytest.raises(CliError, match=r"cannot reach the gateway|UNAVAILABLE"):
        await ferry(gateway, stranger / CLIENT_FILE, "list")
