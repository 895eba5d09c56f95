"""Injected failures, shared by every stand-in: latency, an outage window, and rules that
answer a status, hold a request past the client's timeout, or spoil a body.

A stand-in attaches them with `install(app, faults, render_error)`. That adds one middleware
(`fault_middleware`) and the control routes:

    POST   /_sandbox/faults   one change (a JSON object) or several (a JSON array of them)
    GET    /_sandbox/faults   what is in force now: {"latency_ms", "outage_remaining_seconds",
                              "rules": [{...rule, "hits"}]}
    DELETE /_sandbox/faults   clear everything (latency, outage, rules); answers the same shape

A change (`FaultChange`) is a flat JSON object; every key is optional:

    {"latency_ms": 20}                              every request waits 20 ms first
    {"outage_seconds": 5}                           every request fails with 503 for 5 s from now
    {"status": 429, "count": 3}                     the next 3 requests get a 429
    {"status": 503, "fraction": 0.1, "path_prefix": "/api/datasets", "method": "GET"}
    {"status": 429, "retry_after": 2}               ... with `Retry-After: 2`
    {"timeout": true, "count": 1, "hold_seconds": 30}
                                                    held 30 s (past the client's timeout), then 504
    {"malformed": true, "count": 1}                 the real answer, its body cut in half
    {"seed": 7}                                     re-seed the draws of `fraction`

A rule is one of `status`, `timeout` or `malformed`, for `count` hits (absent: no end) on the
share `fraction` of the requests whose path starts with `path_prefix` (and whose method is
`method`, if given). Rules are tried in the order they were added; the first that hits decides.
Draws come from one `random.Random(seed)`, so a run with the same requests is reproducible.
A bad change is answered 400 `{"error": "..."}`.

Paths under `/_sandbox/` (the control and test hooks) never see a fault. Latency comes first,
then the outage, then the rules; a stand-in's own middlewares listed before `install` wraps
them (so, for instance, the HF Hub's `RateLimit` headers are on injected failures too).

`render_error(status, message)` gives the stand-in's own error shape (the HF Hub's
`X-Error-Message` and `{"error"}`, AIoD's `{"detail"}`, GraphQL's `{"errors"}`), so an
injected 503 looks like one from the real peer.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import msgspec
from aiohttp import web

CONTROL_PREFIX = "/_sandbox/"
FAULTS_PATH = "/_sandbox/faults"
DEFAULT_HOLD_SECONDS = 60.0  # longer than any client timeout we use; ends when the client leaves

ErrorRenderer = Callable[[int, str], web.Response]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FaultChange(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One change to the faults in force: the body of `POST /_sandbox/faults`, or `--fault`."""

    latency_ms: float | None = None
    outage_seconds: float | None = None
    seed: int | None = None
    # A rule, when one of these three is given:
    status: int | None = None
    timeout: bool = False
    malformed: bool = False
    path_prefix: str = "/"
    method: str | None = None
    count: int | None = None
    fraction: float = 1.0
    retry_after: int | None = None
    hold_seconds: float = DEFAULT_HOLD_SECONDS

    def has_rule(self) -> bool:
        return self.status is not None or self.timeout or self.malformed

    def problem(self) -> str | None:
        """Why this change cannot be applied, or None."""
        kinds = sum((self.status is not None, self.timeout, self.malformed))
        if kinds > 1:
            return "give only one of status, timeout, malformed"
        if self.status is not None and not 400 <= self.status <= 599:
            return f"status must be 400-599, not {self.status}"
        if not 0.0 < self.fraction <= 1.0:
            return f"fraction must be in (0, 1], not {self.fraction}"
        if self.count is not None and self.count < 1:
            return f"count must be at least 1, not {self.count}"
        if self.latency_ms is not None and self.latency_ms < 0:
            return "latency_ms must not be negative"
        if self.outage_seconds is not None and self.outage_seconds < 0:
            return "outage_seconds must not be negative"
        if self.hold_seconds < 0:
            return "hold_seconds must not be negative"
        if not self.path_prefix.startswith("/"):
            return f"path_prefix must start with '/', not {self.path_prefix!r}"
        if not self.has_rule() and any(
            value != default
            for value, default in (
                (self.path_prefix, "/"),
                (self.method, None),
                (self.count, None),
                (self.fraction, 1.0),
                (self.retry_after, None),
            )
        ):
            return "a rule needs one of status, timeout, malformed"
        return None


class FaultRule(msgspec.Struct, omit_defaults=True):
    """A rule in force, as `GET /_sandbox/faults` shows it."""

    path_prefix: str
    status: int | None = None
    timeout: bool = False
    malformed: bool = False
    method: str | None = None
    count: int | None = None  # hits left; None: no end
    fraction: float = 1.0
    retry_after: int | None = None
    hold_seconds: float = DEFAULT_HOLD_SECONDS
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return path.startswith(self.path_prefix) and (
            self.method is None or self.method.upper() == method
        )


class FaultState(msgspec.Struct):
    """What `GET /_sandbox/faults` answers."""

    latency_ms: float
    outage_remaining_seconds: float
    rules: list[FaultRule]


class FaultError(ValueError):
    """A change that cannot be applied; the message says why."""


def decode_changes(body: bytes | str) -> list[FaultChange]:
    """One change (an object) or several (an array), checked; FaultError if not valid."""
    try:
        decoded = msgspec.json.decode(body, type=FaultChange | list[FaultChange])
    except msgspec.DecodeError as exc:
        raise FaultError(f"not a fault change: {exc}") from None
    changes = decoded if isinstance(decoded, list) else [decoded]
    for change in changes:
        problem = change.problem()
        if problem:
            raise FaultError(problem)
    return changes


@dataclass
class Faults:
    """The faults in force on one stand-in. Not thread-safe: use it from the server's loop."""

    seed: int = 0
    clock: Callable[[], float] = time.monotonic
    latency_ms: float = 0.0
    outage_until: float = 0.0
    rules: list[FaultRule] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    def apply(self, change: FaultChange) -> None:
        problem = change.problem()
        if problem:
            raise FaultError(problem)
        if change.seed is not None:
            self.seed = change.seed
            self.random = random.Random(change.seed)
        if change.latency_ms is not None:
            self.latency_ms = change.latency_ms
        if change.outage_seconds is not None:
            self.outage_until = self.clock() + change.outage_seconds
        if change.has_rule():
            self.rules.append(
                FaultRule(
                    path_prefix=change.path_prefix,
                    status=change.status,
                    timeout=change.timeout,
                    malformed=change.malformed,
                    method=change.method,
                    count=change.count,
                    fraction=change.fraction,
                    retry_after=change.retry_after,
                    hold_seconds=change.hold_seconds,
                )
            )

    def clear(self) -> None:
        self.latency_ms = 0.0
        self.outage_until = 0.0
        self.rules.clear()
        self.random = random.Random(self.seed)

    def state(self) -> FaultState:
        return FaultState(
            latency_ms=self.latency_ms,
            outage_remaining_seconds=round(max(0.0, self.outage_until - self.clock()), 3),
            rules=list(self.rules),
        )

    def in_outage(self) -> bool:
        return self.clock() < self.outage_until

    def draw(self, method: str, path: str) -> FaultRule | None:
        """The rule that hits this request, its count spent by one; None if none does."""
        for rule in self.rules:
            if not rule.matches(method, path):
                continue
            if rule.fraction < 1.0 and self.random.random() >= rule.fraction:
                continue
            rule.hits += 1
            if rule.count is not None:
                rule.count -= 1
                if rule.count == 0:
                    self.rules.remove(rule)
            return rule
        return None


FAULTS = web.AppKey("sandbox_faults", Faults)
RENDER_ERROR: web.AppKey[ErrorRenderer] = web.AppKey("sandbox_render_error")


def install(app: web.Application, faults: Faults, render_error: ErrorRenderer) -> None:
    """Put `faults` in force on `app`: the middleware (innermost so far) and control routes."""
    app[FAULTS] = faults
    app[RENDER_ERROR] = render_error
    app.middlewares.append(fault_middleware)
    app.router.add_post(FAULTS_PATH, _post_faults)
    app.router.add_get(FAULTS_PATH, _get_faults)
    app.router.add_delete(FAULTS_PATH, _delete_faults)


def is_control_path(path: str) -> bool:
    return path.startswith(CONTROL_PREFIX)


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_control_path(request.path):
        return await handler(request)
    faults = request.config_dict[FAULTS]
    render_error = request.config_dict[RENDER_ERROR]
    if faults.latency_ms > 0:
        await asyncio.sleep(faults.latency_ms / 1000)
    if faults.in_outage():
        return render_error(503, "Service Unavailable (sandbox outage)")
    rule = faults.draw(request.method, request.path)
    if rule is None:
        return await handler(request)
    if rule.timeout:
        # Cancelled when the client gives up (the runner cancels handlers on disconnect).
        await asyncio.sleep(rule.hold_seconds)
        return render_error(504, "Gateway Timeout (sandbox fault)")
    if rule.malformed:
        return spoiled(await handler(request))
    assert rule.status is not None
    response = render_error(rule.status, f"{_reason(rule.status)} (sandbox fault)")
    if rule.retry_after is not None:
        response.headers["Retry-After"] = str(rule.retry_after)
    return response


def spoiled(response: web.StreamResponse) -> web.StreamResponse:
    """The same answer with its body cut in half, so that it no longer parses."""
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return response
    body = response.body
    cut = body[: len(body) // 2] if len(body) > 1 else b'{"'
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return web.Response(status=response.status, body=cut, headers=headers)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _json(value: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(value), content_type="application/json"
    )


async def _post_faults(request: web.Request) -> web.Response:
    faults = request.app[FAULTS]
    try:
        for change in decode_changes(await request.read()):
            faults.apply(change)
    except FaultError as exc:
        return _json({"error": str(exc)}, status=400)
    return _json(faults.state())


async def _get_faults(request: web.Request) -> web.Response:
    return _json(request.app[FAULTS].state())


async def _delete_faults(request: web.Request) -> web.Response:
    faults = request.app[FAULTS]
    faults.clear()
    return _json(faults.state())
