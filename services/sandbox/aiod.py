"""The AI-on-Demand stand-in (`ferry sandbox aiod`): the REST API's dataset endpoints and the
Keycloak token endpoint that its connectors use, on one port.

Point `aiondemand` at it with `aiod.config.api_server = URL + "/"`,
`aiod.config.auth_server = URL + "/aiod-auth/"` (the trailing slash matters: the client joins
with `urljoin`), `aiod.config.client_id = CLIENT_ID`, then
`aiod.set_token(Token(client_secret=SECRET))`. As `reference/aiod-and-hf-hub.md` (A, D)
describes the real ones:

    POST   /aiod-auth/realms/aiod/protocol/openid-connect/token
           form: grant_type=client_credentials, client_id, client_secret (other fields ignored)
           -> {"access_token", "expires_in", "token_type": "Bearer", ...}; tokens expire
    GET    /authorization_test                       {"name", "roles"} (never versioned)
    GET    /v2/datasets?offset&limit[&schema=aiod][&date_modified_after|_before=YYYY-MM-DD]
    GET    /v2/datasets/{identifier}
    POST   /v2/datasets                              200 {"identifier": "data_..."}
    PUT    /v2/datasets/{identifier}                 full replace, 200 null
    DELETE /v2/datasets/{identifier}                 soft delete, 200 null
    GET    /v2/platforms/{platform}/datasets?offset&limit
    GET    /v2/platforms/{platform}/datasets/{platform_resource_identifier}
    GET    /v2/counts/datasets[?detailed=true]

Each `/v2/...` path also answers unversioned (the "latest" form). Errors are
`{"detail": ..., "reference": <hex>}` with the real texts; 401s add `WWW-Authenticate: Bearer`;
validation failures are FastAPI's 422 `{"detail": [{type, loc, msg, input}]}`.

Roles decide writes (A5): an account with a `platform_<name>` role is a connector, may post
only records of platform `<name>`, must give a platform id, is exempt from the upload rate
limit, and its records are published at once; other accounts may not set platform fields, and
their records start as drafts. Whoever creates a record may replace and delete it; the roles
`update_datasets` / `delete_datasets` allow it on any record.

Two clients by default (see `DEFAULT_CLIENTS`): `platform_huggingface` with the role
`platform_huggingface`, and `sdk-service` with no platform role (for the "missing role" case).

Test hooks:
- `GET /_sandbox/records`: every record, deleted ones too, in the read shape plus `_owner`
  and `_date_deleted`;
- `DELETE /_sandbox/records`: forget them all, and the users' upload counts;
- `POST /_sandbox/tokens/expire`: every token issued so far expires now;
- the faults of `services.sandbox.faults`.
From Python, `app[AIOD].records` (identifier -> `DatasetRecord`) is the same store.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import msgspec
from aiohttp import web

from services.sandbox import faults as fault_injection
from services.sandbox.faults import FaultChange, Faults
from services.sandbox.server import BANNER, SandboxOptions, StandIn, count_argument, faults_of

DEFAULT_PORT = 9102
REALM = "aiod"
TOKEN_PATH = "/aiod-auth/realms/{realm}/protocol/openid-connect/token"
IDENTIFIER_PATTERN = "^data_[a-zA-Z0-9]{24}$"
IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
IDENTIFIER_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
MAX_LIMIT = 1000
USER_UPLOADS_PER_WINDOW = 100  # ordinary users; platform connectors are exempt
USER_UPLOAD_WINDOW_SECONDS = 3600

# Platforms registered in the catalogue; posting another gives 412.
PLATFORMS = (
    "aiod", "ai4europe_cms", "ai4experiments", "example", "huggingface", "openml", "zenodo",
    "aibuilder", "bonseyes", "robotics4eu",
)  # fmt: skip
# huggingface_hub's validate_repo_id, which AIoD applies to Hugging Face platform ids.
HF_REPO_ID = re.compile(r"^(?!.*(--|\.\.))([\w.-]{1,96}/)?[\w.-]{1,96}$")

# The detail texts of the real service (A4, and its source).
NO_TOKEN = "No token found - This endpoint requires authorization. You need to be logged in."
INACTIVE_TOKEN = (
    "Invalid userinfo or inactive user - This endpoint requires authorization."
    " You need to be logged in."
)
NOT_PUBLISHED = "This asset is not published. It requires authentication to access."
NOT_ALLOWED_TO_VIEW = "You are not allowed to view this resource."
PID_NOT_NONE = "Platform resource identifier may not be none."
NO_PLATFORM_FIELDS = "No permission to set platform or platform resource identifier."
EDIT_DENIED = "You do not have permission to edit datasets."
DELETE_DENIED = "You do not have permission to delete datasets."
UNDER_SUBMISSION = "You cannot edit an asset under submission."
PLATFORM_XNOR = (
    "If platform is NULL, platform_resource_identifier should also be NULL, and vice versa."
)
BINARY_BLOB = "Setting `binary_blob` is forbidden. Consider using `content_url` instead."
UNEXPECTED = "Unexpected exception while processing your request. Please contact the maintainers: "


def upload_denied(platform: str | None) -> str:
    return f"No permission to upload assets for {platform} platform."


def unknown_platform(platform: str) -> str:
    return (
        f"Platform {platform} does not exist. You can register it using the POST platforms"
        " endpoint."
    )


def duplicate(identifier: str) -> str:
    return (
        "There already exists a dataset with the same platform and platform_resource_identifier,"
        f" with identifier={identifier}."
    )


def not_found(identifier: str, *, deleted: bool = False) -> str:
    tail = ", because it was deleted." if deleted else "."
    return f"Dataset '{identifier}' not found in the database{tail}"


def not_found_on_platform(pid: str, platform: str) -> str:
    return f"Dataset '{pid}' of '{platform}' not found in the database."


# -- accounts and tokens ----------------------------------------------------------------------


@dataclass(frozen=True)
class Client:
    """A Keycloak client with a service account (client-credentials grant)."""

    client_id: str
    secret: str
    roles: tuple[str, ...]

    @property
    def username(self) -> str:
        return f"service-account-{self.client_id}"

    @property
    def is_connector(self) -> bool:
        return any(role.startswith("platform") for role in self.roles)

    def may_upload_for(self, platform: str | None) -> bool:
        return platform is not None and f"platform_{platform}" in self.roles


DEFAULT_ROLES = ("default-roles-aiod", "offline_access", "uma_authorization")
DEFAULT_CLIENTS = (
    Client(
        "platform_huggingface", "sandbox-connector-secret", ("platform_huggingface", *DEFAULT_ROLES)
    ),
    Client("sdk-service", "sandbox-sdk-secret", DEFAULT_ROLES),
)


@dataclass(frozen=True)
class AiodOptions:
    clients: tuple[Client, ...] = DEFAULT_CLIENTS
    token_lifetime_seconds: int = 300
    user_uploads_per_hour: int = USER_UPLOADS_PER_WINDOW  # accounts without a platform role
    faults: tuple[FaultChange, ...] = ()
    seed: int = 0


@dataclass
class IssuedToken:
    client: Client
    expires_at: float


# -- records ------------------------------------------------------------------------------------


@dataclass
class DatasetRecord:
    """One dataset as the store keeps it: the body as last written, and its entry."""

    identifier: str
    body: dict[str, Any]
    owner: str  # username of the creator, who administers it
    status: str  # "published" or "draft"
    date_created: datetime
    date_modified: datetime
    date_deleted: datetime | None = None

    @property
    def platform(self) -> str | None:
        value = self.body.get("platform")
        return value if isinstance(value, str) else None

    @property
    def platform_resource_identifier(self) -> str | None:
        value = self.body.get("platform_resource_identifier")
        return value if isinstance(value, str) else None

    def read(self) -> dict[str, Any]:
        """The read shape: every field, defaults included, plus identifier and aiod_entry."""
        out: dict[str, Any] = {**READ_DEFAULTS, **self.body}
        if isinstance(out.get("keyword"), list):
            out["keyword"] = sorted(out["keyword"])  # the real service does not keep the order
        if isinstance(out.get("date_published"), str):
            out["date_published"] = _naive_utc(out["date_published"])
        out["identifier"] = self.identifier
        out["aiod_entry"] = {
            "editor": list(self.body.get("aiod_entry", {}).get("editor", [])),
            "status": self.status,
            "date_modified": _naive(self.date_modified),
            "date_created": _naive(self.date_created),
        }
        return out

    def sandbox_view(self) -> dict[str, Any]:
        view = self.read()
        view["_owner"] = self.owner
        view["_date_deleted"] = _naive(self.date_deleted) if self.date_deleted else None
        return view


# What a read returns for fields the body left out (a PUT resets them to these).
READ_DEFAULTS: dict[str, Any] = {
    "platform": None,
    "platform_resource_identifier": None,
    "name": None,
    "date_published": None,
    "same_as": None,
    "is_accessible_for_free": True,
    "version": None,
    "issn": None,
    "license": None,
    "description": None,
    "size": None,
    "spatial_coverage": None,
    "temporal_coverage": None,
    "keyword": [],
    "distribution": [],
    "alternate_name": [],
    "application_area": [],
    "citation": [],
    "contact": [],
    "creator": [],
    "funder": [],
    "has_part": [],
    "industrial_sector": [],
    "is_part_of": [],
    "media": [],
    "note": [],
    "relevant_link": [],
    "research_area": [],
    "scientific_domain": [],
}


def _naive(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat()


def _naive_utc(text: str) -> str:
    """`date_published` comes back in UTC without a timezone, as the real service sends it."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat()


@dataclass
class AiodState:
    options: AiodOptions
    clock: Callable[[], float] = time.time
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    records: dict[str, DatasetRecord] = field(default_factory=dict)
    uploads: dict[str, deque[float]] = field(default_factory=dict)
    # (platform, platform id) -> identifiers, so a lookup costs the same at 100,000 records
    # as at ten (the sync looks up every dataset it uploads).
    _platform_index: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    _indexed: int = 0  # len(records) when the index was last whole

    def client(self, client_id: str, secret: str) -> Client | None:
        for client in self.options.clients:
            if client.client_id == client_id and secrets.compare_digest(client.secret, secret):
                return client
        return None

    def issue(self, client: Client) -> tuple[str, int]:
        token = secrets.token_urlsafe(32)
        lifetime = self.options.token_lifetime_seconds
        self.tokens[token] = IssuedToken(client, self.clock() + lifetime)
        return token, lifetime

    def live(self) -> list[DatasetRecord]:
        return [r for r in self.records.values() if r.date_deleted is None]

    def by_platform_id(self, platform: str, pid: str) -> DatasetRecord | None:
        """The record of (platform, pid): a live one if any, else the last deleted one."""
        if len(self.records) != self._indexed:  # written to directly (tests): index afresh
            self._platform_index.clear()
            for stored in self.records.values():
                self.index(stored)
            self._indexed = len(self.records)
        found = None
        for identifier in self._platform_index.get((platform, pid), ()):
            record = self.records.get(identifier)
            if record is None or record.platform != platform:
                continue  # forgotten, or replaced under another platform id since
            if record.platform_resource_identifier != pid:
                continue
            if record.date_deleted is None:
                return record
            found = record
        return found

    def add(self, record: DatasetRecord) -> None:
        self.records[record.identifier] = record
        self.index(record)
        self._indexed += 1

    def index(self, record: DatasetRecord) -> None:
        """Make `record` found by its (platform, platform id), as its body says now."""
        key = (record.platform or "", record.platform_resource_identifier or "")
        identifiers = self._platform_index.setdefault(key, [])
        if record.identifier not in identifiers:
            identifiers.append(record.identifier)

    def new_identifier(self) -> str:
        while True:
            identifier = "data_" + "".join(secrets.choice(IDENTIFIER_ALPHABET) for _ in range(24))
            if identifier not in self.records:
                return identifier


AIOD = web.AppKey("aiod_state", AiodState)


# -- responses ------------------------------------------------------------------------------


def json_response(
    value: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=msgspec.json.encode(value),
        content_type="application/json",
        headers=headers,
    )


def aiod_error(status: int, detail: Any, headers: dict[str, str] | None = None) -> web.Response:
    """An error as the AIoD API sends it: `{"detail", "reference"}`."""
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer", **(headers or {})}
    if status == 500 and isinstance(detail, str) and not detail.startswith(UNEXPECTED):
        detail = UNEXPECTED + detail
    return json_response({"detail": detail, "reference": uuid.uuid4().hex}, status, headers)


def validation_error(problems: list[dict[str, Any]]) -> web.Response:
    """FastAPI's 422: a list of {type, loc, msg, input}."""
    return json_response({"detail": problems}, 422)


def _problem(kind: str, loc: list[str | int], msg: str, value: Any, **ctx: Any) -> dict[str, Any]:
    problem: dict[str, Any] = {"type": kind, "loc": loc, "msg": msg, "input": value}
    if ctx:
        problem["ctx"] = ctx
    return problem


class Refused(Exception):
    """A request answered with an error response instead of its result."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _fail(status: int, detail: Any) -> Refused:
    return Refused(aiod_error(status, detail))


@web.middleware
async def aiod_middleware(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except Refused as refused:
        return refused.response
    except web.HTTPException as exc:  # the router's own 404 / 405, in FastAPI's words
        return json_response(
            {"detail": "Not Found" if exc.status == 404 else exc.reason}, exc.status
        )
    return response


# -- authentication -------------------------------------------------------------------------


def caller(request: web.Request, *, required: bool) -> Client | None:
    """The client whose token the request carries; None when optional and absent or bad."""
    state = request.app[AIOD]
    authorization = request.headers.get("Authorization", "")
    if not authorization:
        if required:
            raise _fail(401, NO_TOKEN)
        return None
    token = authorization.removeprefix("Bearer ").strip()
    issued = state.tokens.get(token)
    if issued is None or issued.expires_at <= state.clock():
        if required:
            raise _fail(401, INACTIVE_TOKEN)
        return None  # the real service treats an inactive token as no user here
    return issued.client


async def token_endpoint(request: web.Request) -> web.Response:
    """Keycloak's token endpoint, client-credentials grant only."""
    state = request.app[AIOD]
    if request.match_info["realm"] != REALM:
        return json_response({"error": "Realm does not exist"}, 404)
    form = await request.post()
    grant_type = str(form.get("grant_type", ""))
    client_id = str(form.get("client_id", ""))
    secret = str(form.get("client_secret", ""))
    if not client_id and request.headers.get("Authorization", "").startswith("Basic "):
        client_id, secret = _basic_credentials(request.headers["Authorization"])
    if grant_type != "client_credentials":
        return json_response(
            {"error": "unsupported_grant_type", "error_description": "Unsupported grant_type"}, 400
        )
    client = state.client(client_id, secret)
    if client is None:
        return json_response(
            {
                "error": "unauthorized_client",
                "error_description": "Invalid client or Invalid client credentials",
            },
            401,
        )
    token, lifetime = state.issue(client)
    return json_response(
        {
            "access_token": token,
            "expires_in": lifetime,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": "openid profile email",
        }
    )


def _basic_credentials(header: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(header.removeprefix("Basic ").strip()).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    client_id, _, secret = decoded.partition(":")
    return client_id, secret


async def authorization_test(request: web.Request) -> web.Response:
    client = caller(request, required=True)
    assert client is not None
    return json_response({"name": client.username, "roles": list(client.roles)})


# -- validation of a dataset body --------------------------------------------------------------

_STRING_LIMITS = {
    "platform": 64,
    "platform_resource_identifier": 256,
    "name": 256,
    "same_as": 256,
    "version": 256,
    "issn": 8,
    "license": 256,
}
_LIST_FIELDS = (
    "keyword", "distribution", "alternate_name", "application_area", "citation", "contact",
    "creator", "funder", "has_part", "industrial_sector", "is_part_of", "media", "note",
    "relevant_link", "research_area", "scientific_domain",
)  # fmt: skip
_DESCRIPTION_LIMIT = 65535
_DISTRIBUTION_LIMITS = {"content_url": 1800, "description": 1800, "name": 256}


def validate_body(value: Any) -> dict[str, Any]:
    """The body checked the way FastAPI's models check it: Refused with a 422 if not valid."""
    if not isinstance(value, dict):
        raise Refused(
            validation_error(
                [
                    _problem(
                        "model_attributes_type",
                        ["body"],
                        "Input should be a valid dictionary or object to extract fields from",
                        value,
                    )
                ]
            )
        )
    problems: list[dict[str, Any]] = []
    if "name" not in value:
        problems.append(_problem("missing", ["body", "name"], "Field required", value))
    for name, limit in _STRING_LIMITS.items():
        if value.get(name) is not None:
            _check_string(problems, ["body", name], value[name], limit)
    platform = value.get("platform")
    if isinstance(platform, str) and platform != platform.lower():
        problems.append(
            _problem(
                "value_error", ["body", "platform"], "Value error, must be lower case", platform
            )
        )
    description = value.get("description")
    if description is not None:
        if not isinstance(description, dict):
            problems.append(
                _problem(
                    "model_type",
                    ["body", "description"],
                    "Input should be a valid dictionary",
                    description,
                )
            )
        else:
            for part in ("plain", "html"):
                if description.get(part) is not None:
                    _check_string(
                        problems,
                        ["body", "description", part],
                        description[part],
                        _DESCRIPTION_LIMIT,
                    )
    for name in _LIST_FIELDS:
        if value.get(name) is not None and not isinstance(value[name], list):
            problems.append(
                _problem("list_type", ["body", name], "Input should be a valid list", value[name])
            )
    if isinstance(value.get("keyword"), list):
        for index, keyword in enumerate(value["keyword"]):
            _check_string(problems, ["body", "keyword", index], keyword, 256)
    if isinstance(value.get("distribution"), list):
        for index, item in enumerate(value["distribution"]):
            _check_distribution(problems, index, item)
    if value.get("is_accessible_for_free") is not None and not isinstance(
        value["is_accessible_for_free"], bool
    ):
        problems.append(
            _problem(
                "bool_type",
                ["body", "is_accessible_for_free"],
                "Input should be a valid boolean",
                value["is_accessible_for_free"],
            )
        )
    if value.get("date_published") is not None and not _is_datetime(value["date_published"]):
        problems.append(
            _problem(
                "datetime_from_date_parsing",
                ["body", "date_published"],
                "Input should be a valid datetime or date",
                value["date_published"],
            )
        )
    entry = value.get("aiod_entry")
    if entry is not None:
        if not isinstance(entry, dict):
            problems.append(
                _problem(
                    "model_type",
                    ["body", "aiod_entry"],
                    "Input should be a valid dictionary",
                    entry,
                )
            )
        else:
            for key in entry:
                if key != "editor":  # v2's create model is {editor} with extra="forbid"
                    problems.append(
                        _problem(
                            "extra_forbidden",
                            ["body", "aiod_entry", key],
                            "Extra inputs are not permitted",
                            entry[key],
                        )
                    )
    if problems:
        raise Refused(validation_error(problems))
    return value


def _check_string(
    problems: list[dict[str, Any]], loc: list[str | int], value: Any, limit: int
) -> None:
    if not isinstance(value, str):
        problems.append(_problem("string_type", loc, "Input should be a valid string", value))
    elif len(value) > limit:
        problems.append(
            _problem(
                "string_too_long",
                loc,
                f"String should have at most {limit} characters",
                value,
                max_length=limit,
            )
        )


def _check_distribution(problems: list[dict[str, Any]], index: int, item: Any) -> None:
    loc: list[str | int] = ["body", "distribution", index]
    if not isinstance(item, dict):
        problems.append(_problem("model_type", loc, "Input should be a valid dictionary", item))
        return
    if item.get("content_url") is None:
        problems.append(_problem("missing", [*loc, "content_url"], "Field required", item))
    for name, limit in _DISTRIBUTION_LIMITS.items():
        if item.get(name) is not None:
            _check_string(problems, [*loc, name], item[name], limit)
    size = item.get("content_size_kb")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        problems.append(
            _problem("int_type", [*loc, "content_size_kb"], "Input should be a valid integer", size)
        )


def _is_datetime(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


async def _read_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise Refused(
            validation_error([_problem("json_invalid", ["body", 0], "JSON decode error", {})])
        ) from None
    return validate_body(value)


def check_upload_role(client: Client, body: dict[str, Any]) -> None:
    """A5's rules for who may register which platform's records (A4's 403s on POST)."""
    platform = body.get("platform")
    pid = body.get("platform_resource_identifier")
    if client.is_connector:
        if not client.may_upload_for(platform):
            raise _fail(403, upload_denied(platform))
        if pid is None:
            raise _fail(403, PID_NOT_NONE)
    elif platform is not None or pid is not None:
        raise _fail(403, NO_PLATFORM_FIELDS)


def check_constraints(body: dict[str, Any]) -> None:
    """What the database refuses, on POST and PUT alike (A4's 400 and 412)."""
    platform = body.get("platform")
    pid = body.get("platform_resource_identifier")
    if (platform is None) != (pid is None):
        raise _fail(400, PLATFORM_XNOR)
    if any(
        item.get("binary_blob") for item in body.get("distribution") or [] if isinstance(item, dict)
    ):
        raise _fail(400, BINARY_BLOB)
    if platform is not None and platform not in PLATFORMS:
        raise _fail(412, unknown_platform(platform))
    if platform == "huggingface" and not HF_REPO_ID.match(str(pid)):
        raise _fail(
            400,
            f"platform_resource_identifier '{pid}' is not a valid Hugging Face repository"
            " identifier.",
        )


def _check_duplicate(state: AiodState, body: dict[str, Any], itself: str | None = None) -> None:
    platform, pid = body.get("platform"), body.get("platform_resource_identifier")
    if platform is None or pid is None:
        return
    existing = state.by_platform_id(platform, pid)
    if existing is not None and existing.date_deleted is None and existing.identifier != itself:
        raise _fail(409, duplicate(existing.identifier))


def _check_upload_rate(state: AiodState, client: Client) -> None:
    """Ordinary users: 100 uploads (by default) per rolling hour; connectors are exempt."""
    if client.is_connector:
        return
    now = state.clock()
    recent = state.uploads.setdefault(client.username, deque())
    while recent and recent[0] <= now - USER_UPLOAD_WINDOW_SECONDS:
        recent.popleft()
    quota = state.options.user_uploads_per_hour
    if len(recent) >= quota:
        retry_after = int(recent[0] + USER_UPLOAD_WINDOW_SECONDS - now) + 1
        raise Refused(
            aiod_error(
                429,
                f"Too many uploads: at most {quota} per {USER_UPLOAD_WINDOW_SECONDS} s.",
                {"Retry-After": str(retry_after)},
            )
        )
    recent.append(now)


# -- dataset handlers -----------------------------------------------------------------------


def _identifier(request: web.Request) -> str:
    identifier = request.match_info["identifier"]
    if not IDENTIFIER.match(identifier):
        raise Refused(
            validation_error(
                [
                    _problem(
                        "string_pattern_mismatch",
                        ["path", "identifier"],
                        f"String should match pattern '{IDENTIFIER_PATTERN}'",
                        identifier,
                        pattern=IDENTIFIER_PATTERN,
                    )
                ]
            )
        )
    return identifier


def _existing(state: AiodState, identifier: str) -> DatasetRecord:
    record = state.records.get(identifier)
    if record is None:
        raise _fail(404, not_found(identifier))
    if record.date_deleted is not None:
        raise _fail(404, not_found(identifier, deleted=True))
    return record


def _readable(record: DatasetRecord, client: Client | None) -> dict[str, Any]:
    if record.status != "published":
        if client is None:
            raise _fail(401, NOT_PUBLISHED)
        if client.username != record.owner and "read_datasets" not in client.roles:
            raise _fail(403, NOT_ALLOWED_TO_VIEW)
    return record.read()


def _check_schema(request: web.Request) -> None:
    schema = request.query.get("schema", "aiod")
    if schema != "aiod":
        raise _fail(400, f"Invalid schema {schema}. Expected aiod")


def _pagination(request: web.Request) -> tuple[int, int]:
    problems = []
    values = {}
    for name, default in (("offset", 0), ("limit", 10)):
        text = request.query.get(name)
        if text is None:
            values[name] = default
            continue
        try:
            values[name] = int(text)
        except ValueError:
            problems.append(
                _problem(
                    "int_parsing",
                    ["query", name],
                    "Input should be a valid integer, unable to parse string as an integer",
                    text,
                )
            )
            continue
        if values[name] < 0:
            problems.append(
                _problem(
                    "greater_than_equal",
                    ["query", name],
                    "Input should be greater than or equal to 0",
                    text,
                    ge=0,
                )
            )
    if values.get("limit", 0) > MAX_LIMIT:
        problems.append(
            _problem(
                "less_than_equal",
                ["query", "limit"],
                f"Input should be less than or equal to {MAX_LIMIT}",
                request.query["limit"],
                le=MAX_LIMIT,
            )
        )
    if problems:
        raise Refused(validation_error(problems))
    return values["offset"], values["limit"]


def _date_filter(request: web.Request, name: str) -> datetime | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise Refused(
            validation_error(
                [
                    _problem(
                        "date_from_datetime_parsing",
                        ["query", name],
                        "Input should be a valid date",
                        text,
                    )
                ]
            )
        ) from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def list_datasets(request: web.Request) -> web.Response:
    state = request.app[AIOD]
    caller(request, required=False)
    _check_schema(request)
    offset, limit = _pagination(request)
    after = _date_filter(request, "date_modified_after")
    before = _date_filter(request, "date_modified_before")
    platform = request.match_info.get("platform")
    if platform is not None and platform not in PLATFORMS:
        raise _fail(400, f"platform '{platform}' not recognized.")
    chosen = [
        r
        for r in state.live()
        if r.status == "published"
        and (platform is None or r.platform == platform)
        and (after is None or r.date_modified >= after)
        and (before is None or r.date_modified < before)
    ]
    return json_response([r.read() for r in chosen[offset : offset + limit]])


async def get_dataset(request: web.Request) -> web.Response:
    state = request.app[AIOD]
    client = caller(request, required=False)
    _check_schema(request)
    record = _existing(state, _identifier(request))
    return json_response(_readable(record, client))


async def get_dataset_of_platform(request: web.Request) -> web.Response:
    state = request.app[AIOD]
    client = caller(request, required=False)
    _check_schema(request)
    platform = request.match_info["platform"]
    pid = request.match_info["pid"]
    if platform not in PLATFORMS:
        raise _fail(400, f"platform '{platform}' not recognized.")
    record = state.by_platform_id(platform, pid)
    if record is None or record.date_deleted is not None:
        raise _fail(404, not_found_on_platform(pid, platform))
    return json_response(_readable(record, client))


async def register_dataset(request: web.Request) -> web.Response:
    state = request.app[AIOD]
    client = caller(request, required=True)
    assert client is not None
    body = await _read_body(request)
    check_upload_role(client, body)
    check_constraints(body)
    _check_duplicate(state, body)
    _check_upload_rate(state, client)
    now = datetime.fromtimestamp(state.clock(), UTC)
    identifier = state.new_identifier()
    stored = dict(body)
    if stored.get("platform") is None:  # a user's record: AIoD is its platform
        stored["platform"] = "aiod"
        stored["platform_resource_identifier"] = identifier
    state.add(
        DatasetRecord(
            identifier=identifier,
            body=stored,
            owner=client.username,
            status="published" if client.is_connector else "draft",
            date_created=now,
            date_modified=now,
        )
    )
    return json_response({"identifier": identifier})


async def replace_dataset(request: web.Request) -> web.Response:
    state = request.app[AIOD]
    client = caller(request, required=True)
    assert client is not None
    identifier = _identifier(request)
    body = await _read_body(request)
    record = _existing(state, identifier)
    if client.username != record.owner and "update_datasets" not in client.roles:
        raise _fail(403, EDIT_DENIED)
    if record.status == "submitted":
        raise _fail(403, UNDER_SUBMISSION)
    check_constraints(body)  # the role rules are the POST's only, as in the real service
    _check_duplicate(state, body, itself=identifier)
    record.body = dict(body)  # a full replace: what is left out goes back to its default
    state.index(record)
    record.date_modified = datetime.fromtimestamp(state.clock(), UTC)
    return json_response(None)


async def delete_dataset(request: web.Request) -> web.Response:
    state = request.app[AIOD]
    client = caller(request, required=True)
    assert client is not None
    record = _existing(state, _identifier(request))
    if client.username != record.owner and "delete_datasets" not in client.roles:
        raise _fail(403, DELETE_DENIED)
    record.date_deleted = datetime.fromtimestamp(state.clock(), UTC)
    return json_response(None)


async def count_datasets(request: web.Request) -> web.Response:
    state = request.app[AIOD]
    published = [r for r in state.live() if r.status == "published"]
    if request.query.get("detailed", "false").lower() != "true":
        return json_response(len(published))
    counts: dict[str, int] = {}
    for record in published:
        key = record.platform or "aiod"
        counts[key] = counts.get(key, 0) + 1
    return json_response(counts)


# -- test hooks -----------------------------------------------------------------------------


async def sandbox_records(request: web.Request) -> web.Response:
    state = request.app[AIOD]
    return json_response([r.sandbox_view() for r in state.records.values()])


async def sandbox_forget_records(request: web.Request) -> web.Response:
    state = request.app[AIOD]
    state.records.clear()
    state.uploads.clear()
    return json_response({"records": 0})


async def sandbox_expire_tokens(request: web.Request) -> web.Response:
    state = request.app[AIOD]
    now = state.clock()
    for issued in state.tokens.values():
        issued.expires_at = min(issued.expires_at, now)
    return json_response({"expired": len(state.tokens)})


# -- the application ------------------------------------------------------------------------


def create_app(options: AiodOptions | None = None, faults: Faults | None = None) -> web.Application:
    options = options or AiodOptions()
    app = web.Application(middlewares=[aiod_middleware])
    app[AIOD] = AiodState(options)
    if faults is None:
        faults = Faults(seed=options.seed)
        for change in options.faults:
            faults.apply(change)
    fault_injection.install(app, faults, aiod_error)
    router = app.router
    router.add_post(TOKEN_PATH.format(realm="{realm}"), token_endpoint)
    router.add_get("/authorization_test", authorization_test)
    for prefix in ("/v2", ""):
        router.add_get(f"{prefix}/datasets", list_datasets)
        router.add_post(f"{prefix}/datasets", register_dataset)
        router.add_get(f"{prefix}/datasets/{{identifier}}", get_dataset)
        router.add_put(f"{prefix}/datasets/{{identifier}}", replace_dataset)
        router.add_delete(f"{prefix}/datasets/{{identifier}}", delete_dataset)
        router.add_get(f"{prefix}/platforms/{{platform}}/datasets", list_datasets)
        router.add_get(f"{prefix}/platforms/{{platform}}/datasets/{{pid}}", get_dataset_of_platform)
        router.add_get(f"{prefix}/counts/datasets", count_datasets)
    router.add_get("/_sandbox/records", sandbox_records)
    router.add_delete("/_sandbox/records", sandbox_forget_records)
    router.add_post("/_sandbox/tokens/expire", sandbox_expire_tokens)
    app[BANNER] = lambda url: banner(url, options)
    return app


def banner(url: str, options: AiodOptions) -> str:
    clients = "; ".join(
        f"client {c.client_id} secret {c.secret} ("
        + (", ".join(r for r in c.roles if r.startswith("platform")) or "no platform role")
        + ")"
        for c in options.clients
    )
    return (
        f"aiod: listening on {url}/ (api_server; auth_server {url}/aiod-auth/, realm {REALM});"
        f" {clients}; tokens last {options.token_lifetime_seconds} s"
    )


def add_arguments(group: argparse._ArgumentGroup) -> None:
    connector, roleless = DEFAULT_CLIENTS
    group.add_argument(
        "--aiod-client",
        action="append",
        metavar="ID:SECRET[:ROLE,...]",
        help=f"a client it accepts, with its roles (replaces the defaults: {connector.client_id}"
        f":{connector.secret}:platform_huggingface and {roleless.client_id}:{roleless.secret})",
    )
    group.add_argument(
        "--aiod-token-lifetime",
        type=count_argument(1, 86_400),
        metavar="SECONDS",
        help="token lifetime (300)",
    )


def parse_client(text: str) -> Client:
    """`ID:SECRET[:ROLE,ROLE]` as `--aiod-client` takes it; ValueError if malformed."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValueError(f"--aiod-client takes ID:SECRET[:ROLE,...], not {text!r}")
    roles = tuple(r for r in parts[2].split(",") if r) if len(parts) == 3 else ()
    return Client(parts[0], parts[1], (*roles, *DEFAULT_ROLES))


def from_options(options: SandboxOptions) -> web.Application:
    given: list[str] = options.flag("aiod_client", [])
    return create_app(
        AiodOptions(
            clients=tuple(parse_client(text) for text in given) or DEFAULT_CLIENTS,
            token_lifetime_seconds=options.flag(
                "aiod_token_lifetime", AiodOptions.token_lifetime_seconds
            ),
            seed=options.seed,
        ),
        faults_of(options),
    )


STAND_IN = StandIn(
    name="aiod",
    default_port=DEFAULT_PORT,
    summary="AI-on-Demand REST API (v2 datasets) and its Keycloak token endpoint",
    build=from_options,
    add_arguments=add_arguments,
)
