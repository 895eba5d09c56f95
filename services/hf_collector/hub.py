"""The client of the Hugging Face Hub API and of the dataset viewer's `/parquet`.

Every request goes through `shared.http.ExternalApi`, paced by the Hub's `RateLimit` /
`RateLimit-Policy` headers (it slows down before the window's budget runs out, and holds
everyone after a 429 for as long as `t=` / `Retry-After` says). The viewer is another
service upstream, with a pacer and a connection pool of its own.

Retries are this module's, one layer of them (each request is sent once by `ExternalApi`),
so that the statuses the Hub gives a meaning to are handled first: `RepoNotFound` (404, or
401 for a private repo), 409 on create (the repo exists; but "another conflicting
operation is in progress" is transient), and a 401 `Invalid credentials in Authorization
header`, which is the operator's to fix (`HubRunFailure`). A body that does not decode
(a page cut short) is transient: the same request is sent again.

Unlike hf-micro (reference B4): `private` is sent as a JSON boolean (as `visibility`), the
orgs of whoami are read as the objects they are, a space's settings path is `spaces`, and
every status keeps its own meaning instead of all becoming 400.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlencode

import httpx
import msgspec

from services.hf_collector.settings import CollectorSettings
from shared.contracts.aiod import ParquetFile
from shared.faults import AlreadyExists, InvalidArgument, NotFound
from shared.http import ExternalApi
from shared.retry import BudgetSpent, PermanentError, RetryPolicy, TransientError

log = logging.getLogger("ferry.hf_collector.hub")

T = TypeVar("T")

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
CONFLICTING_OPERATION = "another conflicting operation is in progress"
RepoType = Literal["dataset", "model", "space"]


class HubRunFailure(PermanentError):
    """Nothing can be read from the Hub until the operator fixes this (the message says how)."""


class HubRefused(PermanentError):
    """The Hub refused one request for good (400, 402, 403, ...)."""


# -- what the Hub sends -----------------------------------------------------------------------


class CardData(msgspec.Struct, forbid_unknown_fields=False):
    license: Any = None  # a string, a list, or something stranger


class HubItem(msgspec.Struct, forbid_unknown_fields=False):
    """A dataset of a listing page or of `/api/datasets/{id}` (the fields the sync uses)."""

    object_id: str = msgspec.field(name="_id")
    repo_id: str = msgspec.field(name="id")
    private: bool = False
    gated: bool | str = False
    disabled: bool = False
    created_at: str | None = msgspec.field(default=None, name="createdAt")
    last_modified: str | None = msgspec.field(default=None, name="lastModified")
    description: str | None = None
    card_data: CardData | None = msgspec.field(default=None, name="cardData")
    tags: list[str] = []

    @property
    def is_public(self) -> bool:
        """Listed in the public catalogue: neither private nor disabled."""
        return not self.private and not self.disabled

    @property
    def license(self) -> str | list[str] | None:
        value = self.card_data.license if self.card_data is not None else None
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return [v for v in value if isinstance(v, str)]
        return None


class _ParquetAnswer(msgspec.Struct, forbid_unknown_fields=False):
    parquet_files: list[ParquetFile] = []


class _OrgView(msgspec.Struct, forbid_unknown_fields=False):
    name: str = ""


class Account(msgspec.Struct, forbid_unknown_fields=False):
    """whoami-v2, read as the objects it holds (hf-micro panicked on `orgs`)."""

    name: str = ""
    type: str = ""
    fullname: str = ""
    orgs: list[_OrgView] = []


@dataclass(frozen=True)
class ListingPage:
    items: list[HubItem]
    next_url: str | None


# -- the client -------------------------------------------------------------------------------


class Hub:
    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        headers = {"Authorization": f"Bearer {settings.hf_token}"} if settings.hf_token else {}
        once = RetryPolicy(attempts=1, budget=settings.retry_budget)
        self.policy = RetryPolicy(
            attempts=settings.retry_attempts,
            base_delay=settings.retry_base_delay,
            max_delay=settings.retry_max_delay,
            budget=settings.retry_budget,
        )
        # A page holds hundreds of parquet lookups: each gets more attempts, so that one
        # unlucky lookup rarely sends the whole page round again.
        self.parquet_policy = replace(
            self.policy,
            attempts=max(settings.parquet_retry_attempts, settings.retry_attempts),
            budget=settings.retry_budget * 2,
        )
        self.api = ExternalApi(
            settings.hf_endpoint.rstrip("/"),
            name="hf-hub",
            headers=headers,
            timeout=settings.http_timeout,
            max_connections=8,  # listing pages and repository calls: a few at a time
            retry=once,
        )
        # The viewer sends no rate-limit headers: a pacer of its own loses nothing.
        self.viewer = ExternalApi(
            settings.hf_viewer_url.rstrip("/"),
            name="hf-viewer",
            headers=headers,
            timeout=settings.http_timeout,
            max_connections=settings.parquet_concurrency,
            retry=once,
        )
        self._whoami: tuple[Account, float] | None = None
        self._whoami_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self.api.aclose()
        await self.viewer.aclose()

    # -- datasets -------------------------------------------------------------------------

    def first_page_url(
        self,
        *,
        sort: str,
        author: str | None = None,
        search: str | None = None,
        filters: list[str] | None = None,
    ) -> str:
        params: list[tuple[str, str]] = [
            ("full", "true"),
            ("limit", str(self.settings.page_size)),
            ("sort", sort),
        ]
        if author:
            params.append(("author", author))
        if search:
            params.append(("search", search))
        params.extend(("filter", tag) for tag in filters or [])
        return f"{self.settings.hf_endpoint.rstrip('/')}/api/datasets?{urlencode(params)}"

    async def list_page(self, url: str) -> ListingPage:
        """One listing page, and the URL of the next (the `Link: rel="next"`), as given."""

        def read(response: httpx.Response) -> ListingPage:
            items = msgspec.json.decode(response.content, type=list[HubItem])
            following = response.links.get("next", {}).get("url")
            return ListingPage(items, following or None)

        return await self._call(self.api, "GET", url, read=read)

    async def dataset_info(self, repo_id: str) -> HubItem | None:
        """One dataset, or None when the Hub has no such repo visible to us."""
        try:
            return await self._call(
                self.api,
                "GET",
                f"/api/datasets/{_quoted(repo_id)}",
                read=lambda r: msgspec.json.decode(r.content, type=HubItem),
            )
        except NotFound:
            return None

    async def parquet_files(self, repo_id: str) -> list[ParquetFile]:
        """The dataset viewer's parquet files of a dataset; none when it has no conversion
        (or the viewer does not know the dataset), as the peer connector reads it."""
        no_files: list[ParquetFile] = []
        return await self._call(
            self.viewer,
            "GET",
            "/parquet",
            params={"dataset": repo_id},
            read=lambda r: msgspec.json.decode(r.content, type=_ParquetAnswer).parquet_files,
            policy=self.parquet_policy,
            # Unknown, private or gated (404), no conversion (501), refused (4xx): no files.
            answers={
                404: no_files,
                400: no_files,
                401: no_files,
                403: no_files,
                422: no_files,
                501: no_files,
            },
        )

    # -- account and repositories ---------------------------------------------------------

    async def whoami(self) -> Account:
        """The token's account, cached (`/api/whoami-v2` is intentionally strict)."""
        loop = asyncio.get_running_loop()
        async with self._whoami_lock:
            if self._whoami is not None and loop.time() < self._whoami[1]:
                return self._whoami[0]
            self._require_token("whoami")
            account = await self._call(
                self.api,
                "GET",
                "/api/whoami-v2",
                read=lambda r: msgspec.json.decode(r.content, type=Account),
            )
            self._whoami = (account, loop.time() + self.settings.whoami_cache_seconds)
            return account

    async def create_repo(
        self, repo_id: str, repo_type: RepoType, *, private: bool, space_sdk: str | None = None
    ) -> str:
        """Create a repository; its URL. `AlreadyExists` if it is there already."""
        self._require_token("create a repository")
        namespace, name = repo_id.split("/", 1)
        body: dict[str, Any] = {
            "name": name,
            "organization": namespace,
            "visibility": "private" if private else "public",
        }
        if repo_type != "model":
            body["type"] = repo_type
        if space_sdk is not None:
            body["sdk"] = space_sdk

        def read(response: httpx.Response) -> str:
            answer = msgspec.json.decode(response.content, type=dict[str, Any])
            return str(answer.get("url", ""))

        return await self._call(
            self.api, "POST", "/api/repos/create", json=body, read=read, what=repo_id
        )

    async def delete_repo(self, repo_id: str, repo_type: RepoType) -> None:
        self._require_token("delete a repository")
        namespace, name = repo_id.split("/", 1)
        body: dict[str, Any] = {"name": name, "organization": namespace}
        if repo_type != "model":
            body["type"] = repo_type
        await self._call(
            self.api, "DELETE", "/api/repos/delete", json=body, read=_nothing, what=repo_id
        )

    async def set_visibility(self, repo_id: str, repo_type: RepoType, *, private: bool) -> None:
        self._require_token("change a repository's visibility")
        path = f"/api/{repo_type}s/{_quoted(repo_id)}/settings"  # models, datasets, spaces
        body = {"visibility": "private" if private else "public"}
        await self._call(self.api, "PUT", path, json=body, read=_nothing, what=repo_id)

    def _require_token(self, action: str) -> None:
        if not self.settings.hf_token:
            raise HubRunFailure(f"to {action} the Hub needs a token: set FERRY_HF_TOKEN")

    # -- one call, with the statuses the Hub gives a meaning to ---------------------------

    async def _call(
        self,
        api: ExternalApi,
        method: str,
        url: str,
        *,
        read: Callable[[httpx.Response], T],
        params: dict[str, Any] | None = None,
        json: Any = None,
        policy: RetryPolicy | None = None,
        what: str | None = None,
        answers: dict[int, T] | None = None,
    ) -> T:
        """Send with retries; `answers` maps statuses that are answers, not failures."""

        async def once() -> T:
            try:
                response = await api.request(method, url, params=params, json=json)
            except BudgetSpent as spent:
                failure = spent.last
            except httpx.HTTPStatusError as exc:
                failure = exc
            else:
                try:
                    return read(response)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    raise TransientError(
                        f"{api.name} sent a body that does not decode: {exc}"
                    ) from None
            if isinstance(failure, httpx.HTTPStatusError):
                status = failure.response.status_code
                message = failure.response.headers.get("X-Error-Message", "")
                if answers is not None and status in answers and message != INVALID_CREDENTIALS:
                    return answers[status]
                raise _meaning(failure.response, what or httpx.URL(url).path) from None
            raise failure

        return await (policy or self.policy).run(once)


def _nothing(response: httpx.Response) -> None:
    del response


def _quoted(repo_id: str) -> str:
    return "/".join(quote(part, safe="") for part in repo_id.split("/", 1))


def _meaning(response: httpx.Response, what: str) -> Exception:
    """The exception an error response stands for (transient ones are re-raised as the
    HTTP error, which `shared.retry` classifies with its `Retry-After`)."""
    status = response.status_code
    code = response.headers.get("X-Error-Code", "")
    message = response.headers.get("X-Error-Message") or _error_text(response)
    if status == 401 and message == INVALID_CREDENTIALS:
        return HubRunFailure(
            f"the Hugging Face Hub refused the token ({INVALID_CREDENTIALS}):"
            " set FERRY_HF_TOKEN to a valid token"
        )
    if code == "RepoNotFound" or status == 404:
        return NotFound(f"{what}: {message or 'Repository not found'}")
    if status == 409:
        if CONFLICTING_OPERATION in message:
            return TransientError(f"{what}: {message}")
        return AlreadyExists(f"{what} already exists")
    if status == 401:
        return HubRunFailure(
            f"the Hugging Face Hub refused the request ({message}): check FERRY_HF_TOKEN"
        )
    if status == 400:
        return InvalidArgument(f"{what}: {message}")
    if status in (408, 425, 429) or status >= 500:
        return httpx.HTTPStatusError(message, request=response.request, response=response)
    return HubRefused(f"the Hub answered {status} for {what}: {message}")


def _error_text(response: httpx.Response) -> str:
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return response.text[:500]
    if isinstance(body, dict):
        for key in ("error", "error_description", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])[:500]
    return str(body)[:500]
