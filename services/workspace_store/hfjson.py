"""HumanFirst JSON workspaces: structural validation, and the reconciliation of an import
with the stored workspace (docs/workspaces.md states the rule).

Workspaces are large (HumanFirst sends up to 200 MiB), so they are never turned into
Python objects whole: the file is mapped, its top level and its examples are decoded as
`msgspec.Raw` views into the mapping, and each item is decoded (validated) on its own and
dropped at once. What stays in memory is one small view per example.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO

import msgspec

from shared.faults import FailedPrecondition, Fault, InvalidArgument

# What HumanFirst owns: an import replaces these wholesale.
TRAINING_KEYS = frozenset({"intents", "entities", "tags"})
EXAMPLES = "examples"
Strings = dict[str, str]


# The stored workspace is not HumanFirst JSON any more (edited by hand?).
StoredWorkspaceInvalid = FailedPrecondition


# -- the shapes checked ------------------------------------------------------------------


class _Shape(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    pass


class TagRef(_Shape):
    id: str | None = None
    name: str | None = None


class ExampleIntent(_Shape):
    intent_id: str
    negative: bool = False


class CharacterSpan(_Shape):
    from_character: int
    to_character: int


class EntityPart(_Shape):
    name: str
    text: str
    entity_id: str | None = None
    role: str | None = None
    span: CharacterSpan | None = None
    value: str | None = None
    value_id: str | None = None


class Part(_Shape):
    text: str | None = None
    entity: EntityPart | None = None


class Context(_Shape):
    context_id: str | None = None
    type: str | None = None
    role: str | None = None


class Example(_Shape):
    text: str
    id: str | None = None
    intents: list[ExampleIntent] | None = None
    entities: list[EntityPart] | None = None
    parts: list[Part] | None = None
    tags: list[TagRef] | None = None
    metadata: Strings | None = None
    context: Context | None = None
    created_at: str | None = None
    updated_at: str | None = None
    deleted_at: str | None = None

    @property
    def labelled(self) -> bool:
        return bool(self.intents)


class Intent(_Shape):
    name: str
    id: str | None = None
    parent_intent_id: str | None = None
    description: str | None = None
    metadata: Strings | None = None
    tags: list[TagRef] | None = None


class Synonym(_Shape):
    value: str


class EntityValue(_Shape):
    id: str | None = None
    key_value: str | None = None
    synonyms: list[Synonym] | None = None
    language: str | None = None


class Entity(_Shape):
    name: str
    id: str | None = None
    values: list[EntityValue] | None = None
    is_regex: bool | None = None
    system_type: str | None = None
    metadata: Strings | None = None
    tags: list[TagRef] | None = None


class Tag(_Shape):
    name: str
    id: str | None = None
    color: str | None = None
    description: str | None = None


class TopLevel(_Shape):
    name: str | None = None
    description: str | None = None
    color: str | None = None
    metadata: Strings | None = None


ITEM_SHAPES: dict[str, type[_Shape]] = {"intents": Intent, "entities": Entity, "tags": Tag}


# -- parsing -----------------------------------------------------------------------------


@dataclass
class ParsedWorkspace:
    """A workspace as views into its (mapped) file: the top level's values, its examples."""

    top: dict[str, msgspec.Raw]
    examples: list[msgspec.Raw]
    verbatim: memoryview | bytes = b""  # the whole document


@dataclass(frozen=True)
class WorkspaceSummary:
    name: str
    description: str


@contextmanager
def mapped(handle: BinaryIO) -> Iterator[memoryview | bytes]:
    """The file's bytes, mapped (not read into memory); b"" for an empty file."""
    size = handle.seek(0, 2)
    if size == 0:
        yield b""
        return
    region = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(region)
    try:
        yield view
    finally:
        # Views decoded from it may still be alive (an exception's traceback holds them):
        # then the mapping goes when the last of them does.
        try:
            view.release()
            region.close()
        except BufferError:
            pass


def parse(document: memoryview | bytes, *, error: type[Fault] = InvalidArgument) -> ParsedWorkspace:
    """The document's top level, and its examples as views; `error` when it is not a
    JSON object whose `examples` is an array."""
    try:
        top = msgspec.json.decode(document, type=dict[str, msgspec.Raw])
    except msgspec.ValidationError:
        raise error("a HumanFirst JSON workspace must be a JSON object") from None
    except msgspec.DecodeError as exc:
        raise error(f"not valid JSON: {exc}") from None
    examples: list[msgspec.Raw] = []
    if EXAMPLES in top:
        try:
            examples = msgspec.json.decode(top[EXAMPLES], type=list[msgspec.Raw])
        except msgspec.ValidationError:
            raise error("`examples` must be an array") from None
    return ParsedWorkspace(top, examples, document)


def summary(document: memoryview | bytes) -> WorkspaceSummary:
    """The workspace's name and description (its examples are skipped, not decoded)."""
    try:
        top = msgspec.json.decode(document, type=TopLevel)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StoredWorkspaceInvalid(
            f"the stored workspace is not HumanFirst JSON: {exc}"
        ) from None
    return WorkspaceSummary(top.name or "", top.description or "")


def _decode_item(raw: msgspec.Raw, shape: type[_Shape], where: str) -> _Shape:
    try:
        return msgspec.json.decode(raw, type=shape, strict=True)
    except msgspec.ValidationError as exc:
        raise InvalidArgument(f"{where}: {_located(exc)}") from None


def _located(exc: msgspec.ValidationError) -> str:
    # msgspec says "... - at `$.intents[0]`"; the item's own path is `$`, which reads
    # better without the noise.
    return str(exc).replace(" - at `$`", "").replace("`$.", "`")


def validate(
    workspace: ParsedWorkspace, *, watch_ids: frozenset[str] = frozenset()
) -> tuple[int, set[str]]:
    """Check the HumanFirst JSON structure (the keys the format defines, with their types;
    other keys are left alone). Returns the number of labelled examples and which of
    `watch_ids` are the ids of examples in it."""
    try:
        msgspec.json.decode(workspace.verbatim or b"{}", type=TopLevel, strict=True)
    except msgspec.ValidationError as exc:
        raise InvalidArgument(f"workspace: {_located(exc)}") from None
    for key, shape in ITEM_SHAPES.items():
        if key not in workspace.top:
            continue
        try:
            items = msgspec.json.decode(workspace.top[key], type=list[msgspec.Raw])
        except msgspec.ValidationError:
            raise InvalidArgument(f"`{key}` must be an array") from None
        for index, raw in enumerate(items):
            _decode_item(raw, shape, f"{key}[{index}]")
    labelled = 0
    seen: set[str] = set()
    for index, raw in enumerate(workspace.examples):
        example = _decode_item(raw, Example, f"examples[{index}]")
        assert isinstance(example, Example)
        for tag in example.tags or ():
            if tag.id is None and tag.name is None:
                raise InvalidArgument(f"examples[{index}]: a tag reference needs an id or a name")
        labelled += example.labelled
        if example.id is not None and example.id in watch_ids:
            seen.add(example.id)
    return labelled, seen


def unlabelled_examples(workspace: ParsedWorkspace) -> list[tuple[str | None, msgspec.Raw]]:
    """The stored workspace's examples that carry no intent, with their ids."""
    kept = []
    for raw in workspace.examples:
        try:
            example = msgspec.json.decode(raw, type=Example)
        except msgspec.ValidationError as exc:
            raise StoredWorkspaceInvalid(f"the stored workspace has a bad example: {exc}") from None
        if not example.labelled:
            kept.append((example.id, raw))
    return kept


# -- reconciling -------------------------------------------------------------------------


@dataclass
class Reconciled:
    """What the stored workspace becomes: HumanFirst's document unchanged (`verbatim`), or
    the pieces of a new one."""

    verbatim: bool
    examples: int
    kept_examples: int
    pieces: list[bytes | msgspec.Raw] = field(default_factory=list)


def reconcile(incoming: ParsedWorkspace, stored: ParsedWorkspace | None) -> Reconciled:
    """The import rule (docs/workspaces.md): HumanFirst's intents, entities, tags and
    examples replace the stored ones, except that stored examples without an intent that
    HumanFirst did not send (by id) are kept, and every other top-level key the stored
    workspace has (name, description, color, metadata, ...) keeps its stored value."""
    unlabelled = unlabelled_examples(stored) if stored is not None else []
    watch = frozenset(i for i, _ in unlabelled if i is not None)
    _labelled, sent = validate(incoming, watch_ids=watch)
    kept = [raw for example_id, raw in unlabelled if example_id is None or example_id not in sent]
    stored_top = (
        {}
        if stored is None
        else {k: v for k, v in stored.top.items() if k not in TRAINING_KEYS and k != EXAMPLES}
    )
    total = len(incoming.examples) + len(kept)
    differs = bool(kept) or any(
        key not in incoming.top or not _same(value, incoming.top[key])
        for key, value in stored_top.items()
    )
    if not differs:
        return Reconciled(True, total, 0)
    pieces: list[bytes | msgspec.Raw] = [b"{"]
    keys = list(incoming.top) + [k for k in stored_top if k not in incoming.top]
    if kept and EXAMPLES not in keys:
        keys.append(EXAMPLES)
    for position, key in enumerate(keys):
        pieces.append(
            msgspec.json.encode(key) + b":"
            if position == 0
            else b"," + msgspec.json.encode(key) + b":"
        )
        if key == EXAMPLES:
            pieces.append(b"[")
            for index, raw in enumerate([*incoming.examples, *kept]):
                if index:
                    pieces.append(b",")
                pieces.append(raw)
            pieces.append(b"]")
        else:
            pieces.append(stored_top.get(key, incoming.top.get(key)) or b"null")
    pieces.append(b"}")
    return Reconciled(False, total, len(kept), pieces)


def _same(left: msgspec.Raw, right: msgspec.Raw) -> bool:
    return bytes(left) == bytes(right) or msgspec.json.decode(left) == msgspec.json.decode(right)
