"""The Hugging Face Hub stand-in (`ferry sandbox hf-hub`), and the dataset viewer's `/parquet`.

Point `huggingface_hub` at it with `HfApi(endpoint=URL, token=TOKEN)` (or `HF_ENDPOINT`). What
it serves, as `reference/aiod-and-hf-hub.md` (B, C) describes the Hub:

    GET    /api/datasets                        listing: full, expand, sort (always descending),
                                                author, search, filter, gated, limit; JSON array,
                                                `Link: <absolute URL>; rel="next"` while more
    GET    /api/datasets/{ns}/{name}            one dataset (expand, blobs)
    GET    /api/datasets/{ns}/{name}/revision/{rev}
    GET    /api/whoami-v2
    POST   /api/repos/create                    {"name","organization","type",
                                                 "visibility"|"private"}
    DELETE /api/repos/delete                    {"name","organization","type"}
    POST   /api/repos/move                      {"fromRepo","toRepo","type"}: same `_id`
    PUT    /api/{models|datasets|spaces}/{ns}/{name}/settings   {"visibility"|"private","gated"}
    GET    /parquet?dataset=ID                  the dataset viewer (datasets-server) on this host

Errors carry `X-Error-Code` (RepoNotFound, RevisionNotFound) and `X-Error-Message`, and the
body `{"error": message}`. Private repos are hidden from anonymous callers (401 RepoNotFound)
and from other users (404 RepoNotFound); a token that is not the one accepted gets 401
`Invalid credentials in Authorization header` everywhere. The sandbox user (`sandbox-user`,
member of the org `ferry-sandbox`) owns the token and can see and change the repos of both.

Every response of the Hub (not of `/_sandbox/` hooks, nor of the dataset viewer, which is
another service upstream) has exactly one `RateLimit: "api";r=R;t=T` and one
`RateLimit-Policy: "fixed window";"api";q=Q;w=W` header, counted per caller (the token, or
the client address when anonymous) over fixed windows; a spent window answers 429 with r=0.

Test hooks: `GET /_sandbox/catalogue` (counts of the awkward cases), `GET /_sandbox/renames`
and `POST /_sandbox/renames {"count": N}` (rename N public datasets: new `id`, same `_id`),
and the faults of `services.sandbox.faults`.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from services.sandbox import faults as fault_injection
from services.sandbox.faults import FaultChange, Faults
from services.sandbox.hf_catalogue import (
    OWN_NAMESPACES,
    SANDBOX_ORG,
    SANDBOX_USER,
    SORT_FIELDS,
    Catalogue,
    HubDataset,
    ListingQuery,
    card_data,
    citation,
    created_text,
    decode_cursor,
    description,
    encode_cursor,
    file_size,
    iso,
    parquet_layout,
    siblings,
    used_storage,
)
from services.sandbox.server import BANNER, SandboxOptions, StandIn, count_argument, faults_of

DEFAULT_TOKEN = "hf_sandboxTokenForFerryLocalRuns000000"
DEFAULT_PORT = 9101
MAX_PAGE = 1000  # a larger `limit` still gets pages of this size, with a next link
BUCKET = "api"

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
NOT_LOGGED_IN = "Invalid username or password."
REPO_NOT_FOUND = "Repository not found"
DISABLED = "Access to this resource is disabled."
VIEWER_NOT_FOUND = (
    "The dataset does not exist, or is not accessible without authentication (private or"
    " gated). Please check the spelling of the dataset name or retry with authentication."
)
VIEWER_NO_PARQUET = "The parquet conversion is not available for this dataset."

# What a listing item holds: by default, with full=true, and what `expand` may ask for.
BASIC_FIELDS = (
    "author", "sha", "lastModified", "createdAt", "private", "gated", "disabled",
    "downloads", "likes", "trendingScore", "tags", "description",
)  # fmt: skip
FULL_FIELDS = (*BASIC_FIELDS, "cardData", "siblings", "citation", "paperswithcode_id")
INFO_FIELDS = (*FULL_FIELDS, "downloadsAllTime", "usedStorage")
EXPANDABLE = frozenset(
    (
        "author",
        "cardData",
        "citation",
        "createdAt",
        "description",
        "disabled",
        "downloads",
        "downloadsAllTime",
        "gated",
        "lastModified",
        "likes",
        "mainSize",
        "paperswithcode_id",
        "private",
        "resourceGroup",
        "sha",
        "siblings",
        "tags",
        "trendingScore",
        "usedStorage",
    )
)
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
# huggingface_hub's validate_repo_id: 1-96 of [\w.-], no `--` or `..`, no leading/trailing - or .
REPO_NAME = re.compile(r"^(?!.*(--|\.\.))[\w](?:[\w.-]{0,94}[\w])?$")


@dataclass(frozen=True)
class HubOptions:
    datasets: int = 1000
    seed: int = 0
    token: str = DEFAULT_TOKEN
    quota: int = 1000  # requests per window for the token (the Free plan's api bucket)
    anonymous_quota: int = 500  # ... and for an anonymous address
    window_seconds: int = 300
    page_size: int = 100  # when the caller gives no `limit`
    faults: tuple[FaultChange, ...] = ()


# -- callers and the rate limit ---------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    key: str  # what the rate limit counts by
    user: str | None  # None: anonymous
    namespaces: frozenset[str] = frozenset()


ANONYMOUS_NAMESPACES: frozenset[str] = frozenset()


@dataclass
class _Window:
    started: float
    used: int = 0


@dataclass
class FixedWindowLimiter:
    """The Hub's api bucket: `quota` requests per caller in each fixed window."""

    window_seconds: int
    clock: Callable[[], float] = time.monotonic
    windows: dict[str, _Window] = field(default_factory=dict)

    def take(self, key: str, quota: int) -> tuple[bool, int, int]:
        """(allowed, remaining, seconds to reset) after counting this request if allowed."""
        now = self.clock()
        window = self.windows.get(key)
        if window is None or now >= window.started + self.window_seconds:
            window = self.windows[key] = _Window(now)
        reset = max(1, math.ceil(window.started + self.window_seconds - now))
        if window.used >= quota:
            return False, 0, reset
        window.used += 1
        return True, quota - window.used, reset


@dataclass
class HubState:
    options: HubOptions
    catalogue: Catalogue
    limiter: FixedWindowLimiter

    def caller(self, request: web.Request) -> Caller | None:
        """Who calls; None when the token given is not the one accepted."""
        authorization = request.headers.get("Authorization", "")
        if not authorization:
            return Caller(key=f"ip:{request.remote}", user=None)
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.options.token:
            return None
        return Caller(
            key=f"token:{token.strip()}", user=SANDBOX_USER, namespaces=OWN_NAMESPACES_SET
        )

    def quota_of(self, caller: Caller) -> int:
        return self.options.quota if caller.user else self.options.anonymous_quota


OWN_NAMESPACES_SET = frozenset(OWN_NAMESPACES)
HUB = web.AppKey("hf_hub_state", HubState)


def hub_error(status: int, message: str, code: str | None = None) -> web.Response:
    """An error as the Hub sends it: headers for huggingface_hub, `{"error"}` for people."""
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return json_response({"error": message}, status=status, headers=headers)


def json_response(
    value: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=msgspec.json.encode(value),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def _rate_headers(
    response: web.StreamResponse, options: HubOptions, remaining: int, reset: int, quota: int
) -> None:
    # Assigned, not added: exactly one of each (huggingface_hub reads a single one).
    response.headers["RateLimit"] = f'"{BUCKET}";r={remaining};t={reset}'
    response.headers["RateLimit-Policy"] = (
        f'"fixed window";"{BUCKET}";q={quota};w={options.window_seconds}'
    )


Handler = Callable[[web.Request], Any]


@web.middleware
async def hub_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Rate limit and token check of the Hub's own paths; errors in the Hub's shape."""
    if fault_injection.is_control_path(request.path):
        return await _as_hub_errors(request, handler)
    state = request.app[HUB]
    caller = state.caller(request)
    is_viewer = request.path == "/parquet"
    if is_viewer:
        if caller is None:
            return hub_error(401, INVALID_CREDENTIALS)
        return await _as_hub_errors(request, handler)
    key = caller.key if caller else f"ip:{request.remote}"
    quota = state.quota_of(caller) if caller else state.options.anonymous_quota
    allowed, remaining, reset = state.limiter.take(key, quota)
    if not allowed:
        response: web.StreamResponse = hub_error(
            429,
            f'Rate limit of the "{BUCKET}" bucket reached: {quota} requests per'
            f" {state.options.window_seconds} s. Retry in {reset} s.",
        )
    elif caller is None:
        response = hub_error(401, INVALID_CREDENTIALS)
    else:
        response = await _as_hub_errors(request, handler)
    _rate_headers(response, state.options, remaining, reset, quota)
    return response


async def _as_hub_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except Refused as refused:  # a handler's check said no
        return refused.response
    except BadRequest as exc:
        return hub_error(400, str(exc))
    except web.HTTPException as exc:  # the router's own 404 / 405
        return hub_error(exc.status, exc.reason)
    return response


# -- rendering ------------------------------------------------------------------------------


def render(
    dataset: HubDataset, fields: Iterable[str], seed: int, *, blobs: bool = False
) -> dict[str, Any]:
    item: dict[str, Any] = {"_id": dataset.object_id, "id": dataset.repo_id}
    for name in fields:
        value = _field(dataset, name, seed, blobs)
        if value is not _ABSENT:
            item[name] = value
    return item


_ABSENT = object()


def _field(dataset: HubDataset, name: str, seed: int, blobs: bool) -> Any:
    if name == "author":
        return dataset.author
    if name == "sha":
        return dataset.sha
    if name == "lastModified":
        return iso(dataset.last_modified)
    if name == "createdAt":
        created = created_text(dataset)
        return _ABSENT if created is None else created
    if name == "private":
        return dataset.private
    if name == "gated":
        return dataset.gated
    if name == "disabled":
        return dataset.disabled
    if name == "downloads":
        return dataset.downloads
    if name == "downloadsAllTime":
        return dataset.downloads_all_time
    if name == "likes":
        return dataset.likes
    if name == "trendingScore":
        return dataset.trending_score
    if name == "tags":
        return dataset.tags()
    if name == "description":
        return description(seed, dataset)
    if name == "cardData":
        card = card_data(dataset)
        return _ABSENT if card is None else card
    if name == "siblings":
        return siblings(dataset, blobs=blobs)
    if name == "citation":
        text = citation(dataset)
        return _ABSENT if text is None else text
    if name == "paperswithcode_id":
        return (
            _ABSENT
            if dataset.index % 10 or not dataset.generated
            else dataset.repo_id.split("/")[1]
        )
    if name in ("usedStorage", "mainSize"):
        return used_storage(dataset)
    return _ABSENT  # resourceGroup: only for Enterprise orgs


# -- handlers -------------------------------------------------------------------------------


class BadRequest(Exception):
    """The request does not read: the Hub answers 400 with this message."""


class Refused(Exception):
    """A check a handler makes said no: `response` is the Hub's answer."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def _listing_request(request: web.Request, state: HubState) -> tuple[ListingQuery, list[str], int]:
    query = request.query
    full = _flag(query.get("full"))
    expand = query.getall("expand", [])
    if full and expand:
        raise BadRequest('"full" and "expand" cannot be used together')
    unknown = sorted(set(expand) - EXPANDABLE)
    if unknown:
        raise BadRequest(f"Invalid expand value(s): {', '.join(unknown)}")
    sort = query.get("sort", "")
    if sort and sort not in SORT_FIELDS:
        raise BadRequest(f"Invalid sort value: {sort} (one of {', '.join(SORT_FIELDS)})")
    limit_text = query.get("limit")
    limit = state.options.page_size
    if limit_text is not None:
        if not limit_text.isdigit() or int(limit_text) < 1:
            raise BadRequest(f"Invalid limit: {limit_text}")
        limit = min(int(limit_text), MAX_PAGE)
    gated_text = query.get("gated")
    gated = None if gated_text is None else _flag(gated_text)
    listing = ListingQuery(
        sort=sort,
        author=query.get("author"),
        search=tuple(query.getall("search", [])),
        tags=tuple(query.getall("filter", [])),
        gated=gated,
    )
    fields = list(expand) if expand else list(FULL_FIELDS if full else BASIC_FIELDS)
    return listing, fields, limit


async def list_datasets(request: web.Request) -> web.Response:
    state = request.app[HUB]
    caller = state.caller(request)
    assert caller is not None  # the middleware answered 401 already
    listing, fields, limit = _listing_request(request, state)
    after = None
    cursor = request.query.get("cursor")
    if cursor is not None:
        after = decode_cursor(cursor)
        if after is None:
            return hub_error(400, "Invalid cursor")
    page, next_key = state.catalogue.page(listing, caller.namespaces, after, limit)
    seed = state.options.seed
    body = msgspec.json.encode([render(d, fields, seed) for d in page])
    response = web.Response(body=body, content_type="application/json", charset="utf-8")
    if next_key is not None:
        params = [(k, v) for k, v in request.query.items() if k != "cursor"]
        params.append(("cursor", encode_cursor(next_key)))
        response.headers["Link"] = f'<{request.url.with_query(params)}>; rel="next"'
    return response


def _visible(state: HubState, caller: Caller, repo_id: str) -> HubDataset:
    """The dataset this caller may see; `Refused` with the Hub's answer otherwise."""
    dataset = state.catalogue.get(repo_id)
    if dataset is None:
        raise Refused(hub_error(404, REPO_NOT_FOUND, "RepoNotFound"))
    if dataset.private and dataset.author not in caller.namespaces:
        # Anonymous callers get 401 (they might see it once logged in); others 404.
        status = 401 if caller.user is None else 404
        raise Refused(hub_error(status, REPO_NOT_FOUND, "RepoNotFound"))
    if dataset.disabled:
        raise Refused(hub_error(403, DISABLED))
    return dataset


async def dataset_info(request: web.Request) -> web.Response:
    state = request.app[HUB]
    caller = state.caller(request)
    assert caller is not None
    repo_id = f"{request.match_info['ns']}/{request.match_info['name']}"
    found = _visible(state, caller, repo_id)
    revision = request.match_info.get("revision")
    if revision is not None and revision not in ("main", found.sha):
        return hub_error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
    expand = request.query.getall("expand", [])
    unknown = sorted(set(expand) - EXPANDABLE)
    if unknown:
        return hub_error(400, f"Invalid expand value(s): {', '.join(unknown)}")
    fields = expand or INFO_FIELDS
    blobs = _flag(request.query.get("blobs"))
    return json_response(render(found, fields, state.options.seed, blobs=blobs))


def whoami_body() -> dict[str, Any]:
    return {
        "type": "user",
        "id": "64f0c0ffee0000000000a001",
        "name": SANDBOX_USER,
        "fullname": "Sandbox User",
        "email": f"{SANDBOX_USER}@example.org",
        "emailVerified": True,
        "isPro": False,
        "canPay": False,
        "periodEnd": None,
        "avatarUrl": "/avatars/sandbox-user.svg",
        "orgs": [
            {
                "type": "org",
                "id": "64f0c0ffee0000000000b001",
                "name": SANDBOX_ORG,
                "fullname": "Ferry Sandbox",
                "email": None,
                "canPay": False,
                "periodEnd": None,
                "avatarUrl": "/avatars/ferry-sandbox.svg",
                "roleInOrg": "admin",
                "isEnterprise": False,
            }
        ],
        "auth": {
            "type": "access_token",
            "accessToken": {
                "displayName": "ferry-sandbox",
                "role": "write",
                "createdAt": "2026-01-01T00:00:00.000Z",
            },
        },
    }


async def whoami(request: web.Request) -> web.Response:
    caller = request.app[HUB].caller(request)
    if caller is None or caller.user is None:
        return hub_error(401, NOT_LOGGED_IN)
    return json_response(whoami_body())


class RepoRequest(msgspec.Struct):
    """The body of create and delete: the repo's name, namespace and type."""

    name: str
    organization: str | None = None
    type: str | None = None  # None: a model
    visibility: str | None = None
    private: bool | None = None
    sdk: str | None = None


class MoveRequest(msgspec.Struct):
    fromRepo: str  # the Hub's field names
    toRepo: str
    type: str | None = None


class SettingsRequest(msgspec.Struct):
    private: bool | None = None
    visibility: str | None = None
    gated: bool | str | None = None


async def _body(request: web.Request, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(await request.read(), type=kind)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"Invalid request body: {exc}") from None


def _url(request: web.Request, repo_type: str, repo_id: str) -> str:
    base = f"{request.scheme}://{request.host}"
    return f"{base}/{repo_id}" if repo_type == "model" else f"{base}/{repo_type}s/{repo_id}"


def _private_of(visibility: str | None, private: bool | None) -> bool | None:
    if visibility is not None:
        if visibility not in ("public", "private", "protected"):
            raise BadRequest(f"Invalid visibility: {visibility}")
        return visibility != "public"
    return private


def _signed_in(request: web.Request) -> Caller:
    """The signed-in caller; `Refused` (401) for an anonymous one."""
    caller = request.app[HUB].caller(request)
    if caller is None or caller.user is None:
        raise Refused(hub_error(401, NOT_LOGGED_IN))
    return caller


async def create_repo(request: web.Request) -> web.Response:
    state = request.app[HUB]
    caller = _signed_in(request)
    body: RepoRequest = await _body(request, RepoRequest)
    private = _private_of(body.visibility, body.private) or False
    repo_type = body.type or "model"
    if repo_type not in REPO_TYPES.values():
        return hub_error(400, f"Invalid repo type: {repo_type}")
    if repo_type == "space" and not body.sdk:
        return hub_error(400, "Invalid space: 'sdk' is required")
    if not REPO_NAME.match(body.name):
        return hub_error(400, f"Invalid repo name: {body.name}")
    namespace = body.organization or caller.user
    if namespace not in caller.namespaces:
        return hub_error(
            403,
            f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}"',
        )
    repo_id = f"{namespace}/{body.name}"
    url = _url(request, repo_type, repo_id)
    catalogue = state.catalogue
    if repo_type == "dataset":
        if catalogue.get(repo_id) is not None:
            return json_response(
                {"error": "You already created this dataset repo", "url": url}, 409
            )
        created = catalogue.create(repo_id, private=private, now=time.time())
        return json_response({"url": url, "name": repo_id, "id": created.object_id})
    if (repo_type, repo_id) in catalogue.other_repos:
        return json_response(
            {"error": f"You already created this {repo_type} repo", "url": url}, 409
        )
    catalogue.other_repos[(repo_type, repo_id)] = private
    return json_response({"url": url, "name": repo_id})


async def delete_repo(request: web.Request) -> web.Response:
    state = request.app[HUB]
    caller = _signed_in(request)
    body: RepoRequest = await _body(request, RepoRequest)
    repo_type = body.type or "model"
    repo_id = f"{body.organization or caller.user}/{body.name}"
    _check_owned(state, caller, repo_type, repo_id)
    if repo_type == "dataset":
        state.catalogue.delete(repo_id)
    else:
        del state.catalogue.other_repos[(repo_type, repo_id)]
    return json_response({})


def _check_owned(state: HubState, caller: Caller, repo_type: str, repo_id: str) -> None:
    """The repo exists and the caller may change it; `Refused` with the Hub's error if not."""
    if repo_type == "dataset":
        _visible(state, caller, repo_id)
    elif (repo_type, repo_id) not in state.catalogue.other_repos:
        raise Refused(hub_error(404, REPO_NOT_FOUND, "RepoNotFound"))
    if repo_id.split("/", 1)[0] not in caller.namespaces:
        raise Refused(hub_error(403, "You don't have the rights to change this repo"))


async def update_settings(request: web.Request) -> web.Response:
    state = request.app[HUB]
    caller = _signed_in(request)
    repo_type = REPO_TYPES[request.match_info["type"]]
    repo_id = f"{request.match_info['ns']}/{request.match_info['name']}"
    _check_owned(state, caller, repo_type, repo_id)
    body: SettingsRequest = await _body(request, SettingsRequest)
    private = _private_of(body.visibility, body.private)
    if body.gated not in (None, False, "auto", "manual"):
        return hub_error(400, f"Invalid gated value: {body.gated}")
    if repo_type != "dataset":
        if private is not None:
            state.catalogue.other_repos[(repo_type, repo_id)] = private
        return json_response({})
    dataset = state.catalogue.get(repo_id)
    assert dataset is not None
    if private is not None:
        dataset.private = private
    if body.gated is not None:
        dataset.gated = body.gated
    dataset.last_modified = time.time()
    state.catalogue.changed()
    return json_response({})


async def move_repo(request: web.Request) -> web.Response:
    state = request.app[HUB]
    caller = _signed_in(request)
    body: MoveRequest = await _body(request, MoveRequest)
    repo_type = body.type or "model"
    if repo_type != "dataset":
        return hub_error(400, "The sandbox moves dataset repos only")
    _check_owned(state, caller, repo_type, body.fromRepo)
    namespace, _, name = body.toRepo.partition("/")
    if not REPO_NAME.match(name):
        return hub_error(400, f"Invalid repo name: {body.toRepo}")
    if namespace not in caller.namespaces:
        return hub_error(403, f'You don\'t have the rights to move a repo to "{namespace}"')
    if state.catalogue.get(body.toRepo) is not None:
        return hub_error(409, f"A dataset repo {body.toRepo} already exists")
    dataset = state.catalogue.get(body.fromRepo)
    assert dataset is not None
    state.catalogue.move(dataset, body.toRepo, now=time.time())
    return json_response({})


async def viewer_parquet(request: web.Request) -> web.Response:
    """The dataset viewer's `GET /parquet?dataset=ID` (datasets-server.huggingface.co)."""
    state = request.app[HUB]
    caller = state.caller(request)
    assert caller is not None
    repo_id = request.query.get("dataset")
    if not repo_id:
        return json_response({"error": "Parameter 'dataset' is required"}, 422)
    dataset = state.catalogue.get(repo_id)
    if (
        dataset is None
        or dataset.disabled
        or (dataset.private and dataset.author not in caller.namespaces)
        or (dataset.gated and caller.user is None)
    ):
        return json_response({"error": VIEWER_NOT_FOUND}, 404)
    if not dataset.has_parquet:
        return json_response({"error": VIEWER_NO_PARQUET}, 501)
    base = f"{request.scheme}://{request.host}"
    files = [
        {
            "dataset": dataset.repo_id,
            "config": config,
            "split": split,
            "url": f"{base}/datasets/{dataset.repo_id}/resolve/refs%2Fconvert%2Fparquet"
            f"/{config}/{split}/0000.parquet",
            "filename": "0000.parquet",
            "size": file_size(dataset, config, split),
        }
        for config, splits in parquet_layout(dataset)
        for split in splits
    ]
    return json_response({"parquet_files": files, "pending": [], "failed": [], "partial": False})


# -- test hooks -----------------------------------------------------------------------------


class RenameRequest(msgspec.Struct, forbid_unknown_fields=True):
    count: int = 1


def _renamed(datasets: Iterable[HubDataset]) -> list[dict[str, Any]]:
    return [
        {"_id": d.object_id, "id": d.repo_id, "former_ids": list(d.former_ids)} for d in datasets
    ]


async def get_renames(request: web.Request) -> web.Response:
    return json_response(_renamed(request.app[HUB].catalogue.renamed()))


async def post_renames(request: web.Request) -> web.Response:
    try:
        body: RenameRequest = await _body(request, RenameRequest)
    except BadRequest as exc:
        return json_response({"error": str(exc)}, 400)
    if body.count < 0:
        return json_response({"error": "count must not be negative"}, 400)
    renamed = request.app[HUB].catalogue.rename_some(body.count, now=time.time())
    return json_response(_renamed(renamed))


async def get_catalogue(request: web.Request) -> web.Response:
    return json_response(catalogue_summary(request.app[HUB].catalogue))


def catalogue_summary(catalogue: Catalogue) -> dict[str, int]:
    """How many datasets of each awkward kind the catalogue holds (for tests and benchmarks)."""
    live = [d for d in catalogue.datasets if d is not None]
    own = OWN_NAMESPACES_SET
    return {
        "datasets": len(live),
        "public": sum(not d.private for d in live),
        # What a sync lists: public and not disabled.
        "listed": sum(not d.private and not d.disabled for d in live),
        "private": sum(d.private for d in live),
        "private_own": sum(d.private and d.author in own for d in live),
        "visible_with_token": sum(not d.private or d.author in own for d in live),
        "gated": sum(bool(d.gated) for d in live),
        "disabled": sum(d.disabled for d in live),
        "without_created_at": sum(d.created_at is None for d in live),
        "huge_descriptions": sum(d.huge_description for d in live),
        "license_lists": sum(d.generated and d.license_shape == 1 for d in live),
        "without_license": sum(not d.generated or d.license_shape == 2 for d in live),
        "with_parquet": sum(d.has_parquet for d in live),
        "renamed": sum(bool(d.former_ids) for d in live),
    }


# -- the application ------------------------------------------------------------------------


def create_app(options: HubOptions | None = None, faults: Faults | None = None) -> web.Application:
    options = options or HubOptions()
    app = web.Application(middlewares=[hub_middleware])
    app[HUB] = HubState(
        options=options,
        catalogue=Catalogue(options.datasets, options.seed),
        limiter=FixedWindowLimiter(options.window_seconds),
    )
    if faults is None:
        faults = Faults(seed=options.seed)
        for change in options.faults:
            faults.apply(change)
    fault_injection.install(app, faults, hub_error)
    app.router.add_get("/api/datasets", list_datasets)
    app.router.add_get("/api/datasets/{ns}/{name}", dataset_info)
    app.router.add_get("/api/datasets/{ns}/{name}/revision/{revision:.+}", dataset_info)
    app.router.add_get("/api/whoami-v2", whoami)
    app.router.add_post("/api/repos/create", create_repo)
    app.router.add_delete("/api/repos/delete", delete_repo)
    app.router.add_post("/api/repos/move", move_repo)
    app.router.add_put("/api/{type:models|datasets|spaces}/{ns}/{name}/settings", update_settings)
    app.router.add_get("/parquet", viewer_parquet)
    app.router.add_get("/_sandbox/catalogue", get_catalogue)
    app.router.add_get("/_sandbox/renames", get_renames)
    app.router.add_post("/_sandbox/renames", post_renames)
    app[BANNER] = lambda url: (
        f"hf-hub: listening on {url} (HF_ENDPOINT; dataset viewer: {url}/parquet);"
        f" token {options.token} (user {SANDBOX_USER}, org {SANDBOX_ORG});"
        f" {options.datasets} datasets, seed {options.seed};"
        f" rate limit {options.quota}/{options.anonymous_quota} per {options.window_seconds} s"
        " (token/anonymous)"
    )
    return app


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--hf-token", metavar="TOKEN", help=f"the token accepted ({DEFAULT_TOKEN})")
    group.add_argument(
        "--hf-quota",
        type=count_argument(1, 10**9),
        metavar="N",
        help="requests per window with the token (1000)",
    )
    group.add_argument(
        "--hf-anonymous-quota",
        type=count_argument(1, 10**9),
        metavar="N",
        help="... without a token (500)",
    )
    group.add_argument(
        "--hf-window",
        type=count_argument(1, 86_400),
        metavar="SECONDS",
        help="rate-limit window (300)",
    )
    group.add_argument(
        "--hf-page-size",
        type=count_argument(1, MAX_PAGE),
        metavar="N",
        help="listing page size without `limit` (100)",
    )


def from_options(options: SandboxOptions) -> web.Application:
    defaults = HubOptions()
    return create_app(
        HubOptions(
            datasets=options.datasets,
            seed=options.seed,
            token=options.flag("hf_token", defaults.token),
            quota=options.flag("hf_quota", defaults.quota),
            anonymous_quota=options.flag("hf_anonymous_quota", defaults.anonymous_quota),
            window_seconds=options.flag("hf_window", defaults.window_seconds),
            page_size=options.flag("hf_page_size", defaults.page_size),
        ),
        faults_of(options),
    )


STAND_IN = StandIn(
    name="hf-hub",
    default_port=DEFAULT_PORT,
    summary="Hugging Face Hub API and the dataset viewer's /parquet",
    build=from_options,
    add_arguments=add_arguments,
)
