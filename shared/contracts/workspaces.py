"""Contracts of the workspace store's queues: HumanFirst workspaces listed, read, created,
imported and exported (request/reply, `workspaces.*`).

Workspaces are kept apart by HumanFirst `namespace` and `integration_id`; every id is
checked here (`check_id`), at the edge, and again by the store before it touches a path.

Imports and exports carry the workspace itself as chunks (`shared.chunks`) on a private
transfer queue named by `transfer_id`; the request only says where, and how it is encoded.

Error replies name what went wrong by their first word, the kind of failure
(`shared.faults`: `NotFound: ...`, `InvalidArgument: ...`).
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

import msgspec

from shared.contracts.base import Contract, Reply, ShortText
from shared.faults import InvalidArgument

MAX_ID_LENGTH = 128
# Letters, digits and `_ . @ + = -`, starting with a letter or a digit: no separators, no
# `.`/`..`, no hidden files, nothing a file system or a shell reads specially.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@+=-]{0,127}$"
_ID = re.compile(ID_PATTERN)

WorkspaceId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, max_length=MAX_ID_LENGTH)]
TransferId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$")]
IdKind = Literal["namespace", "integration_id", "workspace_id"]


def check_id(kind: IdKind, value: str) -> str:
    """`value` if it is a safe id; otherwise `InvalidArgument` saying what is wrong with it
    (shown to HumanFirst and operators, so specific, and never echoing a huge value)."""
    if not value:
        raise InvalidArgument(f"{kind} is empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(
            f"{kind} is {len(value)} characters long; at most {MAX_ID_LENGTH} are allowed"
        )
    if "\x00" in value:
        raise InvalidArgument(f"{kind} contains a NUL character")
    if "/" in value or "\\" in value:
        raise InvalidArgument(f"{kind} {value!r} contains a path separator")
    if value in (".", ".."):
        raise InvalidArgument(f"{kind} {value!r} is not an id")
    if not _ID.match(value):
        raise InvalidArgument(
            f"{kind} {value!r} is not an id: use letters, digits and _ . @ + = -,"
            " starting with a letter or a digit"
        )
    return value


def slug_of(name: str) -> str:
    """A workspace id made from a display name ("Bank FAQ (v2)" -> "bank-faq-v2"), or ""
    when the name has no letters or digits to make one from."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:MAX_ID_LENGTH].rstrip("-")


class WorkspaceInfo(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    id: str
    name: str = ""
    description: str = ""


class Scoped(Contract, kw_only=True):
    """A request about the workspaces of one HumanFirst integration."""

    namespace: WorkspaceId
    integration_id: WorkspaceId


class WorkspaceList(Scoped, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "workspaces.list"


class WorkspaceListReply(Reply, kw_only=True):
    workspaces: list[WorkspaceInfo] = []


class WorkspaceGet(Scoped, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "workspaces.get"

    workspace_id: WorkspaceId


class WorkspaceCreate(Scoped, kw_only=True):
    """Create a blank workspace; `workspace_id` None: one is made from the name."""

    ROUTING_KEY: ClassVar[str] = "workspaces.create"

    workspace_id: WorkspaceId | None = None
    name: ShortText = ""
    description: ShortText = ""


class WorkspaceReply(Reply, kw_only=True):
    workspace: WorkspaceInfo | None = None


class WorkspaceImport(Scoped, kw_only=True):
    """Replace the workspace's training data with the HumanFirst JSON that arrives as
    chunks on the transfer queue `transfer_id` (gzip-compressed when `gzip`)."""

    ROUTING_KEY: ClassVar[str] = "workspaces.import"

    workspace_id: WorkspaceId
    transfer_id: TransferId
    gzip: bool = False


class WorkspaceImportReply(Reply, kw_only=True):
    size: int = 0  # bytes of HumanFirst JSON received (uncompressed)
    examples: int = 0  # examples stored
    kept_examples: int = 0  # of which kept from the stored workspace (unlabelled)


class WorkspaceExport(Scoped, kw_only=True):
    """Send the workspace's HumanFirst JSON as chunks to the transfer queue `transfer_id`
    (which the asker declared and consumes), gzip-compressed when `gzip`."""

    ROUTING_KEY: ClassVar[str] = "workspaces.export"

    workspace_id: WorkspaceId
    transfer_id: TransferId
    gzip: bool = False


class WorkspaceExportReply(Reply, kw_only=True):
    chunks: int = 0
    size: int = 0  # bytes sent (compressed when gzip)
    sha256: str = ""
