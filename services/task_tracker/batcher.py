"""Group concurrent changes into one transaction; each caller waits for its commit.

Handlers run concurrently (one per delivered message, up to the prefetch). Each hands its
change to the batcher and awaits the future; the message is acked only when that future
resolves, i.e. after the batch is committed and its follow-up messages are confirmed.
Batches form on their own under load: while one commits, the next fills up.

An outage of the store is not a failure of the changes: the batch is held and its commit
tried again with backoff until the store is back (the handlers keep waiting, so nothing is
parked or dead-lettered for it), and the owner is told when the outage starts and ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

C = TypeVar("C")
R = TypeVar("R")

log = logging.getLogger("ferry.task_tracker.batcher")


@dataclass
class _Pending(Generic[C]):
    change: C
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


async def _nothing() -> None:
    return None


class CommitBatcher(Generic[C]):
    def __init__(
        self,
        commit: Callable[[Sequence[C]], Awaitable[None]],
        *,
        max_size: int,
        max_delay: float,
        is_outage: Callable[[BaseException], bool] = lambda exc: False,
        on_outage: Callable[[], Awaitable[None]] = _nothing,
        on_recovery: Callable[[], Awaitable[None]] = _nothing,
        retry_base_delay: float = 0.05,
        retry_max_delay: float = 5.0,
    ) -> None:
        self._commit = commit
        self.max_size = max_size
        self.max_delay = max_delay
        self._is_outage = is_outage
        self._on_outage = on_outage
        self._on_recovery = on_recovery
        self._retry_delays = (retry_base_delay, retry_max_delay)
        self._pending: list[_Pending[C]] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.in_outage = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def submit(self, change: C) -> None:
        """Returns once `change` is committed; raises what the commit raised."""
        if self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        pending = _Pending(change)
        self._pending.append(pending)
        self._arrived.set()
        await pending.done

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="commit-batcher")

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Commit what is pending, then stop. During a store outage, give up after
        `timeout`: those changes' messages were never acked, so the broker redelivers them."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        try:
            async with asyncio.timeout(timeout):
                while self._pending:
                    await self._flush_once()
        except TimeoutError:
            log.warning(
                "stopping with changes not committed (the store is unavailable);"
                " their messages will be redelivered",
                extra={"pending": len(self._pending)},
            )

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            if len(self._pending) < self.max_size and self.max_delay > 0:
                await asyncio.sleep(self.max_delay)
            await self._flush_once()

    async def _flush_once(self) -> None:
        batch, self._pending = self._pending[: self.max_size], self._pending[self.max_size :]
        if not self._pending:
            self._arrived.clear()
        if not batch:
            return
        try:
            await self._commit_through_outages([p.change for p in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            # One bad change must not fail its neighbours: commit them one by one, so only
            # the culprit's handler sees the error (and its retry policy decides).
            log.warning(
                "batch commit failed; committing its changes one by one",
                extra={"size": len(batch), "error": repr(exc)},
            )
            for pending in batch:
                try:
                    await self._commit_through_outages([pending.change])
                except Exception as single:
                    _settle(pending, single)
                else:
                    _settle(pending, None)
            return
        for pending in batch:
            _settle(pending, None)

    async def _commit_through_outages(self, changes: Sequence[C]) -> None:
        """Commit; while the store is out, hold the changes and try again with backoff."""
        base, cap = self._retry_delays
        attempt = 0
        while True:
            try:
                await self._commit(changes)
            except Exception as exc:
                if not self._is_outage(exc):
                    raise
                if not self.in_outage:
                    self.in_outage = True
                    log.error("the task store is unavailable; holding changes", exc_info=exc)
                    await self._on_outage()
                attempt += 1
                # Full jitter: replicas that lost the store together do not return together.
                await asyncio.sleep(random.uniform(0, min(cap, base * 2**attempt)))
                continue
            if self.in_outage:
                self.in_outage = False
                log.warning("the task store is back; committing again")
                await self._on_recovery()
            return


def _settle(pending: _Pending[C], error: BaseException | None) -> None:
    if pending.done.done():
        return
    if error is None:
        pending.done.set_result(None)
    else:
        pending.done.set_exception(error)
