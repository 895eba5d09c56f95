"""Task records and the merge rules that fold changes into them (pure: no I/O).

Every change (a submit, a worker's update, a cancel, and the tracker's own decisions) is folded
into a record by a join: commutative, associative and idempotent, with every tie broken
deterministically. The final state therefore depends only on the *set* of changes received,
not on their order or on redeliveries, which is what at-least-once queues and several tracker
replicas sharing one database need.

The shape of it: `TaskRecord(id=...)` is the bottom element; each change becomes a small
"delta" record (the bottom plus one fact) and `merge_records` is the one join. The status a
task shows is derived from the joined state (`_settle`), never stored as a separate fact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Literal

import msgspec

from shared.contracts.tasks import (
    DrivingCommand,
    ItemOutcomeStatus,
    ItemView,
    TaskCancel,
    TaskCancelled,
    TaskStatus,
    TaskSubmit,
    TaskUpdate,
    TaskView,
)

Change = TaskSubmit | TaskUpdate | TaskCancel

# The bottom of every timestamp: "never observed".
NEVER = datetime.min.replace(tzinfo=UTC)

_QUEUED = TaskStatus.QUEUED
# Higher rank wins; a terminal status absorbs, nothing moves a task backwards.
_STATUS_RANK = {
    TaskStatus.QUEUED: 0,
    TaskStatus.RUNNING: 1,
    TaskStatus.SUCCESS: 2,
    TaskStatus.ERRORED: 2,
    TaskStatus.KILLED: 2,
    TaskStatus.SKIPPED: 2,
}
# Exact ties (same rank, same observed_at): KILLED > ERRORED > SUCCESS > SKIPPED.
_STATUS_TIE = {
    TaskStatus.QUEUED: 0,
    TaskStatus.RUNNING: 0,
    TaskStatus.SKIPPED: 0,
    TaskStatus.SUCCESS: 1,
    TaskStatus.ERRORED: 2,
    TaskStatus.KILLED: 3,
}
# Same observed_at for one item: SUCCESS > SKIPPED > ERRORED.
_OUTCOME_RANK: dict[str, int] = {"ERRORED": 0, "SKIPPED": 1, "SUCCESS": 2}


def utc(moment: datetime) -> datetime:
    """Producers' timestamps without a zone are taken as UTC; everything is kept in UTC so
    comparisons never mix naive and aware datetimes."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _encoded(value: Any) -> bytes:
    # Sorted keys: two dicts that are equal encode equal, so they never "differ" in a tie-break.
    return msgspec.json.encode(value, order="sorted")


@dataclass(slots=True)
class TaskRecord:
    """Everything the tracker knows about one task. Build one with `TaskRecord(id=...)` (the
    empty task) and change it only through the merge functions below."""

    id: str
    kind: str | None = None  # None until the submit is seen (updates may come first)
    name: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    command: DrivingCommand | None = None
    status: TaskStatus = TaskStatus.QUEUED  # derived by `_settle`
    status_at: datetime | None = None  # observed_at of the winning status (derived)
    progress_value: int = 0
    end_value: int = 0
    end_value_at: datetime | None = None
    progress_message: str | None = None
    progress_message_at: datetime | None = None
    result: Any = None
    result_at: datetime | None = None
    should_be_killed: bool = False
    kill_reason: str | None = None
    created_at: datetime | None = None  # submitted_at of the winning submit
    started_at: datetime | None = None
    ended_at: datetime | None = None  # derived: status_at of a terminal status
    updated_at: datetime = NEVER  # max observed_at of everything applied
    items_total: int = 0
    items_succeeded: int = 0
    items_failed: int = 0
    items_skipped: int = 0
    # Successful items by their detail ("created": 3, ...), derived from the items like the
    # counts above.
    item_details: dict[str, int] = field(default_factory=dict)
    # The worker's word on how many items there are in all (`TaskUpdate.items_expected`).
    items_expected: int | None = None
    items_expected_at: datetime | None = None
    # The status register the workers' updates feed; `status` is this, unless the cancel
    # rule of `_settle` applies.
    reported_status: TaskStatus = TaskStatus.QUEUED
    reported_status_at: datetime | None = None
    kill_requested_at: datetime | None = None  # requested_at of the earliest cancel
    # Some submit of this task carried no command (grow-only: an earlier submit with a
    # command arriving later must not revive a task its cancel already killed).
    submitted_without_command: bool = False
    # Tracker bookkeeping: wall clock, not observations. Not part of the merge equality tests.
    touched_at: datetime = NEVER
    driven_at: datetime | None = None
    drive_attempts: int = 0
    # The last time publishing the driving command found no consumer, and what it said.
    undeliverable_at: datetime | None = None
    undeliverable_reason: str | None = None

    @property
    def is_orphan(self) -> bool:
        """Known only from updates or cancels: no submit seen (yet). Not shown as a task."""
        return self.kind is None

    @property
    def waiting_reason(self) -> str | None:
        """Why a QUEUED task has not started: its command found no consumer, and it has
        not been driven again since."""
        if self.status is not _QUEUED or self.undeliverable_at is None:
            return None
        if self.driven_at is not None and self.driven_at > self.undeliverable_at:
            return None
        return self.undeliverable_reason

    @property
    def result_with_counts(self) -> Any:
        """The reported result; for a task that said how many items it has, with the item
        counts added (`failed`, `skipped` and one count per detail: `created`, ...)."""
        if self.items_expected is None:
            return self.result
        reported = self.result if isinstance(self.result, dict) else {}
        counts = {"failed": self.items_failed, "skipped": self.items_skipped}
        return {**reported, **self.item_details, **counts}

    def to_view(self) -> TaskView:
        return TaskView(
            id=self.id,
            kind=self.kind,
            name=self.name,
            status=self.status,
            # Item outcomes are progress too, even when the worker never reports a number.
            progress_value=max(self.progress_value, self.items_total),
            end_value=self.end_value,
            progress_message=self.progress_message,
            result=self.result_with_counts,
            params=self.params,
            created_at=self.created_at,
            started_at=self.started_at,
            ended_at=self.ended_at,
            updated_at=self.updated_at,
            should_be_killed=self.should_be_killed,
            items_total=self.items_total,
            items_succeeded=self.items_succeeded,
            items_failed=self.items_failed,
            items_skipped=self.items_skipped,
            driver=self.command.routing_key if self.command is not None else None,
            drive_attempts=self.drive_attempts,
            cancelling=self.should_be_killed and not self.status.is_terminal,
            waiting_reason=self.waiting_reason,
        )


@dataclass(slots=True, frozen=True)
class ItemRecord:
    task_id: str
    item_key: str
    outcome: ItemOutcomeStatus
    message: str | None
    observed_at: datetime
    detail: str | None = None

    def to_view(self) -> ItemView:
        return ItemView(
            item_key=self.item_key,
            outcome=self.outcome,
            message=self.message,
            observed_at=self.observed_at,
            detail=self.detail,
        )


# --- the join -----------------------------------------------------------------------------


def _submit_key(record: TaskRecord) -> tuple[datetime, bytes] | None:
    if record.kind is None:
        return None
    descriptive = [record.kind, record.name, record.params, record.command]
    return (record.created_at or NEVER, _encoded(descriptive))


def _status_key(record: TaskRecord) -> tuple[int, datetime, int]:
    status = record.reported_status
    return (_STATUS_RANK[status], record.reported_status_at or NEVER, _STATUS_TIE[status])


def _register_key(at: datetime | None, value: Any) -> tuple[datetime, bytes]:
    return (at or NEVER, _encoded(value))


def _cancel_key(record: TaskRecord) -> tuple[datetime, bytes] | None:
    if not record.should_be_killed:
        return None
    return (record.kill_requested_at or NEVER, _encoded(record.kill_reason))


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a if b is None else b
    return min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a if b is None else b
    return max(a, b)


def merge_records(base: TaskRecord, other: TaskRecord) -> TaskRecord:
    """The join of two states of the same task; returns a new record.

    Item counts are taken from `base`: they are derived from the item set, which only
    `apply_update` changes. Callers re-merging a stale copy pass the freshest stored row as
    `base`.
    """
    merged = dataclasses.replace(base)

    other_submit = _submit_key(other)
    base_submit = _submit_key(merged)
    if other_submit is not None and (base_submit is None or other_submit < base_submit):
        merged.kind, merged.name = other.kind, other.name
        merged.params, merged.command = other.params, other.command
        merged.created_at = other.created_at

    if _status_key(other) > _status_key(merged):
        merged.reported_status = other.reported_status
        merged.reported_status_at = other.reported_status_at

    merged.progress_value = max(merged.progress_value, other.progress_value)
    if other.end_value_at is not None and _register_key(
        other.end_value_at, other.end_value
    ) > _register_key(merged.end_value_at, merged.end_value):
        merged.end_value, merged.end_value_at = other.end_value, other.end_value_at
    if other.progress_message_at is not None and _register_key(
        other.progress_message_at, other.progress_message
    ) > _register_key(merged.progress_message_at, merged.progress_message):
        merged.progress_message = other.progress_message
        merged.progress_message_at = other.progress_message_at
    if other.result_at is not None and _register_key(other.result_at, other.result) > (
        _register_key(merged.result_at, merged.result)
    ):
        merged.result, merged.result_at = other.result, other.result_at
    if other.items_expected_at is not None and _register_key(
        other.items_expected_at, other.items_expected
    ) > _register_key(merged.items_expected_at, merged.items_expected):
        merged.items_expected = other.items_expected
        merged.items_expected_at = other.items_expected_at

    other_cancel = _cancel_key(other)
    base_cancel = _cancel_key(merged)
    if other_cancel is not None and (base_cancel is None or other_cancel < base_cancel):
        merged.should_be_killed = True
        merged.kill_reason, merged.kill_requested_at = other.kill_reason, other.kill_requested_at

    merged.submitted_without_command |= other.submitted_without_command
    merged.started_at = _earliest(merged.started_at, other.started_at)
    merged.updated_at = max(merged.updated_at, other.updated_at)
    merged.touched_at = max(merged.touched_at, other.touched_at)
    merged.driven_at = _latest(merged.driven_at, other.driven_at)
    merged.drive_attempts = max(merged.drive_attempts, other.drive_attempts)
    if other.undeliverable_at is not None and _register_key(
        other.undeliverable_at, other.undeliverable_reason
    ) > _register_key(merged.undeliverable_at, merged.undeliverable_reason):
        merged.undeliverable_at = other.undeliverable_at
        merged.undeliverable_reason = other.undeliverable_reason
    _settle(merged)
    return merged


def _settle(record: TaskRecord) -> None:
    """Derive the shown status from the joined state.

    A cancelled task that was submitted without a command has no driver the tracker could
    wait for, so it is KILLED as of the cancel, whatever non-terminal status was reported
    and whenever it was observed: once KILLED is shown, no RUNNING report revives it, in
    any order. A terminal report (the worker's word on how it ended) is shown instead.
    Derived rather than applied once, so that it depends only on the set of changes.
    """
    status, status_at = record.reported_status, record.reported_status_at
    nothing_to_wait_for = record.submitted_without_command or (
        record.kind is not None and record.command is None
    )
    if not status.is_terminal and record.should_be_killed and nothing_to_wait_for:
        status, status_at = TaskStatus.KILLED, record.kill_requested_at
    elif (
        not status.is_terminal
        and not record.should_be_killed
        and record.items_expected is not None
        and record.items_total >= record.items_expected
    ):
        # Every item the worker said there would be has an outcome: the task is done.
        status, status_at = TaskStatus.SUCCESS, record.updated_at
    record.status, record.status_at = status, status_at
    record.ended_at = status_at if status.is_terminal else None


# --- the changes --------------------------------------------------------------------------


def apply_submit(record: TaskRecord | None, submit: TaskSubmit, now: datetime) -> TaskRecord:
    """Describe the task (the earliest submit wins); never moves its status."""
    submitted_at = utc(submit.submitted_at)
    delta = TaskRecord(
        id=submit.task_id,
        kind=submit.kind,
        name=submit.name,
        params=submit.params,
        command=submit.command,
        submitted_without_command=submit.command is None,
        created_at=submitted_at,
        updated_at=submitted_at,
        touched_at=utc(now),
    )
    return merge_records(record or TaskRecord(id=submit.task_id), delta)


def apply_update(
    record: TaskRecord | None,
    update: TaskUpdate,
    existing_items: Mapping[str, ItemRecord],
    now: datetime,
) -> tuple[TaskRecord, list[ItemRecord]]:
    """Fold a worker's report in. `existing_items` holds the stored items of this task that the
    update names (others may be missing); it is not modified. Returns the new record and the
    items that changed."""
    observed_at = utc(update.observed_at)
    delta = TaskRecord(id=update.task_id, updated_at=observed_at, touched_at=utc(now))
    if update.status is not None:
        status = TaskStatus(update.status)
        delta.reported_status, delta.reported_status_at = status, observed_at
        if status is not _QUEUED:
            delta.started_at = observed_at
    if update.progress_value is not None:
        delta.progress_value = update.progress_value
    if update.end_value is not None:
        delta.end_value, delta.end_value_at = update.end_value, observed_at
    if update.progress_message is not None:
        delta.progress_message, delta.progress_message_at = update.progress_message, observed_at
    if update.result is not None:
        delta.result, delta.result_at = update.result, observed_at
    if update.items_expected is not None:
        delta.items_expected, delta.items_expected_at = update.items_expected, observed_at
    merged = merge_records(record or TaskRecord(id=update.task_id), delta)
    merged.item_details = dict(merged.item_details)  # counted below; never the base's dict

    changed: dict[str, ItemRecord] = {}
    for outcome in update.items:
        candidate = ItemRecord(
            task_id=update.task_id,
            item_key=outcome.item_key,
            outcome=outcome.outcome,
            message=outcome.message,
            observed_at=observed_at,
            detail=outcome.detail,
        )
        current = changed.get(outcome.item_key) or existing_items.get(outcome.item_key)
        if current is not None and _item_key(candidate) <= _item_key(current):
            continue
        if current is not None:
            _count_item(merged, current, -1)
        _count_item(merged, candidate, +1)
        changed[outcome.item_key] = candidate
    _settle(merged)  # the counts may complete the task
    return merged, list(changed.values())


def _item_key(item: ItemRecord) -> tuple[datetime, int, bytes]:
    return (item.observed_at, _OUTCOME_RANK[item.outcome], _encoded([item.message, item.detail]))


def _count_item(record: TaskRecord, item: ItemRecord, sign: int) -> None:
    record.items_total += sign
    if item.outcome == "SUCCESS":
        record.items_succeeded += sign
        if item.detail is not None:
            count = record.item_details.get(item.detail, 0) + sign
            if count:
                record.item_details[item.detail] = count
            else:
                record.item_details.pop(item.detail, None)
    elif item.outcome == "ERRORED":
        record.items_failed += sign
    else:
        record.items_skipped += sign


def apply_cancel(record: TaskRecord | None, cancel: TaskCancel, now: datetime) -> TaskRecord:
    """Ask for the task to be killed (the earliest request's reason wins). A QUEUED task that
    has no command is KILLED at once (see `_settle`); others wait for the worker to confirm."""
    requested_at = utc(cancel.requested_at)
    delta = TaskRecord(
        id=cancel.task_id,
        should_be_killed=True,
        kill_reason=cancel.reason,
        kill_requested_at=requested_at,
        updated_at=requested_at,
        touched_at=utc(now),
    )
    return merge_records(record or TaskRecord(id=cancel.task_id), delta)


# --- batches ------------------------------------------------------------------------------


@dataclass(slots=True)
class BatchOutcome:
    records: dict[str, TaskRecord]  # every task the batch touched, final state, first-touch order
    changed: list[TaskRecord]  # those that differ from what was loaded: write them
    items: list[ItemRecord]  # items to write (each (task_id, item_key) once)


def touched_item_keys(changes: Iterable[Change]) -> set[tuple[str, str]]:
    """The (task_id, item_key) pairs a batch names: the only items a store needs to load."""
    return {
        (change.task_id, outcome.item_key)
        for change in changes
        if isinstance(change, TaskUpdate)
        for outcome in change.items
    }


def apply_batch(
    changes: Sequence[Change],
    records: Mapping[str, TaskRecord],
    items: Mapping[tuple[str, str], ItemRecord],
    now: datetime,
) -> BatchOutcome:
    """Fold a batch into the loaded `records` and `items` (neither is modified)."""
    current: dict[str, TaskRecord] = {}
    current_items: dict[str, dict[str, ItemRecord]] = {}
    for (task_id, item_key), item in items.items():
        current_items.setdefault(task_id, {})[item_key] = item
    changed_items: dict[tuple[str, str], ItemRecord] = {}

    for change in changes:
        task_id = change.task_id
        before = current.get(task_id) or records.get(task_id)
        if isinstance(change, TaskSubmit):
            current[task_id] = apply_submit(before, change, now)
        elif isinstance(change, TaskCancel):
            current[task_id] = apply_cancel(before, change, now)
        else:
            known = current_items.setdefault(task_id, {})
            current[task_id], new_items = apply_update(before, change, known, now)
            for item in new_items:
                known[item.item_key] = item
                changed_items[(task_id, item.item_key)] = item

    changed = [record for task_id, record in current.items() if record != records.get(task_id)]
    return BatchOutcome(records=current, changed=changed, items=list(changed_items.values()))


# --- the tracker's own decisions ----------------------------------------------------------


class SweepAction(Enum):
    NONE = "none"
    KILL = "kill"  # cancelled, and the worker never confirmed: mark it KILLED
    GIVE_UP = "give_up"  # nobody reported for too long: mark it ERRORED
    REDRIVE = "redrive"  # stalled: publish its driving command again


def sweep_decision(
    record: TaskRecord, now: datetime, stall_after: timedelta, give_up_after: timedelta
) -> SweepAction:
    if record.status.is_terminal or record.is_orphan:
        # Orphans are neither driven nor given up: they wait for their submit, and are
        # deleted when it never comes (`TaskStore.delete_orphans`).
        return SweepAction.NONE
    now = utc(now)
    silent_for = now - record.touched_at
    if record.should_be_killed and silent_for > stall_after:
        return SweepAction.KILL
    if silent_for > give_up_after:
        return SweepAction.GIVE_UP
    if (
        record.command is not None
        and silent_for > stall_after
        and (record.driven_at is None or now - record.driven_at > stall_after)
    ):
        return SweepAction.REDRIVE
    return SweepAction.NONE


def kill_message(waited: timedelta) -> str:
    return f"cancelled; the worker did not confirm within {int(waited.total_seconds())} seconds"


def give_up_message(silent_for: timedelta) -> str:
    return (
        f"the driver was silent for {int(silent_for.total_seconds())} seconds;"
        " the task was given up"
    )


def mark_killed_by_tracker(record: TaskRecord, now: datetime, message: str) -> TaskRecord:
    return _tracker_report(record, now, TaskStatus.KILLED, message)


def mark_given_up(record: TaskRecord, now: datetime, message: str) -> TaskRecord:
    return _tracker_report(record, now, TaskStatus.ERRORED, message)


def _tracker_report(
    record: TaskRecord, now: datetime, status: TaskStatus, message: str
) -> TaskRecord:
    # A synthetic worker update, so the status rules stay in one place: a real terminal
    # report observed later than `now` still wins.
    update = TaskUpdate(
        task_id=record.id, status=status.value, progress_message=message, observed_at=now
    )
    merged, _ = apply_update(record, update, {}, now)
    return merged


def mark_driven(record: TaskRecord, now: datetime) -> TaskRecord:
    """Note that the driving command is being published (again)."""
    delta = TaskRecord(id=record.id, driven_at=utc(now), drive_attempts=record.drive_attempts + 1)
    return merge_records(record, delta)


def mark_undeliverable(task_id: str, routing_key: str, now: datetime) -> TaskRecord:
    """A delta to merge into the stored task: its driving command found no consumer at
    `now` (the sweep tries it again)."""
    return TaskRecord(
        id=task_id,
        undeliverable_at=utc(now),
        undeliverable_reason=f"no consumer for {routing_key}",
    )


# --- side effects -------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class FollowUp:
    """A message a committed change calls for. Decided and recorded (the store's outbox) in
    the transaction that applies the change, published after the commit, deleted once the
    broker confirmed it; so a crash or a second replica can neither lose nor double it."""

    task_id: str
    purpose: Literal["drive", "cancelled"]
    routing_key: str
    body: bytes
    outbox_id: int = 0  # assigned by the store

    @property
    def mandatory(self) -> bool:
        # A command nobody receives is an error; a broadcast may have no listener yet.
        return self.purpose == "drive"


def drive_command(record: TaskRecord) -> FollowUp:
    command = record.command
    if command is None:
        raise ValueError(f"task {record.id!r} has no driving command")
    body = msgspec.json.encode({**command.body, "task_id": record.id})
    return FollowUp(record.id, "drive", command.routing_key, body)


def cancelled_broadcast(record: TaskRecord) -> FollowUp:
    event = TaskCancelled(task_id=record.id, reason=record.kill_reason)
    return FollowUp(record.id, "cancelled", TaskCancelled.ROUTING_KEY, event.encode())


def awaits_first_drive(record: TaskRecord) -> bool:
    return (
        record.command is not None
        and record.driven_at is None
        and record.status is _QUEUED
        and not record.should_be_killed
    )


def decide_follow_ups(
    loaded: Mapping[str, TaskRecord], records: Mapping[str, TaskRecord], now: datetime
) -> tuple[dict[str, TaskRecord], list[FollowUp]]:
    """The messages a batch calls for, decided on the rows it holds locked: the first drive
    of each newly submitted task (marked driven in the same transaction, so no other
    replica drives it too) and one `tasks.cancelled` per task on its first cancel."""
    decided: dict[str, TaskRecord] = {}
    follow_ups: list[FollowUp] = []
    for task_id, applied in records.items():
        before = loaded.get(task_id)
        record = applied
        if awaits_first_drive(record):
            record = mark_driven(record, now)
            follow_ups.append(drive_command(record))
        if record.should_be_killed and not (before is not None and before.should_be_killed):
            follow_ups.append(cancelled_broadcast(record))
        decided[task_id] = record
    return decided, follow_ups


@dataclass(slots=True)
class BatchPlan:
    """What a transaction writes: `apply_batch` plus the follow-ups it calls for."""

    records: dict[str, TaskRecord]  # every task the batch touched, first-touch order
    changed: list[TaskRecord]  # those that differ from what was loaded
    items: list[ItemRecord]
    follow_ups: list[FollowUp]


def plan_batch(
    changes: Sequence[Change],
    records: Mapping[str, TaskRecord],
    items: Mapping[tuple[str, str], ItemRecord],
    now: datetime,
) -> BatchPlan:
    """`apply_batch`, then `decide_follow_ups`, on rows the caller holds locked."""
    outcome = apply_batch(changes, records, items, now)
    decided, follow_ups = decide_follow_ups(records, outcome.records, now)
    changed = [r for task_id, r in decided.items() if r != records.get(task_id)]
    return BatchPlan(decided, changed, outcome.items, follow_ups)


def sweep_task(
    record: TaskRecord, now: datetime, stall_after: timedelta, give_up_after: timedelta
) -> tuple[TaskRecord, list[FollowUp]] | None:
    """The sweep's verdict on one (locked) task: its new state and the messages it calls
    for, or None when it is left alone."""
    action = sweep_decision(record, now, stall_after, give_up_after)
    if action is SweepAction.KILL:
        return mark_killed_by_tracker(record, now, kill_message(stall_after)), []
    if action is SweepAction.GIVE_UP:
        silent_for = utc(now) - record.touched_at
        return mark_given_up(record, now, give_up_message(silent_for)), []
    if action is SweepAction.REDRIVE:
        driven = mark_driven(record, now)
        return driven, [drive_command(driven)]
    return None
