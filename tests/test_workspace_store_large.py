"""Large workspaces end to end: a HumanFirst-sized import and export through the gateway,
with the workspace store running as its own process, whose memory is sampled meanwhile.

The store's bound: its anonymous memory (RssAnon: what it allocates, as opposed to the
file pages of the workspace it maps, which the kernel may drop at any time) grows by less
than `STORE_GROWTH_BOUND` however large the workspace: the chunks in flight (a few MiB)
plus one small view per example while it validates and reconciles.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc.aio
import httpx
import pytest

from services.gateway.generated.zia.ai.external_integration.v1alpha1 import workspace_pb2
from services.gateway.generated.zia.ai.playbook.data.config.v1alpha1 import config_pb2
from services.gateway.tls import DevelopmentCertificates
from services.workspace_store.app import SERVICE
from shared.settings import BaseSettings
from shared.topology import Names
from tests.conftest import Cleanup
from tests.support.gateway import (
    HF_SCOPE,
    certificates,  # noqa: F401 (a fixture)
    client,
    gateway_settings,
    running_gateway,
    store_settings,
    stub,
)
from tests.support.waiting import eventually

MIB = 2**20
STORE_GROWTH_BOUND = 64 * MIB
EXAMPLE_TEXT_BYTES = 960


def workspace_of(size: int) -> bytes:
    """A HumanFirst JSON workspace of about `size` bytes, of random (barely compressible)
    example texts, so the transfer carries about as much as the workspace weighs."""
    count = max(1, size // (EXAMPLE_TEXT_BYTES + 90))
    noise = base64.b64encode(os.urandom(count * EXAMPLE_TEXT_BYTES * 3 // 4 + 3))
    examples = b",".join(
        b'{"id":"phrase-%d","text":"%s","intents":[{"intent_id":"intent-%d"}]}'
        % (i, noise[i * EXAMPLE_TEXT_BYTES : (i + 1) * EXAMPLE_TEXT_BYTES], i % 50)
        for i in range(count)
    )
    intents = b",".join(b'{"id":"intent-%d","name":"intent %d"}' % (i, i) for i in range(50))
    return b'{"name":"large","intents":[%s],"examples":[%s]}' % (intents, examples)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MemorySampler:
    """Samples a process's /proc status: the peak of RssAnon, and VmHWM at the end."""

    pid: int
    peak_anon: int = 0
    baseline_anon: int = 0

    def read(self) -> dict[str, int]:
        text = Path(f"/proc/{self.pid}/status").read_text()
        return {k: int(v) * 1024 for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}

    async def run(self) -> None:
        while True:
            self.peak_anon = max(self.peak_anon, self.read()["RssAnon"])
            await asyncio.sleep(0.01)


@contextlib.contextmanager
def store_process(settings: BaseSettings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.workspace_store"],
            env={**os.environ, **settings.as_environment()},
            stdout=out,
            stderr=out,
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
async def store_pid(
    base_settings: BaseSettings, tmp_path: Path, cleanup: Cleanup
) -> AsyncIterator[int]:
    port = free_port()
    settings = store_settings(base_settings, tmp_path / "data", http_port=port)
    names = Names(settings.namespace)
    cleanup.queues.extend(
        names.queue(SERVICE, purpose) for purpose in ("list", "get", "create", "import", "export")
    )
    with store_process(settings, tmp_path / "store.log") as process:

        async def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError((tmp_path / "store.log").read_text()[-2000:])
            try:
                async with httpx.AsyncClient() as http:
                    answer = await http.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                    return answer.status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(ready, timeout=30, interval=0.1)
        yield process.pid


@pytest.mark.parametrize("size_mib", [20, 150], ids=["20MiB", "150MiB"])
async def test_a_large_import_and_export_stay_within_the_memory_bound(
    size_mib: int,
    *,
    store_pid: int,
    base_settings: BaseSettings,
    certificates: DevelopmentCertificates,  # noqa: F811
    tmp_path: Path,
    cleanup: Cleanup,
) -> None:
    document = workspace_of(size_mib * MIB)
    sampler = MemorySampler(store_pid)
    sampler.baseline_anon = sampler.read()["RssAnon"]
    settings = gateway_settings(base_settings, certificates, tmp_path)
    async with (
        running_gateway(settings, cleanup) as gateway,
        client(gateway, certificates.client_credentials) as channel,
    ):
        workspaces = stub(channel, workspace_pb2, "Workspaces")
        await workspaces.unary("CreateWorkspace")(
            workspace_pb2.CreateWorkspaceRequest(
                **HF_SCOPE, workspace=workspace_pb2.Workspace(id="large", name="large")
            ),
            timeout=10,
        )
        sampling = asyncio.create_task(sampler.run())
        started = time.monotonic()
        try:
            await workspaces.unary("ImportWorkspace")(
                workspace_pb2.ImportWorkspaceRequest(
                    **HF_SCOPE,
                    workspace_id="large",
                    data_format=config_pb2.INTENTS_FORMAT_HF_JSON,
                    data=document,
                ),
                timeout=120,
            )
            imported = time.monotonic()
            reply = await workspaces.unary("ExportWorkspace")(
                workspace_pb2.ExportWorkspaceRequest(**HF_SCOPE, workspace_id="large"),
                timeout=120,
            )
            exported = time.monotonic()
        finally:
            sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampling
    assert isinstance(reply, workspace_pb2.ExportWorkspaceResponse)
    assert gzip.decompress(reply.data) == document
    growth = sampler.peak_anon - sampler.baseline_anon
    high_water = sampler.read()["VmHWM"]
    print(
        f"\n{size_mib} MiB: import {imported - started:.1f}s, export {exported - imported:.1f}s,"
        f" store RssAnon {sampler.baseline_anon / MIB:.0f} -> peak {sampler.peak_anon / MIB:.0f}"
        f" MiB (+{growth / MIB:.0f}), VmHWM {high_water / MIB:.0f} MiB (file pages included)"
    )
    assert growth < STORE_GROWTH_BOUND, f"the store grew by {growth / MIB:.0f} MiB"
    assert isinstance(channel, grpc.aio.Channel)
