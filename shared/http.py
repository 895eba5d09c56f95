"""The client of one external HTTP API: pooled connections, paced to the peer's rate limit,
transient failures retried in-process with the policy of `shared.retry`.

    async with ExternalApi.from_settings(settings, "https://huggingface.co", name="hf-hub",
                                         headers={"Authorization": f"Bearer {token}"}) as hub:
        response = await hub.get("/api/datasets", params={"limit": 100})

A request returns a 2xx response or raises: permanent failures (4xx other than
408/409/425/429) at once as `httpx.HTTPStatusError`; transient ones (timeouts, connection
errors, 429, 5xx) after the retry budget is spent, as `shared.retry.BudgetSpent` with the
last error inside. The service runtime retries no further on `BudgetSpent` (the request was
retried here already) and parks the message as long as the last error's `Retry-After` asks.

Every request to one API takes its turn from one `RateLimitPacer`, which reads the rate-limit
headers of every response and slows down *before* the budget of the window runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypedDict, Unpack

import httpx

from shared.http_transport import AiohttpTransport
from shared.retry import BudgetSpent, RetryPolicy, TransientError, delay_hint, describe
from shared.settings import BaseSettings

log = logging.getLogger("ferry.http")

CONNECT_TIMEOUT = 10.0  # a peer that does not accept a connection in 10 s is not there


class RateLimited(TransientError):
    """The API's rate limit holds requests back for longer than the retry budget allows."""


@dataclass(frozen=True)
class RateLimitReport:
    """What one response says about the rate limit; None where it says nothing.

    Understands the IETF draft headers (`RateLimit: "api";r=<remaining>;t=<seconds>` and
    `RateLimit-Policy: "fixed window";"api";q=<quota>;w=<seconds>`, as the HF Hub sends them),
    the older `RateLimit-Remaining/-Reset/-Limit` and the common `X-RateLimit-*` ones.
    """

    remaining: int | None = None
    reset_after: float | None = None  # seconds until the window resets
    quota: int | None = None  # requests per window
    window: float | None = None  # seconds

    @classmethod
    def from_headers(cls, headers: httpx.Headers) -> RateLimitReport:
        remaining = reset_after = quota = window = None
        bucket = None
        if "ratelimit" in headers:
            # Several limits may be listed: the one with the least left is the one that binds.
            items = [_parameters(item) for item in headers["ratelimit"].split(",")]
            items = [item for item in items if "r" in item]
            if items:
                binding = min(items, key=lambda item: item["r"])
                bucket = binding.get("")
                remaining = int(binding["r"])
                reset_after = binding.get("t")
        if "ratelimit-policy" in headers:
            policies = [_parameters(item) for item in headers["ratelimit-policy"].split(",")]
            policies = [p for p in policies if "q" in p]
            ours = [p for p in policies if bucket is not None and p.get("") == bucket]
            if ours or policies:
                policy = (ours or policies)[0]
                quota = int(policy["q"])
                window = policy.get("w")
        for prefix in ("ratelimit-", "x-ratelimit-"):
            if remaining is None and _is_count(headers.get(prefix + "remaining")):
                remaining = int(headers[prefix + "remaining"])
                reset = headers.get(prefix + "reset")
                # delay_hint knows both forms of a reset: seconds from now, or epoch seconds.
                reset_after = delay_hint({"ratelimit-reset": reset}) if reset else None
            if quota is None and _is_count(headers.get(prefix + "limit")):
                quota = int(headers[prefix + "limit"])
        return cls(remaining, reset_after, quota, window)


_PARAMETER = re.compile(r'^\s*(?:"(?P<name>[^"]*)"|(?P<key>[a-z]+)=(?P<value>\d+(?:\.\d+)?))\s*$')


def _parameters(item: str) -> dict[str, Any]:
    """`"api";r=5;t=30` as {"": "api", "r": 5.0, "t": 30.0} (the last quoted name wins)."""
    out: dict[str, Any] = {}
    for part in item.split(";"):
        if match := _PARAMETER.match(part):
            if match["name"] is not None:
                out[""] = match["name"]
            else:
                out[match["key"]] = float(match["value"])
    return out


def _is_count(text: str | None) -> bool:
    return text is not None and text.strip().isdigit()


class RateLimitPacer:
    """Hands out turns to send requests to one API so that its rate limit is never hit.

    It keeps an estimate of the requests left in the current window and when the window
    resets, from every response's headers (less the requests sent after that one and still
    in flight, which the peer had not counted yet), so other clients' use of the same quota
    is seen too. While plenty is left, requests go at once. When what is left falls below
    `slow_below` of the quota, requests are spaced evenly so that the remainder lasts until
    the reset; when nothing is left, everyone waits for the reset. A 429 holds every caller
    until its `Retry-After` (or `RateLimit` `t=`). Until a first response has told it
    whether there is a limit at all, it lets one request out at a time.

    One pacer per API (or per rate-limit bucket), shared by every request to it.
    """

    def __init__(self, name: str = "api", *, slow_below: float = 0.25) -> None:
        self.name = name
        self.slow_below = slow_below
        self._turns = asyncio.Lock()  # turns are handed out one at a time, in order
        self._news = asyncio.Event()  # a response came back
        self._informed = False  # has a response told us how things stand?
        self._remaining: int | None = None  # None: no limit known
        self._reset_at: float | None = None  # loop time at which the window resets
        self._quota: int | None = None
        self._window: float | None = None
        self._peak = 0  # the most ever reported left, when the quota is not
        self._next_turn = 0.0
        self._blocked_until = 0.0
        self._tickets = itertools.count()
        self._in_flight: set[int] = set()  # the tickets of requests sent and not yet answered

    @property
    def remaining(self) -> int | None:
        """The requests estimated to be left in the window (None: no limit known)."""
        return self._remaining

    async def wait_turn(self, deadline: float | None = None) -> int:
        """Wait until a request may go, and return its ticket for `done`. Raise
        `RateLimited` when that is after `deadline` (a loop time), so the caller can park its
        work instead of holding it."""
        loop = asyncio.get_running_loop()
        async with self._turns:
            while True:
                now = loop.time()
                self._roll_window(now)
                pause = self._pause(now)
                if pause is not None and pause <= 0:
                    break
                if pause is None:  # wait for the request in flight to come back
                    if deadline is not None and now >= deadline:
                        raise RateLimited(f"{self.name}: no word on the rate limit in time")
                    wake = None if deadline is None else deadline - now
                elif deadline is not None and now + pause > deadline:
                    raise RateLimited(f"{self.name}: held for {pause:.1f}s", retry_after=pause)
                else:
                    wake = pause
                self._news.clear()
                # A response may change the picture before the pause is over.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._news.wait(), wake)
            return self._grant(loop.time())

    def done(self, ticket: int, response: httpx.Response | None) -> None:
        """Record the end of the request `ticket` let out; `response` is None when it
        failed without one."""
        self._in_flight.discard(ticket)
        if response is not None:
            self._informed = True
            # The peer may not have counted the requests sent after this one yet.
            uncounted = sum(1 for other in self._in_flight if other > ticket)
            self._observe(response, asyncio.get_running_loop().time(), uncounted)
        self._news.set()

    def _pause(self, now: float) -> float | None:
        """Seconds until the next request may go; None: until a response says more."""
        held = max(self._blocked_until, self._next_turn) - now
        if self._remaining is not None and self._remaining <= 0:
            if self._reset_at is not None:
                return max(held, self._reset_at - now)
            return None if self._in_flight else held
        if not self._informed and self._in_flight:
            return None
        return held

    def _grant(self, now: float) -> int:
        ticket = next(self._tickets)
        self._in_flight.add(ticket)
        if self._remaining is not None:
            self._remaining -= 1
            quota = self._quota or self._peak
            if self._reset_at is not None and 0 < self._remaining <= self.slow_below * quota:
                # Spread what is left evenly over what is left of the window, the last one
                # a step before the reset.
                self._next_turn = now + (self._reset_at - now) / (self._remaining + 1)
        return ticket

    def _roll_window(self, now: float) -> None:
        if self._reset_at is None or now < self._reset_at:
            return
        if self._window:  # fixed windows follow each other: the next reset is known
            self._reset_at += self._window * math.ceil((now - self._reset_at) / self._window)
            if self._reset_at <= now:
                self._reset_at += self._window
        else:
            self._reset_at = None
        if self._quota is not None:
            # Requests in flight may have arrived after the peer's reset: count them here.
            self._remaining = self._quota - len(self._in_flight)
        else:  # we do not know the new budget: learn it from one request first
            self._remaining = None
            self._informed = False
        self._next_turn = now

    def _observe(self, response: httpx.Response, now: float, uncounted: int) -> None:
        report = RateLimitReport.from_headers(response.headers)
        self._quota = report.quota or self._quota
        self._window = report.window or self._window
        if report.remaining is not None:
            self._peak = max(self._peak, report.remaining + 1)
            left = report.remaining - uncounted
            self._count_remaining(now, left, report.reset_after)
        if response.status_code == 429:
            hint = delay_hint(response.headers)
            if hint is not None and now + hint > self._blocked_until:
                self._blocked_until = now + hint
                log.warning(
                    "rate limited: holding requests", extra={"api": self.name, "hold_s": hint}
                )
            if report.remaining is None:  # learn the budget again once the hold is over
                self._remaining = self._reset_at = None
                self._informed = False

    def _count_remaining(self, now: float, left: int, reset_after: float | None) -> None:
        if reset_after is None:
            self._remaining = left
            return
        reset_at = now + reset_after
        # `t` is whole seconds, so the same window's reset moves about a little.
        slack = self._window / 2 if self._window else 1.0
        if self._reset_at is None or reset_at > self._reset_at + slack:  # a new window
            self._reset_at, self._remaining = reset_at, left
        elif reset_at >= self._reset_at - slack:  # the same window: the lower count wins
            self._reset_at = max(self._reset_at, reset_at)
            self._remaining = left if self._remaining is None else min(self._remaining, left)
        # else: a late answer from a window that is over; it says nothing about this one


class RequestOptions(TypedDict, total=False):
    """The keyword arguments of `ExternalApi.request`."""

    params: Mapping[str, Any] | None
    headers: Mapping[str, str] | None
    json: Any
    content: bytes | str | None
    data: Mapping[str, Any] | None
    retry: RetryPolicy | None


class ExternalApi:
    """An `httpx.AsyncClient` for one external API, with explicit timeouts and pool limits,
    requests paced to the API's rate limit and transient failures retried."""

    def __init__(
        self,
        base_url: str,
        *,
        name: str,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        timeout: float | httpx.Timeout = 30.0,
        max_connections: int = 100,
        retry: RetryPolicy | None = None,
        pacer: RateLimitPacer | None = None,
        follow_redirects: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.retry = retry or RetryPolicy()
        self.pacer = pacer or RateLimitPacer(name)
        if not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(
                connect=min(timeout, CONNECT_TIMEOUT), read=timeout, write=timeout, pool=timeout
            )
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers={"User-Agent": f"ferry-{name}", **(headers or {})},
            auth=auth,
            timeout=timeout,
            follow_redirects=follow_redirects,  # httpx drops Authorization on a cross-origin hop
            # Many requests in flight per worker: one pool as large as the requests we send.
            transport=transport or AiohttpTransport(max_connections=max_connections),
        )

    @classmethod
    def from_settings(
        cls,
        settings: BaseSettings,
        base_url: str,
        *,
        name: str,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        follow_redirects: bool = True,
    ) -> ExternalApi:
        """The client a service uses: timeouts, pool size and retries from its settings."""
        return cls(
            base_url,
            name=name,
            headers=headers,
            auth=auth,
            timeout=settings.http_timeout,
            max_connections=settings.http_max_connections,
            retry=RetryPolicy(
                attempts=settings.retry_attempts,
                base_delay=settings.retry_base_delay,
                max_delay=settings.retry_max_delay,
                budget=settings.retry_budget,
            ),
            follow_redirects=follow_redirects,
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        data: Mapping[str, Any] | None = None,
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """Send a request, paced and retried; a 2xx response, or raise (see the module).

        Every attempt sends the same request again, so the handlers behind it must be
        idempotent, as Ferry's are; pass `retry=RetryPolicy(attempts=1)` where they are not.
        """
        policy = retry or self.retry
        deadline = asyncio.get_running_loop().time() + policy.budget

        async def attempt() -> httpx.Response:
            ticket = await self.pacer.wait_turn(deadline)
            response = None
            try:
                response = await self.client.request(
                    method, url, params=params, headers=headers, json=json, content=content,
                    data=data,
                )  # fmt: skip
            finally:
                self.pacer.done(ticket, response)
            return response.raise_for_status()

        def on_retry(attempt: int, exc: BaseException, pause: float) -> None:
            log.warning(
                "retrying a request to an external API",
                # Never the headers (Authorization) nor the query (tokens hide there).
                extra={
                    "api": self.name,
                    "method": method,
                    "path": httpx.URL(url).path,
                    "attempt": attempt,
                    "pause_s": round(pause, 3),
                    "error": _failure(exc),
                },
            )

        try:
            return await policy.run(attempt, on_retry=on_retry)
        except BudgetSpent as spent:
            spent.add_note(f"{self.name}: gave up after {spent.attempts} attempts")
            raise

    async def get(self, url: str, **options: Unpack[RequestOptions]) -> httpx.Response:
        return await self.request("GET", url, **options)

    async def post(self, url: str, **options: Unpack[RequestOptions]) -> httpx.Response:
        return await self.request("POST", url, **options)

    async def put(self, url: str, **options: Unpack[RequestOptions]) -> httpx.Response:
        return await self.request("PUT", url, **options)

    async def delete(self, url: str, **options: Unpack[RequestOptions]) -> httpx.Response:
        return await self.request("DELETE", url, **options)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def _failure(exc: BaseException) -> str:
    """A failure as it may be logged: the status of an HTTP error, not its URL."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} {exc.response.reason_phrase}"
    return describe(exc)
