"""Hugging Face webhooks at the gateway: the secret (401 missing, 403 wrong), strict
decoding (400 with the reason, 413 past the limit), what is ignored, and a real dataset
change reaching `hf.datasets.changed` before the 2xx; over TLS when configured."""

from __future__ import annotations

import asyncio
import copy
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import aio_pika.abc
import httpx
import msgspec
import pytest

from services.gateway.app import Gateway
from services.gateway.tls import DevelopmentCertificates
from shared.contracts.hf import HfDatasetChanged
from shared.settings import BaseSettings
from shared.topology import Names
from tests.conftest import Cleanup
from tests.support.gateway import (
    WEBHOOK_SECRET,
    certificates,  # noqa: F401 (a fixture)
    gateway_settings,
    running_gateway,
)

PATH = "/webhooks/huggingface"
DATASET_ID = "6543210fedcba9876543210f"
PAYLOAD: dict[str, Any] = {
    "event": {"action": "update", "scope": "repo.content"},
    "repo": {
        "type": "dataset",
        "name": "acme/reviews",
        "id": DATASET_ID,
        "private": False,
        "url": {
            "web": "https://huggingface.co/datasets/acme/reviews",
            "api": "https://huggingface.co/api/datasets/acme/reviews",
        },
        "owner": {"id": "5f0e0e0e0e0e0e0e0e0e0e0e"},
        "head_sha": "0a1b2c3d",
    },
    "webhook": {"id": "65f0000000000000000000aa", "version": 3},
    "updatedRefs": [{"ref": "refs/heads/main", "oldSha": "aaa", "newSha": "bbb"}],
}


def payload(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(PAYLOAD)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = body
        for key in path:
            node = node[key]
        node[last] = value
    return body


@pytest.fixture
async def gateway(
    base_settings: BaseSettings,
    certificates: DevelopmentCertificates,  # noqa: F811
    tmp_path: Path,
    cleanup: Cleanup,
) -> AsyncIterator[Gateway]:
    settings = gateway_settings(base_settings, certificates, tmp_path, webhook_max_body_bytes=4096)
    async with running_gateway(settings, cleanup) as gateway:
        yield gateway


@pytest.fixture
async def changes(
    gateway: Gateway, amqp: aio_pika.abc.AbstractRobustConnection, namespace: str
) -> AsyncIterator[asyncio.Queue[HfDatasetChanged]]:
    """What an hf_collector would hear: a queue bound to `hf.datasets.changed`."""
    channel = await amqp.channel()
    exchange = await channel.get_exchange(Names(namespace).exchange)
    queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
    await queue.bind(exchange, HfDatasetChanged.ROUTING_KEY)
    heard: asyncio.Queue[HfDatasetChanged] = asyncio.Queue()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        heard.put_nowait(HfDatasetChanged.decode(message.body))

    await queue.consume(on_message, no_ack=True)
    yield heard
    await channel.close()


async def post(
    gateway: Gateway, body: bytes | dict[str, Any], secret: str | None = WEBHOOK_SECRET
) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if secret is not None:
        headers["X-Webhook-Secret"] = secret
    content = body if isinstance(body, bytes) else msgspec.json.encode(body)
    assert gateway.webhooks is not None
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"http://127.0.0.1:{gateway.webhooks.port}{PATH}",
            content=content,
            headers=headers,
            timeout=10,
        )


async def test_no_secret_is_401_and_a_wrong_one_403(
    gateway: Gateway, changes: asyncio.Queue[HfDatasetChanged]
) -> None:
    missing = await post(gateway, PAYLOAD, secret=None)
    assert missing.status_code == 401
    assert missing.json() == {"error": "x-webhook-secret header not set."}
    wrong = await post(gateway, PAYLOAD, secret="guess")
    assert wrong.status_code == 403
    assert wrong.json() == {"error": "Invalid webhook secret."}
    await asyncio.sleep(0.2)
    assert changes.empty()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "malformed"),
        (payload(webhook__version=2), "version"),
        (payload(repo__private="no"), "Expected `bool`"),
        (payload(event__action="rename"), "action"),
        (
            {"event": PAYLOAD["event"], "webhook": PAYLOAD["webhook"]},
            "missing required field `repo`",
        ),
    ],
    ids=["not-json", "version-2", "private-not-bool", "unknown-action", "no-repo"],
)
async def test_a_body_that_does_not_decode_is_400_with_the_reason(
    gateway: Gateway,
    changes: asyncio.Queue[HfDatasetChanged],
    body: bytes | dict[str, Any],
    reason: str,
) -> None:
    answer = await post(gateway, body)
    assert answer.status_code == 400
    assert reason.lower() in answer.json()["error"].lower()
    assert changes.empty()


async def test_a_body_past_the_limit_is_413(gateway: Gateway) -> None:
    answer = await post(gateway, payload(repo__tags=["t" * 100] * 100))
    assert answer.status_code == 413


@pytest.mark.parametrize(
    "body",
    [payload(repo__type="model"), payload(event__scope="discussion.comment")],
    ids=["a-model", "a-discussion"],
)
async def test_what_is_no_dataset_metadata_change_is_ignored(
    gateway: Gateway, changes: asyncio.Queue[HfDatasetChanged], body: dict[str, Any]
) -> None:
    answer = await post(gateway, body)
    assert answer.status_code == 200 and answer.json()["status"] == "ignored"
    await asyncio.sleep(0.2)
    assert changes.empty()


async def test_a_real_change_reaches_hf_datasets_changed_before_the_answer(
    gateway: Gateway, changes: asyncio.Queue[HfDatasetChanged]
) -> None:
    answer = await post(gateway, PAYLOAD)
    assert answer.status_code == 202
    change = await asyncio.wait_for(changes.get(), 5)
    assert change == HfDatasetChanged(
        repo_id=DATASET_ID, name="acme/reviews", action="update", private=False
    )
    moved = payload(
        event__action="move",
        event__scope="repo",
        movedTo={"name": "acme/reviews-v2", "owner": {"id": "5f0e0e0e0e0e0e0e0e0e0e0e"}},
    )
    assert (await post(gateway, moved)).status_code == 202
    change = await asyncio.wait_for(changes.get(), 5)
    assert (change.action, change.moved_to) == ("move", "acme/reviews-v2")


async def test_with_no_listener_the_change_is_refused_not_lost(gateway: Gateway) -> None:
    answer = await post(gateway, PAYLOAD)
    assert answer.status_code == 503
    assert "retry" in answer.json()["error"]


async def test_the_endpoint_speaks_tls_when_configured(
    base_settings: BaseSettings,
    certificates: DevelopmentCertificates,  # noqa: F811
    tmp_path: Path,
    cleanup: Cleanup,
) -> None:
    (tmp_path / "server.pem").write_bytes(certificates.server.certificate_pem)
    (tmp_path / "server.key").write_bytes(certificates.server.key_pem)
    (tmp_path / "ca.pem").write_bytes(certificates.ca.certificate_pem)
    settings = gateway_settings(
        base_settings,
        certificates,
        tmp_path,
        webhook_tls_cert=str(tmp_path / "server.pem"),
        webhook_tls_key=str(tmp_path / "server.key"),
    )
    async with running_gateway(settings, cleanup) as gateway:
        assert gateway.webhooks is not None
        trust = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        async with httpx.AsyncClient(verify=trust) as http:
            answer = await http.post(
                f"https://localhost:{gateway.webhooks.port}{PATH}", content=b"{}", timeout=10
            )
    assert answer.status_code == 401  # reached over TLS; the secret is checked first
