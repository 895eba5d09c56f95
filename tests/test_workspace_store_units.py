"""The workspace store's pieces without a broker: ids, the files on disk (no way out of the
data directory, atomic commits), HumanFirst JSON validation and the import rule."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import msgspec
import pytest

from services.workspace_store import hfjson
from services.workspace_store.app import Inflater
from services.workspace_store.files import WorkspaceFiles, WorkspaceKey
from shared.contracts.workspaces import check_id, slug_of
from shared.faults import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, fault_of


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("../x", "path separator"),
        ("/etc/passwd", "path separator"),
        ("a/../../b", "path separator"),
        ("a\\b", "path separator"),
        ("a\x00b", "NUL"),
        ("x" * 10_000, "10000 characters long"),
        ("..", "is not an id"),
        (".", "is not an id"),
        (".hidden", "is not an id"),
        ("", "is empty"),
        ("with space", "is not an id"),
    ],
)
def test_unsafe_ids_are_refused_with_the_reason(value: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_id("workspace_id", value)


def test_safe_ids_and_slugs() -> None:
    for good in ("banking", "ws-1", "a.b_c@d+e=f", "X" * 128):
        assert check_id("workspace_id", good) == good
    assert slug_of("Bank FAQ (v2)") == "bank-faq-v2"
    assert slug_of("???") == ""


def test_error_texts_carry_their_status() -> None:
    assert fault_of("NotFound: no workspace a/b/c") == ("NOT_FOUND", "no workspace a/b/c")
    assert fault_of("FailedPrecondition: x") == ("FAILED_PRECONDITION", "x")
    assert fault_of("OSError: disk full") == (None, "OSError: disk full")


@pytest.fixture
def files(tmp_path: Path) -> WorkspaceFiles:
    files = WorkspaceFiles(tmp_path / "data")
    files.open()
    yield files  # type: ignore[misc]
    files.close()


def write(files: WorkspaceFiles, key: WorkspaceKey, content: bytes, *, replace: bool) -> None:
    staged = files.stage()
    staged.handle.write(content)
    files.commit(staged, key, replace=replace)


def test_create_never_overwrites_and_replace_is_atomic(files: WorkspaceFiles) -> None:
    key = WorkspaceKey("ns", "intg", "ws")
    write(files, key, b'{"name": "one"}', replace=False)
    with pytest.raises(AlreadyExists):
        write(files, key, b'{"name": "two"}', replace=False)
    write(files, key, b'{"name": "three"}', replace=True)
    with files.open_workspace(key) as handle:
        assert handle.read() == b'{"name": "three"}'
    assert os.listdir(files.root / ".staging") == []  # nothing left behind
    assert files.list_ids("ns", "intg") == ["ws"]
    assert files.list_ids("ns", "other") == []


def test_listing_skips_links_hidden_and_other_files(files: WorkspaceFiles, tmp_path: Path) -> None:
    write(files, WorkspaceKey("ns", "intg", "real"), b"{}", replace=False)
    folder = files.root / "ns" / "intg"
    (folder / ".hidden.json").write_text("{}")
    (folder / "notes.txt").write_text("x")
    (tmp_path / "elsewhere.json").write_text("{}")
    os.symlink(tmp_path / "elsewhere.json", folder / "linked.json")
    assert files.list_ids("ns", "intg") == ["real"]
    linked = WorkspaceKey("ns", "intg", "linked")
    with pytest.raises(FailedPrecondition, match="symbolic link"), files.open_workspace(linked):
        pass
    with pytest.raises(NotFound), files.open_workspace(WorkspaceKey("ns", "intg", "absent")):
        pass


def test_leftover_staging_files_are_removed_at_start(tmp_path: Path) -> None:
    staging = tmp_path / "data" / ".staging"
    staging.mkdir(parents=True)
    (staging / "crashed.tmp").write_bytes(b"half")
    files = WorkspaceFiles(tmp_path / "data")
    files.open()
    try:
        assert os.listdir(staging) == []
    finally:
        files.close()


def test_a_gzip_bomb_stops_at_the_limit() -> None:
    out = io.BytesIO()
    inflate = Inflater(out, gzip=True, limit=1_000_000)
    bomb = gzip.compress(b"\0" * 50_000_000)
    with pytest.raises(InvalidArgument, match="larger than 1000000 bytes"):
        inflate(bomb)
    assert len(out.getvalue()) <= 1_000_000 + 1024 * 1024


def test_several_gzip_members_are_one_stream() -> None:
    out = io.BytesIO()
    inflate = Inflater(out, gzip=True, limit=100)
    inflate(gzip.compress(b'{"a":') + gzip.compress(b"1}"))
    inflate.finish()
    assert out.getvalue() == b'{"a":1}'


def parsed(document: dict[str, object] | bytes) -> hfjson.ParsedWorkspace:
    raw = document if isinstance(document, bytes) else msgspec.json.encode(document)
    return hfjson.parse(raw)


def reconciled(incoming: object, stored: object) -> tuple[hfjson.Reconciled, dict[str, object]]:
    result = hfjson.reconcile(parsed(incoming), parsed(stored))  # type: ignore[arg-type]
    if result.verbatim:
        raw = incoming if isinstance(incoming, bytes) else msgspec.json.encode(incoming)
    else:
        raw = b"".join(bytes(piece) for piece in result.pieces)
    return result, msgspec.json.decode(raw)


def test_an_import_over_a_blank_workspace_is_taken_verbatim() -> None:
    incoming = b'{ "name" : "faq",\n  "intents": [] }'
    result, _ = reconciled(incoming, {"name": "faq"})
    assert result.verbatim


def test_the_import_rule() -> None:
    stored = {
        "name": "Ours",
        "color": "#00f",
        "metadata": {"team": "support"},
        "examples": [
            {"id": "u-kept", "text": "unlabelled, kept"},
            {"text": "unlabelled without id, kept"},
            {"id": "u-resent", "text": "unlabelled, but HumanFirst sent it labelled"},
            {"id": "l-old", "text": "labelled, replaced", "intents": [{"intent_id": "i-old"}]},
        ],
        "intents": [{"id": "i-old", "name": "old"}],
        "entities": [{"name": "old-entity"}],
        "tags": [{"name": "old-tag"}],
    }
    incoming = {
        "name": "Studio's",
        "description": "from Studio",
        "examples": [
            {"id": "u-resent", "text": "now labelled", "intents": [{"intent_id": "i-new"}]},
            {"id": "l-new", "text": "labelled", "intents": [{"intent_id": "i-new"}]},
        ],
        "intents": [{"id": "i-new", "name": "new"}],
    }
    result, merged = reconciled(incoming, stored)
    assert not result.verbatim
    assert (result.examples, result.kept_examples) == (4, 2)
    assert merged["name"] == "Ours" and merged["color"] == "#00f"
    assert merged["metadata"] == {"team": "support"}
    assert merged["description"] == "from Studio"
    assert merged["intents"] == incoming["intents"]
    assert "entities" not in merged and "tags" not in merged  # HumanFirst sent none
    texts = [e["text"] for e in merged["examples"]]  # type: ignore[attr-defined]
    assert texts == ["now labelled", "labelled", "unlabelled, kept", "unlabelled without id, kept"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b'{"name": 5}', "workspace: Expected `str | null`, got `int` - at `name`"),
        (b'{"metadata": {"a": 1}}', "Expected `str`, got `int`"),
        (b'{"tags": [{"color": "red"}]}', "tags[0]: Object missing required field `name`"),
        (b'{"entities": [{"name": "e", "values": [{"synonyms": [{}]}]}]}', "entities[0]"),
        (b'{"examples": [{"text": "t", "tags": [{}]}]}', "needs an id or a name"),
        (b'{"examples": [{"text": "t", "intents": [{"negative": true}]}]}', "intent_id"),
    ],
)
def test_validation_says_where_and_what(document: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument) as failure:
        hfjson.validate(parsed(document))
    assert message in str(failure.value)
