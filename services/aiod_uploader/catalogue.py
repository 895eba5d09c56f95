"""The client of the AI-on-Demand REST API and its Keycloak, for one platform's records.

- A client-credentials token is fetched on first use, cached, and renewed
  `token_refresh_margin` seconds before it expires (or at half its life, if it is short);
  a 401 on a call renews it once and sends the call again.
- Every call goes through `shared.http.ExternalApi` (timeouts, pooled connections, pacing),
  with one layer of in-process retries here, so that the statuses AIoD gives a meaning to
  are handled before the generic policy sees them: a 409 on POST names the record that
  already exists (`Conflict`), a 404 on a lookup is "no record".
- Failures the operator must fix (credentials refused, the platform role missing) raise
  `RunFailure` with one line that says what to fix; other refusals (400, 403, 412, 422)
  raise `Refused` with the server's detail; 429, 5xx and timeouts are retried and end as
  `shared.retry.BudgetSpent`, which the runtime parks.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from services.aiod_uploader.settings import UploaderSettings
from shared.http import ExternalApi
from shared.retry import BudgetSpent, PermanentError, RetryPolicy, TransientError

log = logging.getLogger("ferry.aiod_uploader.catalogue")

# "There already exists a dataset with the same platform and platform_resource_identifier,
# with identifier=data_...": the record a POST collided with.
_EXISTING = re.compile(r"identifier=([A-Za-z0-9_]+)")
_UPLOAD_DENIED = "No permission to upload assets for"


class RunFailure(PermanentError):
    """Nothing can be uploaded until the operator fixes this (the message says how)."""


class Refused(PermanentError):
    """AIoD refused this one request for good (400, 403, 404, 412, 422)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"AIoD answered {status}: {detail}")
        self.status = status
        self.detail = detail


class Conflict(PermanentError):
    """A POST found the record already there; `identifier` is that record's."""

    def __init__(self, identifier: str | None, detail: str) -> None:
        super().__init__(detail)
        self.identifier = identifier


@dataclass
class AccessToken:
    value: str
    renew_at: float  # loop time


class TokenSource:
    """The client-credentials token: fetched once, shared by every call, renewed ahead."""

    def __init__(self, settings: UploaderSettings, auth: ExternalApi) -> None:
        self.settings = settings
        self.auth = auth
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        token = self._token
        if token is not None and asyncio.get_running_loop().time() < token.renew_at:
            return token.value
        async with self._lock:  # one fetch for every caller waiting
            token = self._token
            if token is None or asyncio.get_running_loop().time() >= token.renew_at:
                token = self._token = await self._fetch()
            return token.value

    async def renew(self, rejected: str) -> None:
        """The API refused `rejected`: fetch a new one (once, however many callers saw it)."""
        async with self._lock:
            if self._token is None or self._token.value == rejected:
                self._token = await self._fetch()

    async def _fetch(self) -> AccessToken:
        settings = self.settings
        if not settings.aiod_client_secret:
            raise RunFailure(
                "no AIoD client secret is set: set FERRY_AIOD_CLIENT_SECRET (or"
                f" FERRY_AIOD_CLIENT_SECRET_FILE) to the Keycloak secret of client"
                f" {settings.aiod_client_id}"
            )
        form = {
            "grant_type": "client_credentials",
            "client_id": settings.aiod_client_id,
            "client_secret": settings.aiod_client_secret,
            "scope": "openid",
        }
        try:
            response = await self.auth.post(settings.token_url, data=form)
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            if status in (400, 401, 403):
                error = _error_text(exc.response)
                raise RunFailure(
                    f"AIoD's Keycloak refused the credentials of client"
                    f" {settings.aiod_client_id} ({status} {error}): check"
                    " FERRY_AIOD_CLIENT_ID and FERRY_AIOD_CLIENT_SECRET"
                ) from None
            if status == 404:
                raise RunFailure(
                    f"no Keycloak token endpoint at {settings.token_url} (404): check"
                    " FERRY_AIOD_AUTH_URL and FERRY_AIOD_REALM"
                ) from None
            raise
        try:
            body = msgspec.json.decode(response.content, type=dict[str, Any])
            value = str(body["access_token"])
            lifetime = float(body.get("expires_in") or 60)
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError, ValueError, TypeError):
            raise TransientError("AIoD's token endpoint sent no usable token") from None
        margin = min(settings.token_refresh_margin, lifetime / 2)
        renew_at = asyncio.get_running_loop().time() + lifetime - margin
        log.info("fetched an AIoD access token", extra={"expires_in_s": lifetime})
        return AccessToken(value, renew_at)


class AiodCatalogue:
    """The records of one platform at AIoD: find, register, replace, delete, list."""

    def __init__(self, settings: UploaderSettings) -> None:
        self.settings = settings
        self.platform = settings.aiod_platform
        self.policy = RetryPolicy(
            attempts=settings.retry_attempts,
            base_delay=settings.retry_base_delay,
            max_delay=settings.retry_max_delay,
            budget=settings.retry_budget,
        )
        # The retries are this module's (see `_call`); each request is sent once down there.
        self._once = RetryPolicy(attempts=1, budget=settings.retry_budget)
        self.api = ExternalApi(
            settings.api_root,
            name="aiod",
            timeout=settings.http_timeout,
            max_connections=settings.upload_concurrency + settings.prune_concurrency,
            retry=self._once,
        )
        self.auth = ExternalApi(
            settings.token_url, name="aiod-auth", timeout=settings.http_timeout, retry=self.policy
        )
        self.tokens = TokenSource(settings, self.auth)

    async def aclose(self) -> None:
        await self.api.aclose()
        await self.auth.aclose()

    # -- the calls -------------------------------------------------------------------------

    async def check_role(self) -> str:
        """The pre-flight: the client's token works and carries `platform_<platform>`.
        Returns the account's name; raises `RunFailure` saying what to fix."""
        url = self.settings.aiod_api_url.rstrip("/") + "/authorization_test"
        response = await self._call("GET", url)
        try:
            body = msgspec.json.decode(response.content, type=dict[str, Any])
        except msgspec.DecodeError:
            raise TransientError("AIoD's authorization_test did not answer JSON") from None
        roles = body.get("roles") or []
        role = f"platform_{self.platform}"
        if role not in roles:
            raise RunFailure(self._role_missing())
        return str(body.get("name", ""))

    async def find(self, pid: str) -> dict[str, Any] | None:
        """The record of `(platform, pid)`, or None when there is none (or it was deleted)."""
        try:
            response = await self._call("GET", f"platforms/{self.platform}/datasets/{pid}")
        except Refused as refused:
            if refused.status == 404:
                return None
            raise
        record: dict[str, Any] = msgspec.json.decode(response.content, type=dict[str, Any])
        return record

    async def register(self, body: dict[str, Any]) -> str:
        """POST: the new record's identifier; `Conflict` if the record already exists."""
        response = await self._call("POST", "datasets", json=body)
        answer = msgspec.json.decode(response.content, type=dict[str, Any])
        return str(answer["identifier"])

    async def replace(self, identifier: str, body: dict[str, Any]) -> None:
        await self._call("PUT", f"datasets/{identifier}", json=body)

    async def delete(self, identifier: str) -> bool:
        """Soft-delete a record; False when it was gone already."""
        try:
            await self._call("DELETE", f"datasets/{identifier}")
        except Refused as refused:
            if refused.status == 404:
                return False
            raise
        return True

    async def list_page(self, offset: int, limit: int) -> list[dict[str, Any]]:
        """One page of the platform's (published, live) records."""
        response = await self._call(
            "GET",
            f"platforms/{self.platform}/datasets",
            params={"offset": offset, "limit": limit},
        )
        page: list[dict[str, Any]] = msgspec.json.decode(
            response.content, type=list[dict[str, Any]]
        )
        return page

    # -- one call, with the statuses AIoD gives a meaning to ------------------------------

    async def _call(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        renewed = False

        async def once() -> httpx.Response:
            nonlocal renewed
            token = await self.tokens.get()
            try:
                return await self.api.request(
                    method,
                    url,
                    json=json,
                    params=params,
                    headers={"Authorization": f"Bearer {token}"},
                )
            except BudgetSpent as spent:
                # Sent once down there: the retrying is ours, one layer of it.
                failure = spent.last
            except httpx.HTTPStatusError as exc:
                failure = exc
            if not isinstance(failure, httpx.HTTPStatusError):
                raise failure  # a timeout or a lost connection: transient
            status = failure.response.status_code
            detail = _error_text(failure.response)
            if status == 401:
                if renewed:
                    raise RunFailure(
                        f"AIoD refused a fresh token of client {self.settings.aiod_client_id}"
                        f" ({detail}): check FERRY_AIOD_AUTH_URL and FERRY_AIOD_REALM point at"
                        " the Keycloak that FERRY_AIOD_API_URL trusts"
                    ) from None
                renewed = True
                await self.tokens.renew(token)
                raise TransientError("AIoD refused the token; renewed it") from None
            if status == 409 and method == "POST":
                match = _EXISTING.search(detail)
                raise Conflict(match.group(1) if match else None, detail) from None
            if status == 403 and detail.startswith(_UPLOAD_DENIED):
                raise RunFailure(self._role_missing()) from None
            if status < 500 and status not in (408, 409, 425, 429):
                raise Refused(status, detail) from None
            raise failure

        return await self.policy.run(once)

    def _role_missing(self) -> str:
        settings = self.settings
        return (
            f"the AIoD client {settings.aiod_client_id} lacks the role platform_{self.platform}:"
            f" grant it to the client's service account in Keycloak (realm {settings.aiod_realm}),"
            " or set FERRY_AIOD_PLATFORM to the platform this client may upload for"
        )


def _error_text(response: httpx.Response) -> str:
    """The server's own words: AIoD's `detail` (a text, or FastAPI's list of problems), or
    Keycloak's `error` / `error_description`; at most 1,000 characters."""
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return response.text[:1000] or response.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list):
            return "; ".join(_problem(p) for p in detail)[:1000]
        if detail is not None:
            return str(detail)[:1000]
        if "error" in body:
            described = body.get("error_description")
            return f"{body['error']}: {described}" if described else str(body["error"])
    return str(body)[:1000]


def _problem(problem: Any) -> str:
    if not isinstance(problem, dict):
        return str(problem)
    where = ".".join(str(part) for part in problem.get("loc", []))
    return f"{where}: {problem.get('msg', '')}"
