"""The task tracker's merge rules, one by one, and the property that makes them safe on
at-least-once queues: any order and any duplication of the same changes gives the same state."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.task_tracker.domain import (
    Change,
    ItemRecord,
    SweepAction,
    TaskRecord,
    apply_batch,
    apply_cancel,
    apply_submit,
    apply_update,
    give_up_message,
    kill_message,
    mark_driven,
    mark_given_up,
    mark_killed_by_tracker,
    merge_records,
    sweep_decision,
)
from shared.contracts.tasks import (
    DrivingCommand,
    ItemOutcome,
    StatusInput,
    TaskCancel,
    TaskStatus,
    TaskSubmit,
    TaskUpdate,
    TaskView,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOW = datetime(2024, 5, 1, 13, 0, tzinfo=UTC)
COMMAND = DrivingCommand(routing_key="work.run", body={"x": 1})


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def update(
    seconds: float, status: StatusInput | None = None, task_id: str = "t1", **fields: Any
) -> TaskUpdate:
    return TaskUpdate(task_id=task_id, status=status, observed_at=at(seconds), **fields)


def submit(seconds: float = 0, task_id: str = "t1", **fields: Any) -> TaskSubmit:
    fields.setdefault("kind", "k")
    return TaskSubmit(task_id=task_id, submitted_at=at(seconds), **fields)


def fold(
    changes: Sequence[Change], now: datetime = NOW
) -> tuple[dict[str, TaskRecord], dict[tuple[str, str], ItemRecord]]:
    """Apply changes one at a time, keeping items as a store would."""
    records: dict[str, TaskRecord] = {}
    items: dict[tuple[str, str], ItemRecord] = {}
    for change in changes:
        outcome = apply_batch([change], records, items, now)
        records.update(outcome.records)
        items.update({(i.task_id, i.item_key): i for i in outcome.items})
    return records, items


def one(changes: Sequence[Change]) -> TaskRecord:
    records, _ = fold(changes)
    (record,) = records.values()
    return record


# --- status -------------------------------------------------------------------------------


def test_submit_creates_a_queued_task_and_never_moves_the_status() -> None:
    record = apply_submit(None, submit(name="n", params={"a": 1}, command=COMMAND), NOW)
    assert record.status is TaskStatus.QUEUED
    assert (record.kind, record.name, record.params) == ("k", "n", {"a": 1})
    assert record.created_at == at(0)
    assert record.touched_at == NOW
    view = record.to_view()
    assert view.driver == "work.run"
    assert view.ended_at is None

    running = one([update(5, status="RUNNING"), submit(10, command=COMMAND)])
    assert running.status is TaskStatus.RUNNING


def test_aliases_arrive_canonical() -> None:
    assert one([update(1, status="ERROR")]).status is TaskStatus.ERRORED
    assert one([update(1, status="CANCELLED")]).status is TaskStatus.KILLED


def test_update_before_submit_creates_a_kindless_record() -> None:
    record = one([update(3, status="RUNNING", progress_value=2)])
    assert record.kind is None
    assert record.created_at is None
    assert record.status is TaskStatus.RUNNING
    assert record.started_at == at(3)
    assert record.updated_at == at(3)


def test_terminal_absorbs_and_nothing_moves_backwards() -> None:
    record = one(
        [
            update(1, status="RUNNING"),
            update(2, status="SUCCESS"),
            update(3, status="RUNNING"),
            update(4, status="QUEUED"),
        ]
    )
    assert record.status is TaskStatus.SUCCESS
    assert record.status_at == at(2)
    assert record.ended_at == at(2)
    assert record.started_at == at(1)

    late_queued = one([update(9, status="RUNNING"), update(10, status="QUEUED")])
    assert late_queued.status is TaskStatus.RUNNING


def test_later_terminal_wins_and_exact_ties_are_fixed() -> None:
    assert one([update(2, status="SUCCESS"), update(1, status="ERRORED")]).status is (
        TaskStatus.SUCCESS
    )
    for order in (("SUCCESS", "KILLED"), ("KILLED", "SUCCESS")):
        record = one([update(1, status=s) for s in order])
        assert record.status is TaskStatus.KILLED
    tie = [update(1, status=s) for s in ("SKIPPED", "SUCCESS", "ERRORED")]
    assert one(tie).status is TaskStatus.ERRORED
    assert one(tie[::-1]).status is TaskStatus.ERRORED
    assert one(tie[:2]).status is TaskStatus.SUCCESS


# --- registers ----------------------------------------------------------------------------


def test_progress_value_is_a_max_and_other_fields_are_last_writer_wins() -> None:
    changes = [
        update(1, progress_value=7, end_value=10, progress_message="first", result={"r": 1}),
        update(2, progress_value=3, end_value=12, progress_message="second"),
        update(3, progress_value=None, progress_message=None),
    ]
    for order in (changes, changes[::-1]):
        record = one(order)
        assert record.progress_value == 7
        assert record.end_value == 12
        assert record.progress_message == "second"
        assert record.progress_message_at == at(2)
        # Only carried fields count: the later updates did not carry a result.
        assert record.result == {"r": 1}
        assert record.updated_at == at(3)


def test_register_ties_are_broken_by_the_encoded_value() -> None:
    a, b = update(1, progress_message="aaa"), update(1, progress_message="bbb")
    assert one([a, b]).progress_message == one([b, a]).progress_message == "bbb"


def test_naive_timestamps_are_taken_as_utc() -> None:
    naive = TaskUpdate(task_id="t1", status="RUNNING", observed_at=datetime(2024, 5, 1, 12))
    record = one([naive, update(1, status="SUCCESS")])
    assert record.started_at == T0
    assert record.status is TaskStatus.SUCCESS


# --- submits ------------------------------------------------------------------------------


def test_the_earliest_submit_wins_in_any_order() -> None:
    early = submit(1, name="early", command=COMMAND)
    late = submit(2, name="late")
    assert one([early, late]).name == one([late, early]).name == "early"
    tie_a, tie_b = submit(1, name="a"), submit(1, name="b")
    assert one([tie_a, tie_b]).name == one([tie_b, tie_a]).name == "a"


# --- items --------------------------------------------------------------------------------


def items_update(seconds: float, *outcomes: tuple[str, str, str | None]) -> TaskUpdate:
    return update(
        seconds,
        items=[ItemOutcome(item_key=k, outcome=o, message=m) for k, o, m in outcomes],  # type: ignore[arg-type]
    )


def test_items_are_last_writer_wins_and_counts_follow() -> None:
    changes = [
        items_update(1, ("a", "ERRORED", "boom"), ("b", "SUCCESS", None)),
        items_update(2, ("a", "SUCCESS", None), ("c", "SKIPPED", "nothing to do")),
        items_update(0, ("a", "ERRORED", "stale"), ("b", "ERRORED", "stale")),
    ]
    for order in (changes, changes[::-1]):
        records, items = fold(order)
        record = records["t1"]
        assert {k: i.outcome for (_, k), i in items.items()} == {
            "a": "SUCCESS",
            "b": "SUCCESS",
            "c": "SKIPPED",
        }
        counts = (record.items_total, record.items_succeeded, record.items_failed)
        assert counts == (3, 2, 0)
        assert record.items_skipped == 1
        assert record.to_view().progress_value == 3


def test_item_ties_prefer_success_then_skipped() -> None:
    for outcomes in (("ERRORED", "SKIPPED", "SUCCESS"), ("SUCCESS", "SKIPPED", "ERRORED")):
        _, items = fold([items_update(1, ("a", o, None)) for o in outcomes])
        assert items["t1", "a"].outcome == "SUCCESS"


def test_apply_update_reports_only_changed_items() -> None:
    first, changed = apply_update(None, items_update(1, ("a", "SUCCESS", None)), {}, NOW)
    known = {i.item_key: i for i in changed}
    again, changed_again = apply_update(first, items_update(1, ("a", "SUCCESS", None)), known, NOW)
    assert changed_again == []
    assert again.items_total == 1


def test_progress_value_shown_is_at_least_the_item_count() -> None:
    record = one([update(1, progress_value=10), items_update(2, ("a", "SUCCESS", None))])
    assert record.to_view().progress_value == 10
    record = one([update(1, progress_value=0), items_update(2, ("a", "SUCCESS", None))])
    assert record.to_view().progress_value == 1


# --- cancels ------------------------------------------------------------------------------


def cancel(seconds: float, reason: str | None = None, task_id: str = "t1") -> TaskCancel:
    return TaskCancel(task_id=task_id, reason=reason, requested_at=at(seconds))


def test_cancel_of_a_commandless_queued_task_kills_it_at_once() -> None:
    changes: list[Change] = [submit(), cancel(5, "stop")]
    for order in (changes, changes[::-1]):
        record = one(order)
        assert record.status is TaskStatus.KILLED
        assert record.status_at == record.ended_at == at(5)
        assert record.should_be_killed
        assert record.kill_reason == "stop"


def test_cancel_of_a_driven_or_running_task_waits_for_the_worker() -> None:
    driven = one([submit(command=COMMAND), cancel(5)])
    assert driven.status is TaskStatus.QUEUED
    assert driven.should_be_killed
    running = one([submit(command=COMMAND), update(1, status="RUNNING"), cancel(5)])
    assert running.status is TaskStatus.RUNNING
    assert running.should_be_killed
    assert running.to_view().cancelling
    confirmed = one(
        [submit(command=COMMAND), update(1, status="RUNNING"), cancel(5), update(6, "KILLED")]
    )
    assert confirmed.status is TaskStatus.KILLED
    assert not confirmed.to_view().cancelling


def test_a_derived_kill_is_terminal_in_every_order() -> None:
    # Submitted without a command, then cancelled: KILLED at once, and no RUNNING report
    # revives it, whether observed before the cancel, after it, or arriving first.
    changes: list[Change] = [submit(), cancel(5), update(1, "RUNNING"), update(9, "RUNNING")]
    for order in itertools.permutations(changes):
        record = one(order)
        assert (record.status, record.status_at, record.ended_at) == (
            TaskStatus.KILLED,
            at(5),
            at(5),
        )
    # A worker's terminal report says how it really ended.
    assert one([submit(), cancel(5), update(7, "SUCCESS")]).status is TaskStatus.SUCCESS


def test_cancel_before_the_submit_is_known_does_not_kill_yet() -> None:
    assert one([cancel(5)]).status is TaskStatus.QUEUED


def test_the_earliest_cancel_reason_wins() -> None:
    changes = [cancel(3, "late"), cancel(1, "early"), cancel(2, None)]
    assert one(changes).kill_reason == one(changes[::-1]).kill_reason == "early"


def test_terminal_task_stays_terminal_after_cancel() -> None:
    record = one([submit(), update(1, status="SUCCESS"), cancel(5)])
    assert record.status is TaskStatus.SUCCESS
    assert record.should_be_killed


# --- sweeps -------------------------------------------------------------------------------

STALL = timedelta(minutes=5)
GIVE_UP = timedelta(hours=1)


def idle(record: TaskRecord, for_: timedelta) -> datetime:
    return record.touched_at + for_


def test_sweep_leaves_fresh_and_terminal_tasks_alone() -> None:
    fresh = apply_submit(None, submit(command=COMMAND), NOW)
    assert sweep_decision(fresh, idle(fresh, STALL / 2), STALL, GIVE_UP) is SweepAction.NONE
    done, _ = apply_update(fresh, update(1, status="SUCCESS"), {}, NOW)
    assert sweep_decision(done, idle(done, GIVE_UP * 2), STALL, GIVE_UP) is SweepAction.NONE


def test_sweep_kills_unconfirmed_cancels() -> None:
    record = apply_cancel(apply_submit(None, submit(command=COMMAND), NOW), cancel(1), NOW)
    later = idle(record, STALL * 2)
    assert sweep_decision(record, later, STALL, GIVE_UP) is SweepAction.KILL
    killed = mark_killed_by_tracker(record, later, kill_message(STALL))
    assert killed.status is TaskStatus.KILLED
    assert killed.status_at == later
    assert killed.progress_message == "cancelled; the worker did not confirm within 300 seconds"
    assert sweep_decision(killed, later, STALL, GIVE_UP) is SweepAction.NONE


def test_sweep_redrives_stalled_tasks_then_gives_up() -> None:
    record = apply_submit(None, submit(command=COMMAND), NOW)
    first = idle(record, STALL * 2)
    assert sweep_decision(record, first, STALL, GIVE_UP) is SweepAction.REDRIVE
    driven = mark_driven(record, first)
    assert (driven.driven_at, driven.drive_attempts) == (first, 1)
    assert driven.touched_at == record.touched_at
    # Just re-driven: wait another stall period before driving again.
    assert sweep_decision(driven, first + STALL / 2, STALL, GIVE_UP) is SweepAction.NONE
    assert sweep_decision(driven, first + STALL * 2, STALL, GIVE_UP) is SweepAction.REDRIVE
    assert mark_driven(driven, first + STALL * 2).to_view().drive_attempts == 2

    silent = idle(record, GIVE_UP * 2)
    assert sweep_decision(driven, silent, STALL, GIVE_UP) is SweepAction.GIVE_UP
    given_up = mark_given_up(driven, silent, give_up_message(silent - driven.touched_at))
    assert given_up.status is TaskStatus.ERRORED
    assert given_up.progress_message == (
        "the driver was silent for 7200 seconds; the task was given up"
    )


def test_orphans_are_neither_driven_nor_given_up() -> None:
    orphan = one([update(1, status="RUNNING"), cancel(2)])
    assert orphan.is_orphan
    assert sweep_decision(orphan, idle(orphan, GIVE_UP * 2), STALL, GIVE_UP) is SweepAction.NONE


def test_commandless_tasks_are_not_redriven_but_given_up() -> None:
    record = one([submit(), update(1, status="RUNNING")])
    assert sweep_decision(record, idle(record, STALL * 2), STALL, GIVE_UP) is SweepAction.NONE
    assert sweep_decision(record, idle(record, GIVE_UP * 2), STALL, GIVE_UP) is (
        SweepAction.GIVE_UP
    )


def test_a_real_later_report_beats_the_trackers_verdict() -> None:
    record = one([submit(command=COMMAND), update(1, status="RUNNING")])
    given_up = mark_given_up(record, at(100), "given up")
    late_success, _ = apply_update(given_up, update(200, status="SUCCESS"), {}, NOW)
    assert late_success.status is TaskStatus.SUCCESS


def test_merge_records_re_merges_a_stale_tracker_copy() -> None:
    stale = one([submit(command=COMMAND), update(1, status="RUNNING", progress_value=1)])
    fresh, _ = apply_update(stale, update(2, progress_value=5, progress_message="p"), {}, NOW)
    driven = mark_driven(stale, NOW)
    merged = merge_records(fresh, driven)
    assert merged.progress_value == 5
    assert merged.progress_message == "p"
    assert merged.drive_attempts == 1
    assert merge_records(merged, driven) == merged
    assert merge_records(merged, merged) == merged


# --- the property -------------------------------------------------------------------------

TIMES = [at(0), at(1), at(2)]
IDS = ["a", "b"]
COMMANDS = [None, COMMAND, DrivingCommand(routing_key="work.other")]

submits = st.builds(
    TaskSubmit,
    task_id=st.sampled_from(IDS),
    kind=st.sampled_from(["k1", "k2"]),
    name=st.sampled_from(["", "n"]),
    params=st.sampled_from([{}, {"p": 1}]),
    command=st.sampled_from(COMMANDS),
    submitted_at=st.sampled_from(TIMES),
)
outcomes = st.builds(
    ItemOutcome,
    item_key=st.sampled_from(["i1", "i2", "i3"]),
    outcome=st.sampled_from(["SUCCESS", "ERRORED", "SKIPPED"]),
    message=st.sampled_from([None, "m1", "m2"]),
)
updates = st.builds(
    TaskUpdate,
    task_id=st.sampled_from(IDS),
    status=st.sampled_from([None, "QUEUED", "RUNNING", "SUCCESS", "ERROR", "KILLED", "SKIPPED"]),
    progress_value=st.sampled_from([None, 0, 3, 7]),
    end_value=st.sampled_from([None, 5, 10]),
    progress_message=st.sampled_from([None, "x", "y"]),
    result=st.sampled_from([None, 1, "r", {"k": [1, 2]}]),
    items=st.lists(outcomes, max_size=3),
    observed_at=st.sampled_from(TIMES),
)
cancels = st.builds(
    TaskCancel,
    task_id=st.sampled_from(IDS),
    reason=st.sampled_from([None, "r1", "r2"]),
    requested_at=st.sampled_from(TIMES),
)
changes_strategy = st.lists(st.one_of(submits, updates, cancels), min_size=1, max_size=12)


def final_state(
    changes: Sequence[Change], now: datetime
) -> tuple[dict[str, TaskView], dict[tuple[str, str], ItemRecord]]:
    records, items = fold(changes, now)
    return {task_id: r.to_view() for task_id, r in records.items()}, items


@settings(max_examples=400, deadline=None)
@given(data=st.data(), changes=changes_strategy)
def test_any_order_and_duplication_gives_the_same_state(
    data: st.DataObject, changes: list[Change]
) -> None:
    shuffled = data.draw(st.permutations(changes))
    extra = data.draw(st.lists(st.sampled_from(changes), max_size=6))
    replayed = data.draw(st.permutations([*shuffled, *extra]))
    expected = final_state(changes, NOW)
    # Wall clock (touched_at, driven_at) differs between the runs and must not matter.
    actual = final_state(replayed, NOW + timedelta(hours=1))
    assert msgspec.to_builtins(actual[0]) == msgspec.to_builtins(expected[0])
    assert actual[1] == expected[1]


def shown_statuses(changes: Sequence[Change]) -> list[dict[str, TaskStatus]]:
    """The status of every task as shown after each change, one change at a time."""
    records: dict[str, TaskRecord] = {}
    items: dict[tuple[str, str], ItemRecord] = {}
    shown = []
    for change in changes:
        outcome = apply_batch([change], records, items, NOW)
        records.update(outcome.records)
        items.update({(i.task_id, i.item_key): i for i in outcome.items})
        shown.append({task_id: r.status for task_id, r in records.items()})
    return shown


def assert_terminal_absorbs(changes: Sequence[Change]) -> None:
    shown = shown_statuses(changes)
    for before, after in itertools.pairwise(shown):
        for task_id, status in before.items():
            if status.is_terminal:
                assert after[task_id].is_terminal, (task_id, status, after[task_id], changes)


@settings(max_examples=400, deadline=None)
@given(changes=changes_strategy)
def test_once_terminal_is_shown_no_change_makes_a_task_live_again(changes: list[Change]) -> None:
    assert_terminal_absorbs(changes)


# One task, submitted (with or without a command), cancelled, and reported on: every order.
cancel_scenarios = st.tuples(
    st.builds(
        TaskSubmit,
        task_id=st.just("a"),
        kind=st.just("k"),
        command=st.sampled_from([None, COMMAND]),
        submitted_at=st.sampled_from(TIMES),
    ),
    st.builds(
        TaskCancel,
        task_id=st.just("a"),
        reason=st.sampled_from([None, "r"]),
        requested_at=st.sampled_from(TIMES),
    ),
    st.lists(
        st.builds(
            TaskUpdate,
            task_id=st.just("a"),
            status=st.sampled_from(["QUEUED", "RUNNING", "SUCCESS", "KILLED", "ERRORED"]),
            observed_at=st.sampled_from(TIMES),
        ),
        min_size=1,
        max_size=4,
    ),
)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), scenario=cancel_scenarios)
def test_cancel_and_reports_in_every_order(
    data: st.DataObject, scenario: tuple[TaskSubmit, TaskCancel, list[TaskUpdate]]
) -> None:
    submit_, cancel_, reports = scenario
    changes: list[Change] = [submit_, cancel_, *reports]
    first = data.draw(st.permutations(changes))
    second = data.draw(st.permutations(changes))
    assert_terminal_absorbs(first)
    assert_terminal_absorbs(second)
    assert one(first).to_view() == one(second).to_view()
    if submit_.command is None:
        # Nothing will run it: the cancel kills it, whatever was reported non-terminal.
        assert one(first).status.is_terminal


@settings(max_examples=200, deadline=None)
@given(data=st.data(), changes=changes_strategy)
def test_batches_fold_like_single_changes(data: st.DataObject, changes: list[Change]) -> None:
    split = data.draw(st.integers(0, len(changes)))
    records: dict[str, TaskRecord] = {}
    items: dict[tuple[str, str], ItemRecord] = {}
    for batch in (changes[:split], changes[split:]):
        outcome = apply_batch(batch, records, items, NOW)
        records.update(outcome.records)
        items.update({(i.task_id, i.item_key): i for i in outcome.items})
    expected_views, expected_items = final_state(changes, NOW)
    assert {k: r.to_view() for k, r in records.items()} == expected_views
    assert items == expected_items


@pytest.mark.parametrize("status", ["QUEUED", "RUNNING"])
def test_item_counts_match_the_item_set(status: StatusInput) -> None:
    records, items = fold(
        [
            update(1, status=status, items=[ItemOutcome(item_key="a", outcome="ERRORED")]),
            update(2, items=[ItemOutcome(item_key="a", outcome="SKIPPED")]),
            update(2, items=[ItemOutcome(item_key="b", outcome="SUCCESS")]),
        ]
    )
    record = records["t1"]
    assert record.items_total == len(items) == 2
    assert (record.items_succeeded, record.items_failed, record.items_skipped) == (1, 0, 1)


# --- completion by item count ---------------------------------------------------------------


def detailed(seconds: float, *outcomes: tuple[str, str, str | None]) -> TaskUpdate:
    """Items with a detail: (key, outcome, detail)."""
    return update(
        seconds,
        items=[ItemOutcome(item_key=k, outcome=o, detail=d) for k, o, d in outcomes],  # type: ignore[arg-type]
    )


def test_a_task_ends_success_once_every_expected_item_has_an_outcome_in_any_order() -> None:
    changes: list[Change] = [
        submit(0, command=DrivingCommand(routing_key="hf.datasets.collect")),
        update(1, "RUNNING"),
        detailed(2, ("a", "SUCCESS", "created"), ("b", "SUCCESS", "unchanged")),
        update(3, items_expected=3, result={"discovered": 3}),
        detailed(4, ("c", "ERRORED", None)),
        detailed(5, ("a", "SUCCESS", "updated")),  # a redelivered, later word on a
    ]
    for order in itertools.permutations(changes):
        record = one(order)
        assert record.status is TaskStatus.SUCCESS
        assert record.ended_at == at(5)
        assert record.to_view().result == {
            "discovered": 3,
            "updated": 1,
            "unchanged": 1,
            "failed": 1,
            "skipped": 0,
        }


def test_a_task_short_of_its_expected_items_or_cancelled_is_not_done() -> None:
    expected = update(1, "RUNNING", items_expected=2)
    assert one([submit(0), expected, detailed(2, ("a", "SUCCESS", "created"))]).status is (
        TaskStatus.RUNNING
    )
    cancelled = [
        submit(0, command=DrivingCommand(routing_key="w.x.do")),
        expected,
        cancel(1.5),
        detailed(2, ("a", "SUCCESS", None), ("b", "SUCCESS", None)),
    ]
    assert one(cancelled).status is TaskStatus.RUNNING  # cancelling: the worker confirms
