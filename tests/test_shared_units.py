"""Settings, log redaction, the retry policy, and the health endpoints."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import msgspec
import pytest

from shared.health import HealthServer
from shared.logging import JsonFormatter
from shared.retry import (
    BudgetSpent,
    PermanentError,
    RetryPolicy,
    TransientError,
    classify,
    delay_hint,
    describe,
)
from shared.settings import BaseSettings, SettingsError

# -- settings ---------------------------------------------------------------------------


def test_settings_come_from_ferry_variables_and_files(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text("amqp://u:p@rabbit:5672/\n")
    settings = BaseSettings.from_env(
        {"FERRY_AMQP_URL_FILE": str(secret), "FERRY_PREFETCH": "7", "FERRY_PARK_DELAYS": "1, 60"}
    )
    assert settings.amqp_url == "amqp://u:p@rabbit:5672/"
    assert (settings.prefetch, settings.park_delays) == (7, (1.0, 60.0))
    assert settings.redacted()["amqp_url"] == "***"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"FERRY_PREFETCH": "many"}, "FERRY_PREFETCH: expected int, got 'many'"),
        ({"FERRY_AMQP_URL": "http://x"}, "FERRY_AMQP_URL: must start with amqp://"),
        ({"FERRY_AMQP_URL_FILE": "/nonexistent/secret"}, "FERRY_AMQP_URL_FILE: cannot read"),
        ({"FERRY_PARK_DELAYS": "0"}, "FERRY_PARK_DELAYS"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(env: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError) as error:
        BaseSettings.from_env(env)
    assert says in str(error.value)
    assert "\n" not in str(error.value)


# -- logs -------------------------------------------------------------------------------


def test_logs_are_json_lines_with_secrets_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    log = logging.getLogger("ferry.test.redaction")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning(
            "connecting to amqp://guest:hunter2@rabbit/ with Authorization: Bearer abc.def",
            extra={"token": "t0ps3cret", "settings": {"database_url": "postgresql://u:pw@db/x"}},
        )
    finally:
        log.removeHandler(handler)
    line = stream.getvalue()
    entry = msgspec.json.decode(line)
    for secret in ("hunter2", "abc.def", "t0ps3cret", ":pw@"):
        assert secret not in line
    assert entry["service"] == "test" and entry["level"] == "warning"
    assert entry["token"] == "***"


# -- retry ------------------------------------------------------------------------------


def test_delay_hints_from_retry_after_and_ratelimit() -> None:
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert delay_hint({"Retry-After": "7"}) == 7.0
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert delay_hint({"retry-after": date}, now=now) == pytest.approx(30.0)
    assert delay_hint({"RateLimit": '"default";r=0;t=12'}) == 12.0
    assert delay_hint({"RateLimit-Reset": "5"}) == 5.0
    assert delay_hint({}) is None


def _status_error(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "http://127.0.0.1/")
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError("peer", request=request, response=response)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (_status_error(429), True),
        (_status_error(503), True),
        (_status_error(408), True),
        (_status_error(409), True),
        (_status_error(404), False),
        (_status_error(422), False),
        (httpx.ConnectTimeout("slow"), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (PermanentError("no"), False),
        (ValueError("bad"), False),
    ],
)
def test_transient_and_permanent_failures(exc: BaseException, transient: bool) -> None:
    assert classify(exc).transient is transient


def test_a_429_carries_its_retry_after() -> None:
    assert classify(_status_error(429, {"Retry-After": "3"})).retry_after == 3.0


async def test_the_policy_retries_transient_failures_with_bounded_backoff() -> None:
    pauses: list[float] = []
    calls = 0

    async def sleep(pause: float) -> None:
        pauses.append(pause)

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TransientError("busy", retry_after=0.5 if calls == 2 else None)
        return "done"

    policy = RetryPolicy(attempts=5, base_delay=0.1, max_delay=1.0, budget=10)
    assert await policy.run(flaky, sleep=sleep) == "done"
    assert len(pauses) == 2
    assert 0 <= pauses[0] <= 0.1  # full jitter under the first ceiling
    assert pauses[1] >= 0.5  # the peer's Retry-After wins when longer


async def test_the_policy_gives_up_when_attempts_run_out_and_skips_permanent_errors() -> None:
    async def sleep(pause: float) -> None:
        pass

    async def always_busy() -> None:
        raise TransientError("busy")

    with pytest.raises(BudgetSpent) as spent:
        await RetryPolicy(attempts=3).run(always_busy, sleep=sleep)
    assert spent.value.attempts == 3

    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("no")

    with pytest.raises(PermanentError):
        await RetryPolicy(attempts=3).run(refused, sleep=sleep)
    assert calls == 1


async def test_a_retry_after_beyond_the_budget_parks_at_once() -> None:
    async def sleep(pause: float) -> None:
        raise AssertionError("must not sleep past the budget")

    async def rate_limited() -> None:
        raise TransientError("429", retry_after=120)

    with pytest.raises(BudgetSpent):
        await RetryPolicy(attempts=5, budget=30).run(rate_limited, sleep=sleep)


# -- health -----------------------------------------------------------------------------


@pytest.fixture
async def health() -> AsyncIterator[tuple[HealthServer, list[str]]]:
    problems: list[str] = []

    async def readiness() -> list[str]:
        return list(problems)

    server = HealthServer("127.0.0.1", 0, readiness)
    await server.start()
    yield server, problems
    await server.stop()


async def test_health_endpoints(health: tuple[HealthServer, list[str]]) -> None:
    server, problems = health
    base = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{base}/healthz")).status_code == 200
        assert (await http.get(f"{base}/readyz")).json() == {"ready": True, "problems": []}
        problems.append("broker not connected")
        response = await http.get(f"{base}/readyz")
        assert response.status_code == 503
        assert response.json()["problems"] == ["broker not connected"]
        metrics = await http.get(f"{base}/metrics")
        assert "ferry_handler_seconds" in metrics.text
        assert (await http.get(f"{base}/nope")).status_code == 404
        assert (await http.post(f"{base}/healthz")).status_code == 405
    await asyncio.sleep(0)


def test_settings_survive_a_trip_through_the_environment() -> None:
    settings = BaseSettings(namespace="ns", prefetch=3, park_delays=(0.5, 30.0))
    assert BaseSettings.from_env(settings.as_environment()) == settings


class _Credentials(msgspec.Struct):
    user: str
    password: str


@dataclasses.dataclass
class _Upstream:
    url: str
    api_key: str


def test_secrets_in_structs_dataclasses_and_basic_auth_are_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    try:
        log.warning(
            "upstream said no",
            extra={
                "creds": _Credentials(user="u", password="hunter2"),
                "upstream": _Upstream(url="https://a:b4d@example.org/x", api_key="k-123"),
                "request": "GET /x with Authorization: Basic dXNlcjpodW50ZXIy",
            },
        )
    finally:
        log.removeHandler(handler)
    line = stream.getvalue()
    for secret in ("hunter2", "b4d", "k-123", "dXNlcjpodW50ZXIy"):
        assert secret not in line
    entry = msgspec.json.decode(line)
    assert entry["creds"] == {"user": "u", "password": "***"}


def test_every_failure_reason_is_redacted_where_it_is_built() -> None:
    reason = describe(
        RuntimeError("401 for Authorization: Basic dXNlcjpw and token=abc at amqp://u:pw@h/")
    )
    assert "dXNlcjpw" not in reason and "abc" not in reason and ":pw@" not in reason
    assert reason.startswith("RuntimeError: 401 for Authorization: Basic ***")


async def test_a_budget_spent_inside_the_call_is_not_retried_again() -> None:
    # An ExternalApi request retried itself already; the handler's policy must not multiply it.
    calls = 0

    async def request_that_gave_up() -> None:
        nonlocal calls
        calls += 1
        raise BudgetSpent(TransientError("503 from the peer"), 4)

    policy = RetryPolicy(attempts=4, base_delay=0.001, budget=5)
    with pytest.raises(BudgetSpent):
        await policy.run(request_that_gave_up)
    assert calls == 1
