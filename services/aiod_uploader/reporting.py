"""Per-item outcomes to the task tracker, many items per `tasks.update`.

One update per upload would make the tracker's queue as busy as the uploads themselves.
Instead, outcomes wait here for up to `interval` seconds (or until `batch_size` of one task
are waiting) and go as one update per task. Each handler awaits the broker's confirm of the
update that carries its outcome before it returns, so an upsert is acked only once its
outcome is safe in the broker: a crash loses no outcome, and a redelivery reports the same
item again (outcomes are state, merged per `(task_id, item_key)`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.contracts.tasks import ItemOutcome, TaskUpdate
from shared.messaging import publish
from shared.service import Service


@dataclass
class _Batch:
    items: list[ItemOutcome] = field(default_factory=list)
    sent: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class OutcomeReporter:
    def __init__(self, service: Service, *, interval: float, batch_size: int) -> None:
        self.service = service
        self.interval = interval
        self.batch_size = batch_size
        self._batches: dict[str, _Batch] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._sending: set[asyncio.Task[None]] = set()

    async def report(self, task_id: str, outcome: ItemOutcome) -> None:
        """Send `outcome` with the next update of its task; return once it is confirmed."""
        batch = self._batches.get(task_id)
        if batch is None:
            batch = self._batches[task_id] = _Batch()
        batch.items.append(outcome)
        sent = batch.sent
        if len(batch.items) >= self.batch_size or self.interval <= 0:
            self._send(task_id)
        elif task_id not in self._timers:
            self._timers[task_id] = asyncio.get_running_loop().call_later(
                self.interval, self._send, task_id
            )
        # Shielded: a handler cancelled at shutdown must not cancel its neighbours' update.
        await asyncio.shield(sent)

    def _send(self, task_id: str) -> None:
        timer = self._timers.pop(task_id, None)
        if timer is not None:
            timer.cancel()
        batch = self._batches.pop(task_id, None)
        if batch is None or not batch.items:
            return
        task = asyncio.ensure_future(self._publish(task_id, batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _publish(self, task_id: str, batch: _Batch) -> None:
        update = TaskUpdate(task_id=task_id, items=batch.items, observed_at=datetime.now(UTC))
        try:
            await publish(self.service.broker, self.service.names, update)
        except Exception as exc:
            _settle(batch.sent, exc)
        else:
            _settle(batch.sent, None)


def _settle(future: asyncio.Future[None], failure: Exception | None) -> None:
    if future.done():
        return
    if failure is None:
        future.set_result(None)
    else:
        future.set_exception(failure)
        # Nobody may be waiting any more (every handler was cancelled): not an error then.
        future.add_done_callback(lambda f: f.exception())
