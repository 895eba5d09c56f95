"""Hugging Face Hub webhooks: `POST /webhooks/huggingface` (aiohttp.web, on its own port,
TLS when a certificate is configured).

What huggingface_hub's own WebhooksServer does, and reference/aiod-and-hf-hub.md B5 asks:
`X-Webhook-Secret` missing -> 401, wrong -> 403 (compared in constant time). The body is
decoded strictly as a version-3 payload (400 with the reason otherwise; 413 past the size
limit). An event about a dataset that may carry a metadata change (scopes `repo`,
`repo.content`, `repo.config`) is published as `hf.datasets.changed` and confirmed by the
broker before the answer (202): the work happens behind it, the Hub never waits on
AI-on-Demand. Anything else (models, spaces, discussions) is answered 200 and ignored.

The change is published mandatory: when no hf_collector listens the answer is 503, so the
Hub's delivery log shows the failure instead of a change silently lost.
"""

from __future__ import annotations

import hmac
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Literal

import msgspec
from aiohttp import web

from shared.contracts.hf import HfDatasetChanged
from shared.messaging import Unroutable

PATH = "/webhooks/huggingface"
SECRET_HEADER = "X-Webhook-Secret"
# Scopes whose events may change a dataset's metadata; discussions never do.
METADATA_SCOPES = frozenset({"repo", "repo.content", "repo.config"})

log = logging.getLogger("ferry.gateway.webhooks")


class _Owner(msgspec.Struct, forbid_unknown_fields=False):
    id: str


class _Url(msgspec.Struct, forbid_unknown_fields=False):
    web: str
    api: str | None = None


class _Event(msgspec.Struct, forbid_unknown_fields=False):
    action: Literal["create", "delete", "move", "update"]
    scope: str


class _Repo(msgspec.Struct, forbid_unknown_fields=False):
    id: str
    owner: _Owner
    name: str
    private: bool
    type: Literal["dataset", "model", "space"]
    url: _Url
    head_sha: str | None = None
    subdomain: str | None = None
    tags: list[str] | None = None


class _Webhook(msgspec.Struct, forbid_unknown_fields=False):
    id: str
    version: Literal[3]


class _MovedTo(msgspec.Struct, forbid_unknown_fields=False):
    name: str
    owner: _Owner


class _UpdatedRef(msgspec.Struct, forbid_unknown_fields=False):
    ref: str
    old_sha: str | None = msgspec.field(default=None, name="oldSha")
    new_sha: str | None = msgspec.field(default=None, name="newSha")


class WebhookPayload(msgspec.Struct, forbid_unknown_fields=False):
    """huggingface_hub's `WebhookPayload` (version 3)."""

    event: _Event
    repo: _Repo
    webhook: _Webhook
    moved_to: _MovedTo | None = msgspec.field(default=None, name="movedTo")
    updated_refs: list[_UpdatedRef] | None = msgspec.field(default=None, name="updatedRefs")
    discussion: dict[str, object] | None = None
    comment: dict[str, object] | None = None


def change_of(payload: WebhookPayload) -> HfDatasetChanged | str:
    """The change to publish, or why the event is ignored."""
    if payload.repo.type != "dataset":
        return f"a {payload.repo.type}, not a dataset"
    if payload.event.scope not in METADATA_SCOPES:
        return f"scope {payload.event.scope} carries no metadata change"
    fields = {
        "repo_id": payload.repo.id,
        "name": payload.repo.name,
        "action": payload.event.action,
        "private": payload.repo.private,
        "moved_to": payload.moved_to.name if payload.moved_to is not None else None,
    }
    try:
        return msgspec.convert(fields, HfDatasetChanged)
    except msgspec.ValidationError as exc:
        raise web.HTTPBadRequest(
            text=_error(f"not a dataset change: {exc}"), content_type="application/json"
        ) from None


def _error(message: str) -> str:
    return msgspec.json.encode({"error": message}).decode()


def _json(status: int, body: dict[str, str]) -> web.Response:
    return web.Response(
        status=status, text=msgspec.json.encode(body).decode(), content_type="application/json"
    )


class WebhookEndpoint:
    def __init__(
        self,
        secret: str,
        publish: Callable[[HfDatasetChanged], Awaitable[None]],
        *,
        max_body_bytes: int,
    ) -> None:
        self._secret = secret.encode()
        self._publish = publish
        self.max_body_bytes = max_body_bytes
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_post(PATH, self.receive)
        return app

    async def receive(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER)
        if given is None:
            return _json(401, {"error": "x-webhook-secret header not set."})
        if not hmac.compare_digest(given.encode(), self._secret):
            return _json(403, {"error": "Invalid webhook secret."})
        if (request.content_length or 0) > self.max_body_bytes:
            return _json(413, {"error": f"body larger than {self.max_body_bytes} bytes"})
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _json(413, {"error": f"body larger than {self.max_body_bytes} bytes"})
        try:
            payload = msgspec.json.decode(body, type=WebhookPayload, strict=True)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _json(400, {"error": f"not a version-3 webhook payload: {exc}"})
        outcome = change_of(payload)
        if isinstance(outcome, str):
            return _json(200, {"status": "ignored", "reason": outcome})
        try:
            await self._publish(outcome)
        except Unroutable:
            log.error("webhook change not delivered: no consumer of hf.datasets.changed")
            return _json(503, {"error": "no consumer of dataset changes is running; retry later"})
        except Exception as exc:  # the broker is down or refused it
            log.error("webhook change not delivered", extra={"error": str(exc)})
            return _json(503, {"error": "the change could not be queued; retry later"})
        log.info(
            "dataset change queued",
            extra={"repo": outcome.name, "action": outcome.action, "scope": payload.event.scope},
        )
        return _json(202, {"status": "accepted"})

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self._runner = web.AppRunner(self.application(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=tls)
        await site.start()
        server = site._server  # aiohttp keeps the bound socket there; 0 means "any port"
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context
