"""The client of external APIs against a real HTTP server on 127.0.0.1 (httpx is not mocked):
retries of transient failures, permanent ones raised at once, pool limits, the pacer
that keeps a worker under the peer's rate limit, and the wire underneath (aiohttp)."""

from __future__ import annotations

import asyncio
import gzip
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from shared.http import ExternalApi, RateLimited, RateLimitPacer, RateLimitReport
from shared.http_transport import AiohttpTransport, ResponseTooLarge
from shared.retry import BudgetSpent, RetryPolicy, classify
from shared.settings import BaseSettings

pytestmark = pytest.mark.timeout(30)

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, budget=5.0)


# -- a peer: a real HTTP server whose answers each test scripts ----------------------------


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"ok": true}'
    delay: float = 0.0  # seconds before answering


@dataclass
class Seen:
    at: float  # time.monotonic() on arrival
    method: str
    path: str
    headers: dict[str, str]
    status: int = 0


class Peer:
    """Answers the n-th request (1-based) with `script(n, seen)`; remembers every request."""

    def __init__(self) -> None:
        self.script: Callable[[int, Seen], Reply] = lambda n, seen: Reply()
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.active = 0
        self.most_active = 0  # the most requests it was answering at once
        self.stopping = threading.Event()
        self.url = ""

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        handler.rfile.read(length)
        seen = Seen(time.monotonic(), handler.command, handler.path, dict(handler.headers))
        with self.lock:
            self.seen.append(seen)
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            reply = self.script(len(self.seen), seen)
            seen.status = reply.status
        try:
            self.stopping.wait(reply.delay)
            handler.send_response(reply.status)
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(reply.body)))
            handler.end_headers()
            handler.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left
        finally:
            with self.lock:
                self.active -= 1

    def statuses(self) -> list[int]:
        return [s.status for s in self.seen]


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops bursts of connections, costing 1 s each


@pytest.fixture
def peer() -> Iterator[Peer]:
    peer = Peer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real APIs

        def do_GET(self) -> None:
            peer.answer(self)

        do_POST = do_PUT = do_DELETE = do_GET

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    peer.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield peer
    finally:
        peer.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def fixed_window(quota: int, window: float) -> Callable[[int, Seen], Reply]:
    """A peer's rate limit as the HF Hub applies it: `quota` requests per fixed window,
    reported on every response (`t` in whole seconds, rounded up), 429 beyond it."""
    start: list[float] = []
    counts: dict[int, int] = {}

    def script(n: int, seen: Seen) -> Reply:
        start.append(seen.at)
        elapsed = seen.at - start[0]
        index = int(elapsed // window)
        reset = max(1, math.ceil((index + 1) * window - elapsed))
        used = counts.get(index, 0)
        policy = {"RateLimit-Policy": f'"fixed window";"api";q={quota};w={window:g}'}
        if used >= quota:
            headers = {"RateLimit": f'"api";r=0;t={reset}', "Retry-After": str(reset)}
            return Reply(429, {**headers, **policy}, b'{"error": "rate limited"}')
        counts[index] = used + 1
        return Reply(200, {"RateLimit": f'"api";r={quota - used - 1};t={reset}', **policy})

    return script


# -- retries ------------------------------------------------------------------------------


async def test_a_429_with_retry_after_is_waited_out_then_succeeds(peer: Peer) -> None:
    peer.script = lambda n, seen: Reply(429, {"Retry-After": "1"}) if n == 1 else Reply()
    async with ExternalApi(peer.url, name="peer", retry=FAST) as api, asyncio.timeout(10):
        started = time.monotonic()
        response = await api.get("/api/datasets")
    assert response.json() == {"ok": True}
    assert peer.statuses() == [429, 200]
    assert peer.seen[1].at - peer.seen[0].at >= 0.95  # the peer's hint, not our 10 ms backoff
    assert time.monotonic() - started < 5


async def test_a_503_is_retried_then_succeeds(peer: Peer) -> None:
    peer.script = lambda n, seen: Reply(503, body=b"{}") if n <= 2 else Reply()
    async with ExternalApi(peer.url, name="peer", retry=FAST) as api, asyncio.timeout(10):
        response = await api.post("/api/repos/create", json={"name": "x"})
    assert response.status_code == 200
    assert peer.statuses() == [503, 503, 200]


async def test_a_permanent_404_is_raised_at_once_as_an_http_status_error(peer: Peer) -> None:
    peer.script = lambda n, seen: Reply(404, {"X-Error-Code": "RepoNotFound"}, b'{"error": "no"}')
    async with ExternalApi(peer.url, name="peer", retry=FAST) as api, asyncio.timeout(10):
        with pytest.raises(httpx.HTTPStatusError) as error:
            await api.get("/api/datasets/ns/missing")
    assert error.value.response.status_code == 404
    assert error.value.response.json() == {"error": "no"}  # the body is there to read
    assert not classify(error.value).transient
    assert peer.statuses() == [404]


async def test_timeouts_are_retried_then_raised_when_the_budget_is_spent(peer: Peer) -> None:
    peer.script = lambda n, seen: Reply(delay=2.0)
    policy = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, budget=5.0)
    async with (
        ExternalApi(peer.url, name="peer", timeout=0.2, retry=policy) as api,
        asyncio.timeout(10),
    ):
        started = time.monotonic()
        with pytest.raises(BudgetSpent) as error:
            await api.get("/slow")
    assert len(peer.seen) == 3
    assert time.monotonic() - started < 2
    assert isinstance(error.value.last, httpx.TimeoutException)
    assert classify(error.value.last).transient  # the caller parks the message
    assert any("gave up after 3 attempts" in note for note in error.value.__notes__)


async def test_the_hint_of_the_last_429_survives_the_spent_budget(peer: Peer) -> None:
    """A wait longer than the budget is not slept through in the handler: the 429 is raised
    with its Retry-After (to park the message that long), and the pacer turns the next
    caller away at once, with the time left."""
    peer.script = lambda n, seen: Reply(429, {"Retry-After": "60"})
    async with ExternalApi(peer.url, name="peer", retry=FAST) as api, asyncio.timeout(5):
        with pytest.raises(BudgetSpent) as error:
            await api.get("/api/datasets")
        assert isinstance(error.value.last, httpx.HTTPStatusError)
        assert classify(error.value.last).retry_after == 60
        with pytest.raises(BudgetSpent) as held:
            await api.get("/api/datasets")
    assert isinstance(held.value.last, RateLimited)
    assert 55 < (classify(held.value.last).retry_after or 0) <= 60
    assert peer.statuses() == [429]


# -- the pool and the pacer -----------------------------------------------------------------


async def test_the_pool_caps_the_connections_to_one_api(peer: Peer) -> None:
    peer.script = lambda n, seen: Reply(delay=0.2)
    async with (
        ExternalApi(peer.url, name="peer", max_connections=3, retry=FAST) as api,
        asyncio.timeout(10),
    ):
        await asyncio.gather(*(api.get(f"/item/{i}") for i in range(9)))
    assert len(peer.seen) == 9
    assert peer.most_active == 3


async def test_an_api_without_rate_limit_headers_is_not_held_back(peer: Peer) -> None:
    peer.script = lambda n, seen: Reply(delay=0.3)
    async with ExternalApi(peer.url, name="peer", retry=FAST) as api, asyncio.timeout(10):
        started = time.monotonic()
        await asyncio.gather(*(api.get(f"/item/{i}") for i in range(20)))
    # One request first, to learn whether there is a limit; then all the rest at once.
    assert time.monotonic() - started < 1.5
    assert peer.most_active == 19


async def test_the_pacer_keeps_a_burst_under_the_rate_limit(peer: Peer) -> None:
    """Quota 10 per 2 s window; 30 requests at once need three windows, and since the
    pacer waits for the reset instead of finding the limit, the peer never says 429."""
    peer.script = fixed_window(quota=10, window=2.0)
    patient = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, budget=15.0)
    async with ExternalApi(peer.url, name="hub", retry=patient) as api, asyncio.timeout(15):
        started = time.monotonic()
        responses = await asyncio.gather(*(api.get(f"/api/datasets/{i}") for i in range(30)))
        elapsed = time.monotonic() - started
    assert all(r.status_code == 200 for r in responses)
    assert peer.statuses().count(429) == 0
    assert len(peer.seen) == 30
    assert 3.9 <= elapsed < 10


async def test_a_429_holds_every_caller_until_the_reset(peer: Peer) -> None:
    peer.script = lambda n, seen: Reply(429, {"Retry-After": "1"}) if n == 1 else Reply()
    async with ExternalApi(peer.url, name="peer", retry=FAST) as api, asyncio.timeout(10):
        await asyncio.gather(*(api.get(f"/item/{i}") for i in range(8)))
    refused = peer.seen[0].at
    assert peer.statuses() == [429] + [200] * 8
    assert all(seen.at - refused >= 0.95 for seen in peer.seen[1:])


def hub_response(
    remaining: int, reset: float, quota: int = 100, window: int = 60
) -> httpx.Response:
    return httpx.Response(
        200,
        headers={
            "RateLimit": f'"api";r={remaining};t={reset}',
            "RateLimit-Policy": f'"fixed window";"api";q={quota};w={window}',
        },
    )


async def take_turns(pacer: RateLimitPacer, count: int) -> float:
    """Seconds that `count` turns take (the requests stay in flight)."""
    started = time.monotonic()
    for _ in range(count):
        await pacer.wait_turn()
    return time.monotonic() - started


async def test_the_pacer_spaces_requests_out_as_the_budget_runs_low() -> None:
    async with asyncio.timeout(5):
        plenty = RateLimitPacer()
        plenty.done(await plenty.wait_turn(), hub_response(remaining=80, reset=1.0))
        assert await take_turns(plenty, 6) < 0.05  # far from the limit: at once

        low = RateLimitPacer()
        low.done(await low.wait_turn(), hub_response(remaining=20, reset=1.0))
        # A fifth of the quota left: the rest is spread over the second left, 1/19 s apart.
        assert 0.2 <= await take_turns(low, 6) < 0.45

        spent = RateLimitPacer()
        spent.done(await spent.wait_turn(), hub_response(remaining=0, reset=0.5))
        assert 0.45 <= await take_turns(spent, 1) < 0.7  # nothing left: wait for the reset
        assert spent.remaining == 99  # a new window: the quota, less the one just sent


async def test_the_pacer_ignores_a_late_answer_from_a_window_that_is_over() -> None:
    pacer = RateLimitPacer()
    async with asyncio.timeout(5):
        pacer.done(await pacer.wait_turn(), hub_response(remaining=90, reset=50))
        late = await pacer.wait_turn()
    assert pacer.remaining == 89
    pacer.done(late, hub_response(remaining=3, reset=2))  # counted in the window before
    assert pacer.remaining == 89


def test_rate_limit_headers_are_read_in_their_several_shapes() -> None:
    hub = RateLimitReport.from_headers(
        hub_response(remaining=7, reset=42, quota=1000, window=300).headers
    )
    assert hub == RateLimitReport(remaining=7, reset_after=42.0, quota=1000, window=300.0)
    several = httpx.Headers(
        {
            "RateLimit": '"pages";r=90;t=10, "api";r=3;t=20',
            "RateLimit-Policy": '"fixed window";"pages";q=100;w=60, "fixed window";"api";q=5;w=30',
        }
    )
    assert RateLimitReport.from_headers(several) == RateLimitReport(3, 20.0, 5, 30.0)
    github = httpx.Headers(
        {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "59", "X-RateLimit-Reset": "15"}
    )
    assert RateLimitReport.from_headers(github) == RateLimitReport(59, 15.0, 60, None)
    assert RateLimitReport.from_headers(httpx.Headers({"RateLimit": "garbage"})) == (
        RateLimitReport()
    )


# -- settings and secrets -------------------------------------------------------------------


async def test_a_service_client_takes_its_limits_from_the_settings(peer: Peer) -> None:
    settings = BaseSettings(http_timeout=12.0, http_max_connections=7, retry_attempts=2)
    async with ExternalApi.from_settings(
        settings, peer.url, name="aiod", headers={"Accept": "application/json"}
    ) as api:
        assert api.client.timeout == httpx.Timeout(connect=10.0, read=12.0, write=12.0, pool=12.0)
        assert api.retry.attempts == 2
        assert str(api.client.base_url).rstrip("/") == peer.url
        async with asyncio.timeout(5):
            await api.get("/ping")
    assert peer.seen[0].headers["Accept"] == "application/json"
    assert peer.seen[0].headers["User-Agent"] == "ferry-aiod"


async def test_retries_are_logged_without_credentials(
    peer: Peer, caplog: pytest.LogCaptureFixture
) -> None:
    peer.script = lambda n, seen: Reply(503) if n == 1 else Reply()
    headers = {"Authorization": "Bearer hf_s3cr3t"}
    async with ExternalApi(peer.url, name="hub", headers=headers, retry=FAST) as api:
        with caplog.at_level(logging.DEBUG, logger="ferry.http"):
            await api.get("/api/datasets", params={"token": "q5ecret"})
    assert peer.seen[0].headers["Authorization"] == "Bearer hf_s3cr3t"
    records = [r for r in caplog.records if r.name == "ferry.http"]
    assert records  # the retry was logged
    for record in records:
        text = f"{record.getMessage()} {record.__dict__}"
        assert "s3cr3t" not in text
        assert "q5ecret" not in text


# -- the wire: httpx's API over aiohttp's pool ----------------------------------------------


async def test_a_compressed_body_is_decoded_and_headers_keep_their_case(peer: Peer) -> None:
    compressed = gzip.compress(b'{"ok": "yes"}')
    peer.script = lambda n, seen: Reply(headers={"Content-Encoding": "gzip"}, body=compressed)
    async with ExternalApi(peer.url, name="peer", retry=FAST) as api:
        response = await api.post("/things?q=a%2Fb", json={"x": 1})
    assert response.json() == {"ok": "yes"}
    assert response.headers["content-encoding"] == "gzip"
    assert peer.seen[0].path == "/things?q=a%2Fb"  # sent as quoted, not quoted again
    assert peer.seen[0].headers["User-Agent"] == "ferry-peer"


async def test_a_body_over_the_limit_is_refused_for_good(peer: Peer) -> None:
    peer.script = lambda n, seen: Reply(body=b"x" * 5000)
    transport = AiohttpTransport(max_body_bytes=4096)
    async with ExternalApi(peer.url, name="peer", retry=FAST, transport=transport) as api:
        with pytest.raises(ResponseTooLarge) as error:
            await api.get("/big")
    assert not classify(error.value).transient
    assert len(peer.seen) == 1  # not retried


async def test_connection_failures_are_httpx_errors_and_transient() -> None:
    with socket.socket() as probe:  # a port where nobody listens
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    async with ExternalApi(f"http://127.0.0.1:{closed}", name="gone", retry=FAST) as api:
        with pytest.raises(BudgetSpent) as error:
            await api.get("/")
    assert isinstance(error.value.last, httpx.ConnectError)
    assert classify(error.value.last).transient

    # A peer that hangs up without answering.
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, ExternalApi(f"http://127.0.0.1:{port}", name="rude", retry=FAST) as api:
        with pytest.raises(BudgetSpent) as error:
            await api.get("/")
    assert isinstance(error.value.last, httpx.RemoteProtocolError)
    assert classify(error.value.last).transient


async def test_the_proxy_of_the_environment_is_used(
    peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The peer plays the proxy: a request for another host reaches it in absolute form.
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, peer.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with ExternalApi("http://api.example.invalid", name="far", retry=FAST) as api:
        response = await api.get("/datasets?limit=1")
    assert response.json() == {"ok": True}
    assert peer.seen[0].path == "http://api.example.invalid/datasets?limit=1"
    # NO_PROXY names the hosts reached directly.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    async with ExternalApi(peer.url, name="near", retry=FAST) as api:
        await api.get("/datasets?limit=2")
    assert peer.seen[1].path == "/datasets?limit=2"
