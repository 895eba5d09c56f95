"""HumanFirst's `Workspaces` and `Discovery` through the gateway, served by the workspace
store over RabbitMQ, as HumanFirst Studio calls them: over mutual TLS, on a real broker."""

from __future__ import annotations

import gzip
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import msgspec
import pytest

from services.gateway.app import Gateway
from services.gateway.generated.zia.ai.external_integration.v1alpha1 import (
    discovery_pb2,
    models_pb2,
    workspace_pb2,
)
from services.gateway.generated.zia.ai.playbook.data.config.v1alpha1 import config_pb2
from services.gateway.rpc import Stub
from services.gateway.tls import DevelopmentCertificates
from services.workspace_store.app import WorkspaceStore
from shared.settings import BaseSettings
from tests.conftest import Cleanup
from tests.support.gateway import (
    HF_SCOPE,
    certificates,  # noqa: F401 (a fixture)
    client,
    gateway_settings,
    running_gateway,
    running_store,
    store_settings,
    stub,
)

HF_JSON = config_pb2.INTENTS_FORMAT_HF_JSON

# Pretty-printed, keys in no particular order: an exact round trip must keep it byte for byte.
WORKSPACE = b"""{
  "name": "Banking FAQ",
  "intents": [
    {"id": "intent-1", "name": "balance"},
    {"id": "intent-2", "name": "card lost", "parent_intent_id": "intent-1"}
  ],
  "examples": [
    {"id": "phrase-1", "text": "what is my balance", "intents": [{"intent_id": "intent-1"}]},
    {"id": "phrase-2", "text": "I lost my card", "intents": [{"intent_id": "intent-2"}],
     "tags": [{"name": "urgent"}]}
  ],
  "entities": [{"id": "entity-1", "name": "card", "values": [{"key_value": "visa"}]}],
  "tags": [{"id": "tag-1", "name": "urgent", "color": "#ff0000"}]
}
"""


@dataclass
class Deployment:
    gateway: Gateway
    store: WorkspaceStore
    data_dir: Path
    workspaces: Stub
    discovery: Stub
    models: Stub


@pytest.fixture
async def deployment(
    base_settings: BaseSettings,
    certificates: DevelopmentCertificates,  # noqa: F811
    tmp_path: Path,
    cleanup: Cleanup,
) -> AsyncIterator[Deployment]:
    data_dir = tmp_path / "data"
    async with (
        running_store(store_settings(base_settings, data_dir), cleanup) as store,
        running_gateway(gateway_settings(base_settings, certificates, tmp_path), cleanup) as gw,
        client(gw, certificates.client_credentials) as channel,
    ):
        yield Deployment(
            gw,
            store,
            data_dir,
            stub(channel, workspace_pb2, "Workspaces"),
            stub(channel, discovery_pb2, "Discovery"),
            stub(channel, models_pb2, "Models"),
        )


async def call(stub: Stub, method: str, request: object, timeout: float = 30) -> object:
    return await stub.unary(method)(request, timeout=timeout)


async def create(d: Deployment, workspace_id: str, name: str = "") -> workspace_pb2.Workspace:
    request = workspace_pb2.CreateWorkspaceRequest(
        **HF_SCOPE, workspace=workspace_pb2.Workspace(id=workspace_id, name=name)
    )
    created = await call(d.workspaces, "CreateWorkspace", request)
    assert isinstance(created, workspace_pb2.Workspace)
    return created


async def import_data(d: Deployment, workspace_id: str, data: bytes, *, gzipped: bool) -> None:
    await call(
        d.workspaces,
        "ImportWorkspace",
        workspace_pb2.ImportWorkspaceRequest(
            **HF_SCOPE,
            workspace_id=workspace_id,
            data_format=HF_JSON,
            format_options=config_pb2.IntentsDataOptions(gzip_encoding=gzipped),
            data=data,
        ),
        timeout=120,
    )


async def export_data(d: Deployment, workspace_id: str) -> bytes:
    reply = await call(
        d.workspaces,
        "ExportWorkspace",
        workspace_pb2.ExportWorkspaceRequest(**HF_SCOPE, workspace_id=workspace_id),
        timeout=120,
    )
    assert isinstance(reply, workspace_pb2.ExportWorkspaceResponse)
    assert reply.data_format == HF_JSON and reply.format_options.gzip_encoding
    return gzip.decompress(reply.data)


async def status_of(awaitable: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await awaitable  # type: ignore[misc]
    return failure.value.code(), failure.value.details() or ""


# -- the HumanFirst flow -------------------------------------------------------------------


async def test_capabilities_say_workspaces_and_no_models(deployment: Deployment) -> None:
    reply = await call(
        deployment.discovery, "GetCapabilities", discovery_pb2.GetCapabilitiesRequest()
    )
    assert isinstance(reply, discovery_pb2.GetCapabilitiesResponse)
    assert reply.supports_workspaces and not reply.supports_models
    code, details = await status_of(
        call(deployment.models, "ListModels", models_pb2.ListModelsRequest(**HF_SCOPE))
    )
    assert code == grpc.StatusCode.UNIMPLEMENTED
    assert "no model service is deployed" in details


async def test_list_create_import_gzip_export_round_trips_exactly(deployment: Deployment) -> None:
    d = deployment
    listed = await call(
        d.workspaces, "ListWorkspaces", workspace_pb2.ListWorkspacesRequest(**HF_SCOPE)
    )
    assert isinstance(listed, workspace_pb2.ListWorkspacesResponse) and not listed.workspaces

    created = await create(d, "banking", "Banking FAQ")
    assert (created.id, created.name) == ("banking", "Banking FAQ")
    code, details = await status_of(create(d, "banking"))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "banking" in details

    parameters = await call(
        d.workspaces,
        "GetImportParameters",
        workspace_pb2.GetImportParametersRequest(**HF_SCOPE, workspace_id="banking"),
    )
    assert isinstance(parameters, workspace_pb2.GetImportParametersResponse)
    assert parameters.data_format == HF_JSON and parameters.format_options.gzip_encoding

    await import_data(d, "banking", gzip.compress(WORKSPACE), gzipped=True)
    assert await export_data(d, "banking") == WORKSPACE

    listed = await call(
        d.workspaces, "ListWorkspaces", workspace_pb2.ListWorkspacesRequest(**HF_SCOPE)
    )
    assert isinstance(listed, workspace_pb2.ListWorkspacesResponse)
    assert [(w.id, w.name) for w in listed.workspaces] == [("banking", "Banking FAQ")]
    got = await call(
        d.workspaces,
        "GetWorkspace",
        workspace_pb2.GetWorkspaceRequest(**HF_SCOPE, workspace_id="banking"),
    )
    assert isinstance(got, workspace_pb2.Workspace) and got.name == "Banking FAQ"
    # Kept apart by namespace and integration.
    other = await call(
        d.workspaces,
        "ListWorkspaces",
        workspace_pb2.ListWorkspacesRequest(namespace="acme", integration_id="intg-2"),
    )
    assert isinstance(other, workspace_pb2.ListWorkspacesResponse) and not other.workspaces


async def test_a_plain_import_is_taken_plain(deployment: Deployment) -> None:
    await create(deployment, "plain", "Banking FAQ")
    await import_data(deployment, "plain", WORKSPACE, gzipped=False)
    assert await export_data(deployment, "plain") == WORKSPACE


async def test_an_import_keeps_the_stored_metadata_and_unlabelled_examples(
    deployment: Deployment,
) -> None:
    d = deployment
    await create(d, "kept", "Our name")
    first = {
        "name": "Studio's name",
        "metadata": {"owner": "ops"},
        "examples": [
            {"id": "u-1", "text": "hello there"},
            {"id": "l-1", "text": "balance please", "intents": [{"intent_id": "i-1"}]},
        ],
        "intents": [{"id": "i-1", "name": "balance"}],
    }
    await import_data(d, "kept", msgspec.json.encode(first), gzipped=False)
    second = {
        "name": "Studio's name",
        "examples": [{"id": "l-2", "text": "card lost", "intents": [{"intent_id": "i-2"}]}],
        "intents": [{"id": "i-2", "name": "card"}],
        "tags": [],
    }
    await import_data(d, "kept", gzip.compress(msgspec.json.encode(second)), gzipped=True)
    stored = msgspec.json.decode(await export_data(d, "kept"))
    assert stored["name"] == "Our name"  # the stored workspace's own, not Studio's
    assert stored["metadata"] == {"owner": "ops"}
    assert stored["intents"] == second["intents"] and stored["tags"] == []
    assert [e["id"] for e in stored["examples"]] == ["l-2", "u-1"]


# -- refusals ------------------------------------------------------------------------------

BAD_IDS = ["../x", "/etc/passwd", "a/../../b", "a\x00b", "x" * 10_000, "..", ""]


@pytest.mark.parametrize(
    "bad", BAD_IDS, ids=["dotdot", "absolute", "traversal", "nul", "long", "parent", "empty"]
)
async def test_unsafe_ids_are_refused_and_nothing_is_written_outside(
    deployment: Deployment, bad: str, tmp_path: Path
) -> None:
    d = deployment
    before = snapshot(tmp_path)
    requests = [
        (
            "CreateWorkspace",
            workspace_pb2.CreateWorkspaceRequest(
                **HF_SCOPE, workspace=workspace_pb2.Workspace(id=bad)
            ),
        ),
        ("GetWorkspace", workspace_pb2.GetWorkspaceRequest(**HF_SCOPE, workspace_id=bad)),
        ("ExportWorkspace", workspace_pb2.ExportWorkspaceRequest(**HF_SCOPE, workspace_id=bad)),
        (
            "ImportWorkspace",
            workspace_pb2.ImportWorkspaceRequest(
                **HF_SCOPE, workspace_id=bad, data_format=HF_JSON, data=b"{}"
            ),
        ),
        ("ListWorkspaces", workspace_pb2.ListWorkspacesRequest(namespace=bad, integration_id="i")),
        ("ListWorkspaces", workspace_pb2.ListWorkspacesRequest(namespace="n", integration_id=bad)),
    ]
    if bad == "":  # an empty workspace id on create means "make one from the name"
        requests = requests[1:]
    for method, request in requests:
        code, details = await status_of(call(d.workspaces, method, request))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (method, details)
        assert len(details) < 300
    assert snapshot(tmp_path) == before  # the data directory included: nothing at all
    assert not exists(Path("/x")) and not exists(tmp_path.parent / "b")


def snapshot(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p), p.lstat().st_size) for p in root.rglob("*"))


def exists(path: Path) -> bool:
    return path.exists()


async def test_the_store_refuses_symlinks_planted_in_the_data_directory(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    outside = plant_link(tmp_path, d.data_dir)
    code, _ = await status_of(
        call(
            d.workspaces,
            "GetWorkspace",
            workspace_pb2.GetWorkspaceRequest(**HF_SCOPE, workspace_id="secret"),
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    code, _ = await status_of(create(d, "new"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert [name for name, _ in snapshot(outside)] == [str(outside / "secret.json")]
    plant_file_link(outside, d.data_dir)
    code, details = await status_of(
        call(
            d.workspaces,
            "ExportWorkspace",
            workspace_pb2.ExportWorkspaceRequest(**HF_SCOPE, workspace_id="linked"),
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "symbolic link" in details


def plant_link(tmp_path: Path, data_dir: Path) -> Path:
    """The integration's directory made a link to a directory outside the data directory."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text('{"name": "secret"}')
    (data_dir / "acme").mkdir(exist_ok=True)
    os.symlink(outside, data_dir / "acme" / "intg-1")
    return outside


def plant_file_link(outside: Path, data_dir: Path) -> None:
    """A real integration directory, with a workspace file that is a link outside."""
    os.unlink(data_dir / "acme" / "intg-1")
    (data_dir / "acme" / "intg-1").mkdir()
    os.symlink(outside / "secret.json", data_dir / "acme" / "intg-1" / "linked.json")


@pytest.mark.parametrize(
    ("data", "gzipped", "expected"),
    [
        (b"[1, 2]", False, "must be a JSON object"),
        (b"{not json", False, "not valid JSON"),
        (
            b'{"intents": [{"id": "i-1"}]}',
            False,
            "intents[0]: Object missing required field `name`",
        ),
        (b'{"examples": [{"text": 5}]}', False, "examples[0]: Expected `str`, got `int`"),
        (b'{"examples": {}}', False, "`examples` must be an array"),
        (b"{}", True, "not gzip"),
        (gzip.compress(b"{}")[:-6], True, "truncated"),
    ],
    ids=[
        "array",
        "not-json",
        "intent-without-name",
        "text-not-string",
        "examples-object",
        "not-gzip",
        "truncated-gzip",
    ],
)
async def test_a_malformed_workspace_is_refused_and_the_stored_one_kept(
    deployment: Deployment, data: bytes, gzipped: bool, expected: str
) -> None:
    await create(deployment, "target", "Banking FAQ")
    await import_data(deployment, "target", WORKSPACE, gzipped=False)
    code, details = await status_of(import_data(deployment, "target", data, gzipped=gzipped))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in details
    assert await export_data(deployment, "target") == WORKSPACE


async def test_missing_workspaces_and_unsupported_formats(deployment: Deployment) -> None:
    d = deployment
    code, details = await status_of(
        call(
            d.workspaces,
            "GetWorkspace",
            workspace_pb2.GetWorkspaceRequest(**HF_SCOPE, workspace_id="nope"),
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in details
    code, _ = await status_of(export_data(d, "nope"))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = await status_of(import_data(d, "nope", b"{}", gzipped=False))
    assert code == grpc.StatusCode.NOT_FOUND
    code, details = await status_of(
        call(
            d.workspaces,
            "ImportWorkspace",
            workspace_pb2.ImportWorkspaceRequest(
                **HF_SCOPE,
                workspace_id="x",
                data_format=config_pb2.INTENTS_FORMAT_RASA_YAML,
                data=b"{}",
            ),
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "INTENTS_FORMAT_RASA_YAML" in details
