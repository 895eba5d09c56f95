"""CPU per request of the external-API client, beside httpx's own transport.

    python bench/http_client.py [--requests 6000] [--concurrency 32]

A local aiohttp server in its own process answers a small JSON body at once; the client
sends `--requests` GETs, `--concurrency` at a time, and its CPU time (not wall time: the
machine is shared) is divided by the requests. Baseline, in the same run: the same
requests through `httpx.AsyncClient` with its default transport (httpcore on anyio), the
client Ferry used before. Printed: ms of CPU per request for each, and `ratio: N` (how many
times less CPU Ferry's client spends). Both go through the whole `ExternalApi` path
(pacer, retry policy), so the ratio is the transport's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.http import ExternalApi

SERVER = """
import sys
from aiohttp import web
async def answer(request):
    return web.json_response({"identifier": "data_" + "x" * 24, "keyword": ["a"] * 20})
app = web.Application()
app.router.add_get("/record", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def cpu_per_request(api: ExternalApi, requests: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await api.get("/record")

    await asyncio.gather(*(one() for _ in range(concurrency * 4)))  # connections open
    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(requests)))
    return (time.process_time() - started) / requests


async def measure(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    async with ExternalApi(url, name="bench", max_connections=concurrency) as ours:
        ferry = await cpu_per_request(ours, requests, concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    httpcore = httpx.AsyncHTTPTransport(limits=limits)
    async with ExternalApi(url, name="bench", transport=httpcore) as theirs:
        baseline = await cpu_per_request(theirs, requests, concurrency)
    return ferry, baseline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--port", type=int, default=9591)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(args.port)])
    url = f"http://127.0.0.1:{args.port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/record", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the local server did not start") from None
                time.sleep(0.1)
        ferry, baseline = asyncio.run(measure(url, args.requests, args.concurrency))
    finally:
        server.terminate()
        server.wait(10)
    print(f"ferry (httpx over aiohttp): {ferry * 1000:.3f} ms CPU per request")
    print(f"baseline (httpx over httpcore): {baseline * 1000:.3f} ms CPU per request")
    print(f"ratio: {baseline / ferry:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
