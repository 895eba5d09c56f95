"""The checked-in generated modules match protos/ (compiled again here, descriptor for
descriptor), and the HumanFirst protos keep HumanFirst's names and field numbers."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GENERATED = ROOT / "services" / "gateway" / "generated"
sys.path.insert(0, str(PROTOS))
import generate  # noqa: E402  (protos/generate.py)


def compiled(tmp_path: Path) -> descriptor_pb2.FileDescriptorSet:
    out = tmp_path / "protos.pb"
    arguments = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{generate.well_known_types()}",
        f"--descriptor_set_out={out}",
        *generate.proto_files(),
    ]
    assert protoc.main(arguments) == 0
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def without_json_names(file: descriptor_pb2.FileDescriptorProto) -> None:
    """protoc's Python generator leaves out `json_name` where it is the default one."""
    pending = list(file.message_type)
    while pending:
        message = pending.pop()
        for field in message.field:
            field.ClearField("json_name")
        pending.extend(message.nested_type)


def module_of(proto: str) -> str:
    return generate.PACKAGE + "." + proto.removesuffix(".proto").replace("/", ".") + "_pb2"


def test_generated_modules_match_the_protos(tmp_path: Path) -> None:
    files = compiled(tmp_path).file
    assert sorted(f.name for f in files) == generate.proto_files()
    for expected in files:
        without_json_names(expected)
        module = importlib.import_module(module_of(expected.name))
        actual = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        assert actual == expected, f"{expected.name}: run .venv/bin/python protos/generate.py"
    generated = sorted(
        str(p.relative_to(GENERATED)).removesuffix("_pb2.py") + ".proto"
        for p in GENERATED.rglob("*_pb2.py")
    )
    assert generated == generate.proto_files(), "stale generated modules: regenerate"


def test_humanfirst_names_and_numbers() -> None:
    from services.gateway.generated.zia.ai.external_integration.v1alpha1 import (
        discovery_pb2,
        models_pb2,
        workspace_pb2,
    )
    from services.gateway.generated.zia.ai.external_nlu.v1alpha1 import service_pb2
    from services.gateway.generated.zia.ai.playbook.data.config.v1alpha1 import config_pb2

    def fields(message: object) -> dict[str, int]:
        return {f.name: f.number for f in message.DESCRIPTOR.fields}  # type: ignore[attr-defined]

    package = "zia.ai.external_integration.v1alpha1"
    workspaces = workspace_pb2.DESCRIPTOR.services_by_name["Workspaces"]
    assert workspaces.full_name == f"{package}.Workspaces"
    assert [m.name for m in workspaces.methods] == [
        "ListWorkspaces",
        "GetWorkspace",
        "CreateWorkspace",
        "GetImportParameters",
        "ImportWorkspace",
        "ExportWorkspace",
    ]
    assert fields(workspace_pb2.ImportWorkspaceRequest) == {
        "namespace": 1,
        "integration_id": 2,
        "workspace_id": 3,
        "data_format": 4,
        "format_options": 5,
        "data": 6,
    }
    assert fields(discovery_pb2.GetCapabilitiesResponse) == {
        "supports_models": 1,
        "supports_workspaces": 2,
        "max_concurrent_models": 10,
        "model_classification_batch_size": 11,
    }
    assert fields(models_pb2.TrainModelRequest)["data"] == 6
    assert fields(models_pb2.EmbedResponse) == {"data": 2, "shape": 3}
    assert fields(service_pb2.EntityReference) == {
        "text": 1,
        "key": 3,
        "value": 5,
        "role": 6,
        "entity_id": 7,
        "entity_value_id": 8,
    }
    assert config_pb2.INTENTS_FORMAT_HF_JSON == 7
    assert fields(config_pb2.IntentsDataOptions)["gzip_encoding"] == 6
    assert (
        config_pb2.IntentsDataOptions.DESCRIPTOR.fields_by_name[
            "intent_tag_predicate"
        ].message_type.full_name
        == "zia.ai.tags.TagPredicate"
    )
    assert [m.name for m in models_pb2.DESCRIPTOR.services_by_name["Models"].methods] == [
        "ListModels",
        "GetModel",
        "GetTrainParameters",
        "TrainModel",
        "DeleteModel",
        "UnloadModel",
        "Classify",
        "Embed",
    ]
