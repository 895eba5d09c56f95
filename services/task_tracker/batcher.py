"""Group concurrent changes into one transaction; each caller waits for its commit.

Handlers run concurrently (one per delivered message, up to the prefetch). Each hands its
change to the batcher and awaits the future; the message is acked only when that future
resolves, i.e. after the batch is committed and its follow-up messages are confirmed.
Batches form on their own under load: while one commits, the next fills up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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


class CommitBatcher(Generic[C]):
    def __init__(
        self,
        commit: Callable[[Sequence[C]], Awaitable[None]],
        *,
        max_size: int,
        max_delay: float,
    ) -> None:
        self._commit = commit
        self.max_size = max_size
        self.max_delay = max_delay
        self._pending: list[_Pending[C]] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

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

    async def stop(self) -> None:
        """Commit what is pending, then stop."""
        if self._task is None:
            return
        while self._pending:
            await self._flush_once()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

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
            await self._commit([p.change for p in batch])
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
                    await self._commit([pending.change])
                except Exception as single:
                    _settle(pending, single)
                else:
                    _settle(pending, None)
            return
        for pending in batch:
            _settle(pending, None)


def _settle(pending: _Pending[C], error: BaseException | None) -> None:
    if pending.done.done():
        return
    if error is None:
        pending.done.set_result(None)
    else:
        pending.done.set_exception(error)
