"""Upserting, removing and pruning one platform's dataset records at AIoD.

An upsert is idempotent, keyed by `(platform, platform_resource_identifier = the Hub's
_id)`: look the record up; write nothing when it already says the same (`unchanged`);
replace it when something changed (`updated`); create it when there is none (`created`).
A POST that collides with a record created meanwhile (409) is resolved by the identifier
in the conflict's detail: that record is compared and replaced like any other.

Every upsert and removal ends as one outcome of its task item: SUCCESS with the detail
above (or `deleted`), or, through the runtime, ERRORED with AIoD's reason. When the
failure is the operator's to fix (credentials refused, the platform role missing), the
task itself ends ERRORED with a message that says what to fix, and the messages go to the
dead-letter queue to be replayed once it is fixed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TypeVar

from services.aiod_uploader.catalogue import AiodCatalogue, Conflict, RunFailure
from services.aiod_uploader.mapping import says_the_same, to_aiod
from services.aiod_uploader.prune import PRUNE_ITEM, SeenLedger, decide
from services.aiod_uploader.reporting import OutcomeReporter
from services.aiod_uploader.settings import UploaderSettings
from shared.contracts.aiod import DatasetPrune, DatasetRemove, DatasetUpsert, HubDataset
from shared.contracts.tasks import ItemOutcome, TaskUpdate
from shared.messaging import publish
from shared.retry import TransientError, classify, describe
from shared.service import Service

log = logging.getLogger("ferry.aiod_uploader")

T = TypeVar("T")

# A run-level failure is remembered this long: meanwhile uploads fail at once instead of
# asking Keycloak again for each of thousands of messages.
FAILURE_MEMORY_SECONDS = 15.0
ENDED_TASKS_REMEMBERED = 1024


class Uploader:
    def __init__(
        self,
        settings: UploaderSettings,
        service: Service,
        catalogue: AiodCatalogue,
        reporter: OutcomeReporter,
        ledger: SeenLedger,
    ) -> None:
        self.settings = settings
        self.service = service
        self.catalogue = catalogue
        self.reporter = reporter
        self.ledger = ledger
        self._failure: RunFailure | None = None
        self._failure_until = 0.0
        self._ended: OrderedDict[str, None] = OrderedDict()  # tasks already ended ERRORED
        self._preflight: asyncio.Future[None] | None = None

    # -- the pre-flight ---------------------------------------------------------------------

    async def start_preflight(self) -> None:
        """Run the pre-flight beside the consumers: a slow AIoD must not hold up the start."""
        self._preflight = asyncio.ensure_future(self.preflight())

    async def preflight(self) -> None:
        """At start: the credentials work and the client holds `platform_<name>`. A failure
        the operator must fix is logged as one line and kept for readiness; a transient one
        is left for the first upload to meet again."""
        try:
            account = await self.catalogue.check_role()
        except RunFailure as failure:
            self._remember(failure)
            log.error(f"cannot upload to AIoD: {failure}")
        except Exception as exc:
            log.warning("AIoD pre-flight check did not complete", extra={"error": describe(exc)})
        else:
            self._failure = None
            log.info(
                "AIoD pre-flight passed",
                extra={"account": account, "platform": self.settings.aiod_platform},
            )

    def readiness(self) -> list[str]:
        if self._failure is not None:
            return [f"cannot upload to AIoD: {self._failure}"]
        return []

    # -- handlers ---------------------------------------------------------------------------

    async def upsert(self, body: DatasetUpsert) -> None:
        detail = await self._run_level(body.task_id, self.upsert_dataset(body.dataset))
        await self.reporter.report(
            body.task_id, ItemOutcome(item_key=body.item_key, outcome="SUCCESS", detail=detail)
        )

    async def remove(self, body: DatasetRemove) -> None:
        removed = await self._run_level(body.task_id, self.remove_dataset(body.item_key))
        detail = "deleted" if removed else "unchanged"
        await self.reporter.report(
            body.task_id, ItemOutcome(item_key=body.item_key, outcome="SUCCESS", detail=detail)
        )

    async def prune(self, body: DatasetPrune) -> None:
        seen = await self.ledger.read(body.task_id)
        decision = await self._run_level(
            body.task_id,
            decide(body, seen, self.catalogue, self.settings.prune_page_size),
        )
        # The distinct ids seen: a dataset listed twice is one item.
        discovered = len(seen.ids) if seen.ids else body.discovered
        if decision.refused is not None:
            log.warning(decision.refused, extra={"task_id": body.task_id})
            await self._update(
                TaskUpdate(
                    task_id=body.task_id,
                    items_expected=discovered + 1,
                    result={"discovered": discovered},
                    progress_message=decision.refused,
                    items=[
                        ItemOutcome(
                            item_key=PRUNE_ITEM, outcome="ERRORED", message=decision.refused
                        )
                    ],
                    observed_at=datetime.now(UTC),
                )
            )
            return
        remove = decision.remove
        if remove and seen.decided is None:
            await self.ledger.record_decision(body.task_id, remove)
        await self._update(
            TaskUpdate(
                task_id=body.task_id,
                items_expected=discovered + len(remove),
                result={"discovered": discovered},
                progress_message=f"discovery complete: {discovered} datasets;"
                f" pruning {len(remove)} records not in the listing",
                observed_at=datetime.now(UTC),
            )
        )
        gate = asyncio.Semaphore(self.settings.prune_concurrency)

        async def one(pid: str) -> None:
            async with gate:
                await self._remove_for_prune(body.task_id, pid)

        results = await asyncio.gather(*(one(pid) for pid in remove), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result  # transient: the prune comes back and repeats its decision

    async def _remove_for_prune(self, task_id: str, pid: str) -> None:
        try:
            await self.remove_dataset(pid)
        except RunFailure:
            raise
        except Exception as exc:
            if isinstance(exc, TransientError) or not _is_permanent(exc):
                raise
            await self.reporter.report(
                task_id, ItemOutcome(item_key=pid, outcome="ERRORED", message=describe(exc))
            )
            return
        # Gone already (a redelivered prune) counts as removed by this prune.
        await self.reporter.report(
            task_id, ItemOutcome(item_key=pid, outcome="SUCCESS", detail="deleted")
        )

    # -- the domain -------------------------------------------------------------------------

    async def upsert_dataset(self, dataset: HubDataset) -> str:
        """Make the platform's record of `dataset` say what the mapping says; returns
        `created`, `updated` or `unchanged`."""
        wanted = to_aiod(dataset, self.settings.aiod_platform).as_json()
        pid = dataset.object_id
        existing = await self.catalogue.find(pid)
        if existing is None:
            try:
                await self.catalogue.register(wanted)
            except Conflict as conflict:
                # Created meanwhile (a concurrent upsert, or our own POST whose answer was
                # lost): the record the detail names is the one to bring up to date.
                existing = await self.catalogue.find(pid)
                if existing is None:
                    raise TransientError(
                        f"AIoD reported a conflict with {conflict.identifier} for {pid},"
                        " but no record of it can be read yet"
                    ) from None
            else:
                return "created"
        if says_the_same(wanted, existing):
            return "unchanged"
        await self.catalogue.replace(str(existing["identifier"]), wanted)
        return "updated"

    async def remove_dataset(self, pid: str) -> bool:
        """Remove the platform's record of `pid`; False when there was none."""
        existing = await self.catalogue.find(pid)
        if existing is None:
            return False
        return await self.catalogue.delete(str(existing["identifier"]))

    # -- run-level failures -----------------------------------------------------------------

    async def _run_level(self, task_id: str, work: Awaitable[T]) -> T:
        """`work`, unless the uploader cannot work at all: then the task ends ERRORED with
        what to fix, and the failure goes on (the runtime dead-letters the message)."""
        if self._failure is not None and time.monotonic() < self._failure_until:
            _close(work)
            failure = self._failure
        else:
            try:
                result = await work
            except RunFailure as exc:
                self._remember(exc)
                failure = exc
            else:
                if self._failure is not None:
                    log.info("AIoD accepts uploads again")
                    self._failure = None
                return result
        await self._end_task(task_id, failure)
        raise failure

    def _remember(self, failure: RunFailure) -> None:
        self._failure = failure
        self._failure_until = time.monotonic() + FAILURE_MEMORY_SECONDS

    async def _end_task(self, task_id: str, failure: RunFailure) -> None:
        if task_id in self._ended:
            return
        await self._update(
            TaskUpdate(
                task_id=task_id,
                status="ERRORED",
                progress_message=f"cannot upload to AIoD: {failure}",
                observed_at=datetime.now(UTC),
            )
        )
        self._ended[task_id] = None
        while len(self._ended) > ENDED_TASKS_REMEMBERED:
            self._ended.popitem(last=False)

    async def _update(self, update: TaskUpdate) -> None:
        await publish(self.service.broker, self.service.names, update)


def _is_permanent(exc: BaseException) -> bool:
    return not classify(exc).transient


def _close(work: Awaitable[object]) -> None:
    close = getattr(work, "close", None)
    if close is not None:
        close()  # a coroutine never awaited: say so, quietly
