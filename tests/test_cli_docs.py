"""`ferry docs`: one complete AsyncAPI document per service, made from the declarations
alone (no broker, no database), written for whoever publishes to Ferry's queues."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import msgspec
import pytest

from services.cli.main import main
from shared.service import (
    ERROR_HEADER,
    ERROR_KIND_HEADER,
    FAILED_AT_HEADER,
    QUEUE_HEADER,
    ROUTING_KEY_HEADER,
)
from shared.topology import DELAY_HEADER, LATER_CLASSES, LATER_HEADER, delay_label


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def payload_of(document: dict[str, Any], channel: dict[str, Any]) -> dict[str, Any]:
    [message_ref] = channel["messages"].values()
    message = resolve(document, message_ref["$ref"])
    schema: dict[str, Any] = resolve(document, message["payload"]["$ref"])
    return schema


@pytest.fixture
def documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`ferry docs --out DIR` with no broker listening, a database directory that does not
    exist, and a namespace set: none of it may show."""
    monkeypatch.setenv("FERRY_AMQP_URL", f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    monkeypatch.setenv("FERRY_DATABASE_URL", f"sqlite:///{tmp_path}/absent/t.db")
    monkeypatch.setenv("FERRY_NAMESPACE", "nsprefix7")
    out = tmp_path / "docs"
    assert main(["docs", "--out", str(out)]) == 0
    assert not (tmp_path / "absent").exists()
    return out


def tracker_document(out: Path) -> dict[str, Any]:
    document: dict[str, Any] = msgspec.json.decode((out / "task_tracker.json").read_bytes())
    return document


def test_every_reference_resolves_and_no_namespace_shows(documents: Path) -> None:
    text = (documents / "task_tracker.json").read_text()
    assert "nsprefix7" not in text
    document = json.loads(text)
    assert document["asyncapi"] == "3.0.0"
    for ref in refs(document):
        assert resolve(document, ref), ref
    # The prefix is described once, for the reader to apply.
    assert document["x-ferry-namespace"]["setting"] == "FERRY_NAMESPACE"
    assert "FERRY_NAMESPACE" in document["info"]["description"]
    index = json.loads((documents / "index.json").read_text())
    assert index["task_tracker"]["file"] == "task_tracker.json"


def test_the_service_is_described_by_its_own_docstring(documents: Path) -> None:
    description = tracker_document(documents)["info"]["description"]
    assert description.startswith("The task tracker")
    assert "The runtime every Ferry service shares" not in description


def test_every_exchange_with_its_type(documents: Path) -> None:
    exchanges = {e["name"]: e["type"] for e in tracker_document(documents)["x-ferry-exchanges"]}
    assert exchanges == {
        "ferry": "topic",
        "ferry.dlx": "topic",
        "ferry.retry": "headers",
        "ferry.later": "headers",
    }


def test_work_queues_with_routing_key_queue_type_arguments_and_schemas(documents: Path) -> None:
    document = tracker_document(documents)
    channels = document["channels"]
    work = {
        name: channel for name, channel in channels.items() if name.startswith("ferry.task_tracker")
    }
    by_key = {c["address"]: c for c in work.values() if "x-ferry-queue" in c}
    assert {"tasks.submit", "tasks.update", "tasks.cancel", "tasks.get", "tasks.list"} <= set(
        by_key
    )

    update = by_key["tasks.update"]
    queue = update["x-ferry-queue"]
    assert queue["name"] == "ferry.task_tracker.update"
    assert queue["type"] == "quorum"
    assert queue["kind"] == "command"
    assert queue["arguments"]["x-dead-letter-exchange"] == "ferry.dlx"
    assert queue["arguments"]["x-dead-letter-routing-key"] == "ferry.task_tracker.update"
    assert "x-delivery-limit" in queue["arguments"]
    assert update["bindings"]["amqp"]["exchange"] == {
        "name": "ferry",
        "type": "topic",
        "durable": True,
        "autoDelete": False,
        "vhost": "/",
    }
    payload = payload_of(document, update)
    assert "task_id" in payload["properties"]
    assert "task_id" in payload["required"]
    item = resolve(document, payload["properties"]["items"]["items"]["$ref"])
    assert "item_key" in item["properties"]

    get = by_key["tasks.get"]
    assert get["x-ferry-queue"]["kind"] == "request"
    assert "x-message-ttl" in get["x-ferry-queue"]["arguments"]
    assert get["x-ferry-reply"] == {"$ref": "#/components/schemas/TaskGetReply"}
    [operation] = [
        op
        for op in document["operations"].values()
        if op["channel"]["$ref"] == "#/channels/ferry.task_tracker.get"
    ]
    assert operation["action"] == "receive"
    [reply] = operation["reply"]["messages"]
    reply_message = resolve(document, resolve(document, reply["$ref"])["$ref"])
    assert reply_message["payload"] == {"$ref": "#/components/schemas/TaskGetReply"}
    assert "error" in resolve(document, reply_message["payload"]["$ref"])["properties"]


def test_the_events_it_publishes_and_its_dynamic_commands(documents: Path) -> None:
    document = tracker_document(documents)
    channels = document["channels"]
    sent = {
        resolve(document, op["channel"]["$ref"])["address"]
        for op in document["operations"].values()
        if op["action"] == "send"
    }
    assert {"tasks.changed", "tasks.cancelled"} <= sent
    assert "task_id" in payload_of(document, channels["tasks.cancelled"])["properties"]
    assert "tasks" in payload_of(document, channels["tasks.changed"])["properties"]
    # The driving commands' routing keys come from the submitted tasks: said, not invented.
    dynamic = channels["driving-commands"]
    assert dynamic["address"] is None
    assert "command.routing_key" in dynamic["description"]


def test_the_dead_letter_queue_and_the_headers_a_dead_letter_carries(documents: Path) -> None:
    document = tracker_document(documents)
    dlq = document["channels"]["ferry.task_tracker.dlq"]
    assert dlq["x-ferry-queue"]["type"] == "quorum"
    assert dlq["x-ferry-queue"]["boundTo"]["exchange"] == "ferry.dlx"
    assert "ferry.task_tracker.update" in dlq["x-ferry-queue"]["boundTo"]["routingKeys"]
    [message_ref] = dlq["messages"].values()
    headers = resolve(document, message_ref["$ref"])["headers"]["properties"]
    for header in (
        ERROR_HEADER,
        ERROR_KIND_HEADER,
        QUEUE_HEADER,
        ROUTING_KEY_HEADER,
        FAILED_AT_HEADER,
        "x-death",
    ):
        assert headers[header]["description"], header
    assert set(headers[ERROR_KIND_HEADER]["enum"]) == {"malformed", "permanent", "exhausted"}


def test_parking_and_delay_queues(documents: Path) -> None:
    document = tracker_document(documents)
    channels = document["channels"]
    for seconds in (30.0, 300.0):  # the default FERRY_PARK_DELAYS
        parking = channels[f"ferry.retry.{delay_label(seconds)}"]
        queue = parking["x-ferry-queue"]
        assert queue["arguments"]["x-message-ttl"] == int(seconds * 1000)
        assert queue["arguments"]["x-dead-letter-exchange"] == ""
        assert queue["boundTo"]["exchange"] == "ferry.retry"
        assert queue["boundTo"]["arguments"][DELAY_HEADER] == delay_label(seconds)
    for seconds in LATER_CLASSES:
        later = channels[f"ferry.later.{delay_label(seconds)}"]
        assert later["x-ferry-queue"]["arguments"]["x-dead-letter-exchange"] == "ferry"
        assert later["x-ferry-queue"]["boundTo"]["arguments"][LATER_HEADER] == delay_label(seconds)


def test_docs_serve_pages_render_the_documents(documents: Path) -> None:
    from services.cli.docs import pages

    document = tracker_document(documents)
    rendered = pages({"task_tracker": document})
    assert b"task_tracker" in rendered["/"]
    assert b"Ferry task_tracker" in rendered["/task_tracker"]


def test_every_header_the_runtime_sets_has_its_meaning_written_down() -> None:
    from services.cli.asyncapi import UNDESCRIBED, runtime_headers

    undescribed = [
        name for name, (meaning, _) in runtime_headers().items() if meaning is UNDESCRIBED
    ]
    assert not undescribed, f"add their meaning to services/cli/asyncapi.py: {undescribed}"
