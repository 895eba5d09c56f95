"""Injected faults (shared by every stand-in), the runner, and the `sandbox` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.sandbox import aiod, cli, hf_hub
from services.sandbox.faults import FaultChange, FaultError, Faults, decode_changes
from services.sandbox.server import Listening, SandboxError, SandboxOptions, plan, serving

pytestmark = pytest.mark.timeout(60)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def hub() -> AsyncIterator[Listening]:
    app = hf_hub.create_app(hf_hub.HubOptions(datasets=20, quota=10**6, anonymous_quota=10**6))
    async with serving([("hf-hub", app, 0)]) as (listening,):
        yield listening


async def post_fault(client: httpx.AsyncClient, url: str, change: object) -> httpx.Response:
    return await client.post(f"{url}/_sandbox/faults", json=change)


def test_fraction_draws_are_reproducible_by_seed() -> None:
    def hits(seed: int) -> list[bool]:
        faults = Faults(seed=seed)
        faults.apply(FaultChange(status=503, fraction=0.3))
        return [faults.draw("GET", "/api/datasets") is not None for _ in range(200)]

    assert hits(5) == hits(5)
    assert hits(5) != hits(6)
    assert 30 < sum(hits(5)) < 90


def test_counts_path_prefix_and_method() -> None:
    faults = Faults()
    faults.apply(FaultChange(status=429, count=2, path_prefix="/api/datasets", method="get"))
    assert faults.draw("GET", "/api/whoami-v2") is None
    assert faults.draw("POST", "/api/datasets") is None
    assert faults.draw("GET", "/api/datasets/a/b") is not None
    assert faults.draw("GET", "/api/datasets") is not None
    assert faults.draw("GET", "/api/datasets") is None  # spent
    assert faults.rules == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('{"status": 200}', "status must be 400-599"),
        ('{"status": 503, "timeout": true}', "only one of"),
        ('{"fraction": 0.5}', "a rule needs one of"),
        ('{"status": 503, "fraction": 0}', "fraction"),
        ('{"status": 503, "count": 0}', "count"),
        ('{"stauts": 503}', "not a fault change"),
        ("[1]", "not a fault change"),
    ],
)
def test_bad_changes_are_refused_with_a_reason(body: str, problem: str) -> None:
    with pytest.raises(FaultError, match=problem):
        decode_changes(body)


async def test_status_fault_for_a_count_then_clear(hub: Listening) -> None:
    async with httpx.AsyncClient(base_url=hub.url) as client:
        set_ = await post_fault(client, hub.url, {"status": 503, "count": 2, "retry_after": 3})
        assert set_.json()["rules"][0]["count"] == 2
        first = await client.get("/api/datasets")
        assert first.status_code == 503 and first.headers["Retry-After"] == "3"
        assert first.headers["X-Error-Message"] and first.json()["error"]
        assert first.headers["RateLimit"].startswith('"api";r=')  # the Hub's headers stay on
        assert (await client.get("/api/datasets")).status_code == 503
        assert (await client.get("/api/datasets")).status_code == 200
        await post_fault(client, hub.url, [{"status": 429}, {"latency_ms": 5}])
        assert (await client.get("/api/datasets")).status_code == 429
        cleared = (await client.delete("/_sandbox/faults")).json()
        assert cleared == {"latency_ms": 0.0, "outage_remaining_seconds": 0.0, "rules": []}
        assert (await client.get("/api/datasets")).status_code == 200
        refused = await post_fault(client, hub.url, {"status": 99})
        assert refused.status_code == 400 and "status" in refused.json()["error"]


async def test_latency_and_outage_window(hub: Listening) -> None:
    async with httpx.AsyncClient(base_url=hub.url) as client:
        await post_fault(client, hub.url, {"latency_ms": 60})
        started = time.monotonic()
        assert (await client.get("/api/datasets")).status_code == 200
        assert time.monotonic() - started >= 0.06
        await client.delete("/_sandbox/faults")
        await post_fault(client, hub.url, {"outage_seconds": 0.3})
        assert (await client.get("/api/whoami-v2")).status_code == 503
        assert (await client.get("/_sandbox/faults")).status_code == 200  # hooks stay up
        await asyncio.sleep(0.35)
        assert (await client.get("/api/datasets")).status_code == 200


async def test_timeout_is_held_past_the_client_timeout(hub: Listening) -> None:
    async with httpx.AsyncClient(base_url=hub.url) as client:
        await post_fault(client, hub.url, {"timeout": True, "count": 1, "path_prefix": "/api/"})
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/api/datasets", timeout=0.3)
        assert (await client.get("/api/datasets", timeout=5)).status_code == 200


async def test_malformed_body_does_not_parse(hub: Listening) -> None:
    async with httpx.AsyncClient(base_url=hub.url) as client:
        await post_fault(client, hub.url, {"malformed": True, "count": 1})
        spoiled = await client.get("/api/datasets")
        assert spoiled.status_code == 200
        with pytest.raises(ValueError):
            spoiled.json()
        assert len((await client.get("/api/datasets")).json()) > 0


async def test_aiod_faults_use_its_error_shape() -> None:
    app = aiod.create_app(aiod.AiodOptions(faults=(FaultChange(status=502, count=1),)))
    async with serving([("aiod", app, 0)]) as (listening,), httpx.AsyncClient() as client:
        response = await client.get(f"{listening.url}/v2/counts/datasets")
        assert response.status_code == 502
        assert set(response.json()) == {"detail", "reference"}
        assert (await client.get(f"{listening.url}/v2/counts/datasets")).json() == 0


async def test_port_in_use_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = hf_hub.create_app(hf_hub.HubOptions(datasets=1))
        with pytest.raises(SandboxError, match=f"hf-hub: cannot listen on 127.0.0.1:{port}"):
            async with serving([("hf-hub", app, port)]):
                pass


def test_plan_names_ports_and_unknown_names() -> None:
    options = SandboxOptions(datasets=3)
    planned = plan(["all"], 9200, options)
    assert [(name, port) for name, _, port in planned][:2] == [("hf-hub", 9200), ("aiod", 9201)]
    assert [port for _, _, port in plan(["aiod"], None, options)] == [aiod.DEFAULT_PORT]
    with pytest.raises(SandboxError, match="no such stand-in: nope"):
        plan(["nope"], None, options)


def test_sandbox_parser_in_the_ferry_style() -> None:
    parser = argparse.ArgumentParser(prog="ferry")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["sandbox", "hf-hub", "--port", "0", "--datasets", "5", "--seed", "3",
         "--latency-ms", "20", "--fault", '{"status": 429, "fraction": 0.5}',
         "--hf-quota", "7", "--aiod-client", "x:y:platform_zenodo"]
    )  # fmt: skip
    options = cli.options_of(args)
    assert (args.names, args.port, options.datasets, options.seed) == (["hf-hub"], 0, 5, 3)
    assert FaultChange(latency_ms=20) in options.faults
    assert options.flag("hf_quota", 0) == 7
    assert aiod.parse_client("x:y:platform_zenodo").may_upload_for("zenodo")


def run_module(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "services.sandbox", *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_module_prints_where_it_listens_first_and_stops_on_sigterm() -> None:
    process = run_module("hf-hub", "aiod", "--port", "0", "--datasets", "10")
    try:
        assert process.stdout is not None
        hub_line = process.stdout.readline()
        aiod_line = process.stdout.readline()
        assert hub_line.startswith("hf-hub: listening on http://127.0.0.1:")
        assert hf_hub.DEFAULT_TOKEN in hub_line
        assert aiod_line.startswith("aiod: listening on http://127.0.0.1:")
        assert "platform_huggingface" in aiod_line and "sandbox-connector-secret" in aiod_line
        url = hub_line.split()[3]
        assert httpx.get(f"{url}/api/datasets").status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_module_reports_a_taken_port_and_bad_flags_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = run_module("aiod", "--port", str(port))
        _, err = process.communicate(timeout=20)
    assert process.returncode == 1
    assert (
        err.strip() == f"sandbox: aiod: cannot listen on 127.0.0.1:{port}: address already in use"
    )
    bad = run_module("hf-hub", "--fault", '{"status": 99}')
    _, err = bad.communicate(timeout=20)
    assert bad.returncode == 2 and "status must be 400-599" in err and "Traceback" not in err
    unknown = run_module("nope", "--port", "0")
    _, err = unknown.communicate(timeout=20)
    assert unknown.returncode == 2 and err.strip().startswith("sandbox: no such stand-in: nope")
