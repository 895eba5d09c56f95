"""Retry in the worker: one policy that tells transient from permanent failures.

Transient failures (timeouts, connection errors, 408/409/429, 5xx) are retried in the
handler with exponential backoff and full jitter, honouring `Retry-After` and the `t=` of the
`RateLimit` header. When the in-process budget is spent the caller parks the message; after
the last parking it goes to the dead-letter queue. Permanent failures skip all of that.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx
import msgspec

from shared.redaction import redact_text

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 409, 425, 429})


class PermanentError(Exception):
    """Retrying cannot help (bad input, 4xx): dead-letter at once."""


class TransientError(Exception):
    """Retrying may help; `retry_after` is the peer's hint in seconds, if it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Verdict:
    transient: bool
    retry_after: float | None = None


def classify(exc: BaseException) -> Verdict:
    """Transient or permanent, and how long the peer asked us to wait."""
    if isinstance(exc, TransientError):
        return Verdict(True, exc.retry_after)
    if isinstance(exc, PermanentError | msgspec.ValidationError | msgspec.DecodeError):
        return Verdict(False)
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        if status in TRANSIENT_STATUS or status >= 500:
            return Verdict(True, delay_hint(exc.response.headers))
        return Verdict(False)
    if isinstance(exc, ValueError | TypeError | KeyError | LookupError):
        return Verdict(False)
    # Timeouts, connection resets, broker hiccups, and anything we do not know: retrying is
    # bounded by the budget and the parking classes, so a wrong guess costs time, not data.
    return Verdict(True)


_RATELIMIT_RESET = re.compile(r"(?:^|[;,\s])t=(\d+(?:\.\d+)?)")


def delay_hint(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds to wait, from `Retry-After` (seconds or HTTP date) or `RateLimit: ...;t=N`."""
    lowered = {k.lower(): v for k, v in headers.items()}
    retry_after = lowered.get("retry-after")
    if retry_after:
        value = retry_after.strip()
        if value.isdigit():
            return float(value)
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    ratelimit = lowered.get("ratelimit")
    if ratelimit and (match := _RATELIMIT_RESET.search(ratelimit)):
        return float(match.group(1))
    reset = lowered.get("ratelimit-reset") or lowered.get("x-ratelimit-reset")
    if reset and reset.strip().isdigit():
        seconds = float(reset)
        # Some peers send an epoch timestamp instead of a delta.
        return seconds if seconds < 10**9 else max(0.0, seconds - datetime.now(UTC).timestamp())
    return None


class BudgetSpent(Exception):
    """In-process retries are used up; the message must be parked (or dead-lettered)."""

    def __init__(self, last: BaseException, attempts: int) -> None:
        super().__init__(f"gave up after {attempts} attempts: {describe(last)}")
        self.last = last
        self.attempts = attempts


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 10.0
    jitter: float = 1.0  # fraction of the backoff that is randomised (1.0 = full jitter)
    budget: float = 30.0  # total seconds of in-process retrying

    def backoff(self, attempt: int, hint: float | None = None) -> float:
        """The pause after failed attempt `attempt` (1-based); a peer's hint wins if longer."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        pause = ceiling * (1 - self.jitter) + random.uniform(0, ceiling * self.jitter)
        return max(pause, hint or 0.0)

    async def run(
        self,
        call: Callable[[], Awaitable[T]],
        *,
        on_retry: Callable[[int, BaseException, float], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> T:
        """Run `call`; retry transient failures; raise permanent ones as they are and
        `BudgetSpent` when attempts or the time budget run out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.budget
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call()
            except (asyncio.CancelledError, BudgetSpent):
                # A BudgetSpent from inside was retried there already (an ExternalApi
                # request): retrying it here too would multiply the attempts.
                raise
            except Exception as exc:
                verdict = classify(exc)
                if not verdict.transient:
                    raise
                pause = self.backoff(attempt, verdict.retry_after)
                if attempt >= self.attempts or loop.time() + pause > deadline:
                    raise BudgetSpent(exc, attempt) from exc
                if on_retry is not None:
                    on_retry(attempt, exc, pause)
                await sleep(pause)


def describe(exc: BaseException) -> str:
    """The one-line reason of a failure, as dead-letter headers, item failures, error
    replies and logs show it: secrets redacted here, once, for all of them."""
    text = str(exc) or exc.__class__.__name__
    return redact_text(f"{exc.__class__.__name__}: {text}")[:1000]
