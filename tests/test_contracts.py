"""Contracts: JSON round trips, strict decoding, unknown fields ignored, Iaso aliases."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from shared.contracts import (
    BY_ROUTING_KEY,
    DrivingCommand,
    ItemOutcome,
    TaskCancel,
    TaskGet,
    TaskList,
    TasksChanged,
    TaskSubmit,
    TaskUpdate,
    TaskView,
    json_schema,
)
from shared.contracts.base import Contract, ErrorReply

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
VIEW = TaskView(
    id="t",
    kind="demo",
    name="",
    status="RUNNING",
    progress_value=1,
    end_value=2,
    progress_message=None,
    result=None,
    params={},
    created_at=NOW,
    started_at=NOW,
    ended_at=None,
    updated_at=NOW,
    should_be_killed=False,
)

EXAMPLES: list[Contract] = [
    TaskSubmit(
        task_id="t",
        kind="demo",
        params={"a": [1, 2]},
        submitted_at=NOW,
        command=DrivingCommand(routing_key="hf.datasets.collect", body={"mode": "all"}),
    ),
    TaskUpdate(
        task_id="t",
        status="RUNNING",
        progress_value=3,
        result={"k": "v"},
        items=[ItemOutcome(item_key="org/ds", outcome="SUCCESS")],
        observed_at=NOW,
    ),
    TaskCancel(task_id="t", reason="operator", requested_at=NOW),
    TaskGet(task_id="t", include_items=True),
    TaskList(statuses=["RUNNING"], kind="demo", limit=10),
    TasksChanged(tasks=[VIEW]),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_contract_round_trips_through_json(message: Contract) -> None:
    assert type(message).decode(message.encode()) == message
    assert msgspec.json.decode(message.encode())["version"] == 1


def test_every_routing_key_names_its_contract() -> None:
    for key, contract in BY_ROUTING_KEY.items():
        assert key == contract.ROUTING_KEY


def test_unknown_fields_are_ignored_and_missing_ones_are_errors() -> None:
    update = TaskUpdate.decode(
        b'{"task_id": "t", "observed_at": "2026-01-01T00:00:00Z", "from_the_future": {"x": 1}}'
    )
    assert update.task_id == "t"
    with pytest.raises(msgspec.ValidationError, match="missing required field `task_id`"):
        TaskUpdate.decode(b'{"status": "RUNNING"}')


def test_decoding_is_strict_about_types_and_values() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"Expected `int \| null`, got `str`"):
        TaskUpdate.decode(b'{"task_id": "t", "progress_value": "3"}')
    with pytest.raises(msgspec.ValidationError, match=">= 0"):
        TaskUpdate.decode(b'{"task_id": "t", "progress_value": -1}')
    with pytest.raises(msgspec.ValidationError, match="Invalid enum value 'DONE'"):
        TaskUpdate.decode(b'{"task_id": "t", "status": "DONE"}')
    with pytest.raises(msgspec.ValidationError, match="matching regex"):
        TaskGet.decode(b'{"task_id": "../../etc/passwd"}')


def test_the_iaso_documentation_statuses_are_aliases() -> None:
    at = b'"observed_at": "2026-01-01T00:00:00Z"'
    assert TaskUpdate.decode(b'{"task_id": "t", "status": "ERROR", ' + at + b"}").status == (
        "ERRORED"
    )
    assert TaskUpdate.decode(b'{"task_id": "t", "status": "CANCELLED", ' + at + b"}").status == (
        "KILLED"
    )
    assert TaskList.decode(b'{"statuses": ["CANCELLED"]}').statuses == ["KILLED"]


def test_an_error_reply_decodes_as_any_reply() -> None:
    from shared.contracts import REPLIES

    body = ErrorReply(error="bad cursor").encode()
    for reply in REPLIES.values():
        assert msgspec.json.decode(body, type=reply).error == "bad cursor"  # type: ignore[attr-defined]


def test_json_schemas_are_self_contained() -> None:
    schema = json_schema(TaskSubmit)
    assert "$ref" not in msgspec.json.encode(schema).decode()
    assert schema["required"] == ["task_id", "kind", "submitted_at"]
