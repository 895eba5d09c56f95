"""The task contracts at the edge: producer timestamps are required on the wire (so a body
decodes the same every time), and a task's free-form JSON is bounded in size."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from shared.contracts.base import Reply
from shared.contracts.tasks import (
    MAX_JSON_BYTES,
    DrivingCommand,
    TaskCancel,
    TaskGetReply,
    TaskListReply,
    TaskSubmit,
    TaskUpdate,
    TaskView,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("contract", "body", "stamp"),
    [
        (TaskSubmit, b'{"task_id": "t", "kind": "k"}', "submitted_at"),
        (TaskUpdate, b'{"task_id": "t", "status": "RUNNING"}', "observed_at"),
        (TaskCancel, b'{"task_id": "t"}', "requested_at"),
    ],
)
def test_a_change_without_its_producer_timestamp_does_not_decode(
    contract: type[TaskSubmit | TaskUpdate | TaskCancel], body: bytes, stamp: str
) -> None:
    with pytest.raises(msgspec.ValidationError, match=f"missing required field `{stamp}`"):
        contract.decode(body)


def test_the_same_bytes_decode_to_the_same_change_every_time() -> None:
    body = b'{"task_id": "t", "status": "RUNNING", "observed_at": "2026-01-01T00:00:00Z"}'
    first, second = TaskUpdate.decode(body), TaskUpdate.decode(body)
    assert first == second
    assert first.observed_at == T0


def test_producers_stamp_changes_conveniently() -> None:
    before = datetime.now(UTC)
    update = TaskUpdate.now(task_id="t", status="RUNNING")
    submit = TaskSubmit.now(task_id="t", kind="k")
    cancel = TaskCancel.now(task_id="t")
    for stamp in (update.observed_at, submit.submitted_at, cancel.requested_at):
        assert before <= stamp <= datetime.now(UTC)
    assert TaskUpdate.decode(update.encode()) == update


def test_params_results_and_command_bodies_are_bounded() -> None:
    fits = "x" * (MAX_JSON_BYTES - 2)  # with its quotes, exactly the limit
    TaskUpdate(task_id="t", result=fits, observed_at=T0)
    too_big = "x" * (MAX_JSON_BYTES - 1)
    submit = {"task_id": "t", "kind": "k", "submitted_at": "2026-01-01T00:00:00Z"}
    cases: list[tuple[type[TaskSubmit] | type[TaskUpdate], dict[str, object], str]] = [
        (TaskSubmit, {**submit, "params": {"p": too_big}}, "`params`"),
        (TaskSubmit, {**submit, "command": {"routing_key": "a.b", "body": {"b": too_big}}}, "body"),
        (
            TaskUpdate,
            {"task_id": "t", "observed_at": "2026-01-01T00:00:00Z", "result": too_big},
            "`result`",
        ),
    ]
    for contract, body, field in cases:
        with pytest.raises(msgspec.ValidationError, match=field):
            contract.decode(msgspec.json.encode(body))
    with pytest.raises(ValueError, match="limit is 65536 bytes"):
        TaskSubmit(task_id="t", kind="k", params={"p": too_big}, submitted_at=T0)
    with pytest.raises(ValueError):
        DrivingCommand(routing_key="a.b", body={"b": too_big})


def test_replies_are_replies_and_views_carry_the_cancellation_fields() -> None:
    assert issubclass(TaskGetReply, Reply) and issubclass(TaskListReply, Reply)
    view = msgspec.json.decode(
        b'{"id": "t", "kind": "k", "name": "", "status": "QUEUED", "progress_value": 0,'
        b' "end_value": 0, "progress_message": null, "result": null, "params": {},'
        b' "created_at": null, "started_at": null, "ended_at": null,'
        b' "updated_at": "2026-01-01T00:00:00Z", "should_be_killed": false}',
        type=TaskView,
    )
    assert (view.cancelling, view.waiting_reason) == (False, None)  # older trackers' views
