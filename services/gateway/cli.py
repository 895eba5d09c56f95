"""`ferry certs` and `ferry workspaces ...`: the gateway's commands.

`ferry certs --out DIR` makes development credentials for mutual TLS. `ferry workspaces`
is a gRPC client of the gateway with the client pair, speaking HumanFirst's `Workspaces`
service exactly as HumanFirst Studio does, so an operator can check the integration
without HumanFirst: list, create, import a HumanFirst JSON file, export one. `ferry models`
does the same with HumanFirst's `Models`: list, train on a workspace (exported from the
gateway, as Studio would send it), classify, delete.

Wire them into `services/cli/main.py` with `certs_parser(commands)`,
`workspaces_parser(commands)` and `models_parser(commands)` (all `add_parser`-style).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio

from services.cli.errors import CliError, UsageError
from services.gateway.generated.zia.ai.external_integration.v1alpha1 import (
    models_pb2,
    workspace_pb2,
)
from services.gateway.generated.zia.ai.external_nlu.v1alpha1 import service_pb2
from services.gateway.generated.zia.ai.playbook.data.config.v1alpha1 import config_pb2
from services.gateway.rpc import Stub
from services.gateway.settings import GRPC_MESSAGE_BYTES
from services.gateway.tls import CLIENT_FILE, CredentialsError, MtlsCredentials
from services.gateway.tls import write_development_certificates as write_certificates
from shared.settings import BaseSettings

T = TypeVar("T")
WORKSPACES = workspace_pb2.DESCRIPTOR.services_by_name["Workspaces"]
MODELS = models_pb2.DESCRIPTOR.services_by_name["Models"]
DEFAULT_ADDRESS = "localhost:50051"
CALL_TIMEOUT = 600.0  # seconds: a 200 MiB workspace takes a while over a slow link


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """All the commands at once."""
    certs_parser(commands)
    workspaces_parser(commands)
    models_parser(commands)


def certs_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = commands.add_parser(
        "certs",
        help="make development certificates for the gateway's mutual TLS",
        description=(
            "Write ca.pem, server.pem/.key, client.pem/.key, mtls-credentials.json (what the"
            " gateway reads: FERRY_CREDENTIALS_FILE) and client-credentials.json (what"
            " `ferry workspaces` reads) into DIR. The server certificate covers localhost"
            " and 127.0.0.1, and every --host."
        ),
    )
    certs.add_argument("--out", required=True, type=Path, metavar="DIR")
    certs.add_argument(
        "--host",
        dest="hosts",
        action="append",
        default=[],
        metavar="NAME",
        help="another DNS name or IP address of the gateway (repeatable)",
    )
    certs.set_defaults(run=run_certs)


def add_gateway_client_options(parser: argparse.ArgumentParser) -> None:
    """Where the gateway is, the client's credentials, and which HumanFirst integration the
    command speaks for: what every command through the gateway needs."""
    parser.add_argument(
        "--gateway",
        default=os.environ.get("FERRY_GATEWAY_ADDRESS", DEFAULT_ADDRESS),
        metavar="HOST:PORT",
        help=f"the gateway's gRPC address (FERRY_GATEWAY_ADDRESS; default {DEFAULT_ADDRESS})",
    )
    parser.add_argument(
        "--credentials",
        type=Path,
        default=Path(os.environ.get("FERRY_GATEWAY_CREDENTIALS", f"./certs/{CLIENT_FILE}")),
        metavar="FILE",
        help="the client's credentials file (FERRY_GATEWAY_CREDENTIALS; from `ferry certs`)",
    )
    parser.add_argument(
        "--hf-namespace",
        default=os.environ.get("FERRY_HF_NAMESPACE", "local"),
        help="the HumanFirst namespace (FERRY_HF_NAMESPACE; default local)",
    )
    parser.add_argument(
        "--integration-id",
        default=os.environ.get("FERRY_HF_INTEGRATION_ID", "cli"),
        help="the HumanFirst integration id (FERRY_HF_INTEGRATION_ID; default cli)",
    )


def workspaces_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "workspaces",
        help="HumanFirst workspaces, through the gateway (as HumanFirst Studio sees them)",
    )
    add_gateway_client_options(parser)
    sub = parser.add_subparsers(dest="workspaces_command", required=True, metavar="COMMAND")
    listing = sub.add_parser("list", help="list the workspaces")
    listing.set_defaults(run=run_list)
    create = sub.add_parser("create", help="create a blank workspace")
    create.add_argument("workspace_id", metavar="ID")
    create.add_argument("--name", default="")
    create.add_argument("--description", default="")
    create.set_defaults(run=run_create)
    export = sub.add_parser("export", help="write a workspace's HumanFirst JSON to FILE")
    export.add_argument("workspace_id", metavar="ID")
    export.add_argument("file", metavar="FILE", help="where to write it ('-': stdout)")
    export.set_defaults(run=run_export)
    load = sub.add_parser("import", help="replace a workspace's training data with FILE")
    load.add_argument("workspace_id", metavar="ID")
    load.add_argument("file", metavar="FILE", help="a HumanFirst JSON file")
    load.add_argument("--create", action="store_true", help="create the workspace if missing")
    load.set_defaults(run=run_import)


# -- certs -----------------------------------------------------------------------------------


def run_certs(settings: BaseSettings, args: argparse.Namespace) -> int:
    try:
        written = write_certificates(args.out, tuple(args.hosts))
    except OSError as exc:
        raise CliError(f"cannot write into {args.out}: {exc.strerror}") from None
    for path in written:
        print(path)
    return 0


# -- workspaces ------------------------------------------------------------------------------


def _run(args: argparse.Namespace, work: Callable[[Stub], Awaitable[T]]) -> T:
    return asyncio.run(_call(args, work))


async def _call(args: argparse.Namespace, work: Callable[[Stub], Awaitable[T]]) -> T:
    try:
        credentials = MtlsCredentials.load(args.credentials)
    except CredentialsError as exc:
        raise UsageError(f"{exc} (make one with `ferry certs --out DIR`)") from None
    options = [
        ("grpc.max_receive_message_length", GRPC_MESSAGE_BYTES),
        ("grpc.max_send_message_length", GRPC_MESSAGE_BYTES),
    ]
    async with grpc.aio.secure_channel(
        args.gateway, credentials.channel_credentials(), options=options
    ) as channel:
        try:
            return await work(Stub(channel, WORKSPACES))
        except grpc.aio.AioRpcError as exc:
            raise CliError(_explain(exc, args.gateway)) from None


def _explain(exc: grpc.aio.AioRpcError, address: str) -> str:
    code = exc.code()
    details = exc.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and (
        "failed to connect" in details.lower() or "handshake" in details.lower()
    ):
        return (
            f"cannot reach the gateway at {address} over mutual TLS ({details});"
            " is it running, and were both credentials made by the same `ferry certs`?"
        )
    return f"{code.name}: {details}"


def _scope(args: argparse.Namespace) -> dict[str, Any]:
    return {"namespace": args.hf_namespace, "integration_id": args.integration_id}


def run_list(settings: BaseSettings, args: argparse.Namespace) -> int:
    async def work(stub: Stub) -> Any:
        request = workspace_pb2.ListWorkspacesRequest(**_scope(args))
        return await stub.unary("ListWorkspaces")(request, timeout=30)

    reply = _run(args, work)
    rows = [("ID", "NAME", "DESCRIPTION")] + [
        (w.id, w.name, w.description) for w in reply.workspaces
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def run_create(settings: BaseSettings, args: argparse.Namespace) -> int:
    async def work(stub: Stub) -> Any:
        workspace = workspace_pb2.Workspace(
            id=args.workspace_id, name=args.name, description=args.description
        )
        request = workspace_pb2.CreateWorkspaceRequest(**_scope(args), workspace=workspace)
        return await stub.unary("CreateWorkspace")(request, timeout=30)

    created = _run(args, work)
    print(f"workspace {created.id} created")
    return 0


def run_export(settings: BaseSettings, args: argparse.Namespace) -> int:
    async def work(stub: Stub) -> Any:
        request = workspace_pb2.ExportWorkspaceRequest(
            **_scope(args), workspace_id=args.workspace_id
        )
        return await stub.unary("ExportWorkspace")(request, timeout=CALL_TIMEOUT)

    reply = _run(args, work)
    data = reply.data
    if reply.format_options.gzip_encoding:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise CliError(f"the gateway sent gzip data that does not decompress: {exc}") from None
    if args.file == "-":
        sys.stdout.buffer.write(data)
        return 0
    target = Path(args.file)
    partial = target.with_name(f".{target.name}.partial")
    try:
        partial.write_bytes(data)
        partial.replace(target)
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror}") from None
    print(f"workspace {args.workspace_id} written to {target} ({len(data)} bytes)", file=sys.stderr)
    return 0


def run_import(settings: BaseSettings, args: argparse.Namespace) -> int:
    try:
        document = Path(args.file).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None

    async def work(stub: Stub) -> None:
        scope = _scope(args)
        if args.create:
            try:
                await stub.unary("GetWorkspace")(
                    workspace_pb2.GetWorkspaceRequest(**scope, workspace_id=args.workspace_id),
                    timeout=30,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                workspace = workspace_pb2.Workspace(id=args.workspace_id)
                await stub.unary("CreateWorkspace")(
                    workspace_pb2.CreateWorkspaceRequest(**scope, workspace=workspace), timeout=30
                )
        # As HumanFirst does: ask how the integration wants the data, then send it so.
        parameters = await stub.unary("GetImportParameters")(
            workspace_pb2.GetImportParametersRequest(**scope, workspace_id=args.workspace_id),
            timeout=30,
        )
        options = parameters.format_options
        data = gzip.compress(document) if options.gzip_encoding else document
        await stub.unary("ImportWorkspace")(
            workspace_pb2.ImportWorkspaceRequest(
                **scope,
                workspace_id=args.workspace_id,
                data_format=config_pb2.INTENTS_FORMAT_HF_JSON,
                format_options=options,
                data=data,
            ),
            timeout=CALL_TIMEOUT,
        )

    _run(args, work)
    print(f"workspace {args.workspace_id} imported from {args.file} ({len(document)} bytes)")
    return 0


# -- models ----------------------------------------------------------------------------------

MATCHES_SHOWN = 3  # intents printed per classified text, best first


def models_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "models",
        help="HumanFirst models, through the gateway (as HumanFirst Studio uses them)",
    )
    add_gateway_client_options(parser)
    sub = parser.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    listing = sub.add_parser("list", help="list the models")
    listing.set_defaults(run=run_models_list)
    train = sub.add_parser(
        "train", help="train a model on a workspace of the gateway (waits until it is trained)"
    )
    train.add_argument("workspace_id", metavar="WORKSPACE_ID")
    train.set_defaults(run=run_models_train)
    classify = sub.add_parser("classify", help="the best intents of each TEXT")
    classify.add_argument("model_id", metavar="MODEL_ID")
    classify.add_argument("texts", metavar="TEXT", nargs="+")
    classify.set_defaults(run=run_models_classify)
    delete = sub.add_parser("delete", help="delete a model")
    delete.add_argument("model_id", metavar="MODEL_ID")
    delete.set_defaults(run=run_models_delete)


def _run_models(args: argparse.Namespace, work: Callable[[Stub], Awaitable[T]]) -> T:
    async def on_models(workspaces: Stub) -> T:
        return await work(Stub(workspaces.channel, MODELS))

    return _run(args, on_models)


def run_models_list(settings: BaseSettings, args: argparse.Namespace) -> int:
    async def work(stub: Stub) -> Any:
        return await stub.unary("ListModels")(
            models_pb2.ListModelsRequest(**_scope(args)), timeout=30
        )

    reply = _run_models(args, work)
    rows = [("ID", "NAME", "CLASSIFIES")] + [
        (m.id, m.display_name, "yes" if m.HasField("classification") else "no (training)")
        for m in reply.models
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def run_models_train(settings: BaseSettings, args: argparse.Namespace) -> int:
    async def work(models: Stub) -> Any:
        scope = _scope(args)
        workspaces = Stub(models.channel, WORKSPACES)
        exported = await workspaces.unary("ExportWorkspace")(
            workspace_pb2.ExportWorkspaceRequest(**scope, workspace_id=args.workspace_id),
            timeout=CALL_TIMEOUT,
        )
        # As HumanFirst does: ask how the integration wants the training data, send it so.
        parameters = await models.unary("GetTrainParameters")(
            models_pb2.GetTrainParametersRequest(**scope), timeout=30
        )
        data = exported.data
        wanted, sent = parameters.format_options, exported.format_options
        if sent.gzip_encoding and not wanted.gzip_encoding:
            data = gzip.decompress(data)
        elif wanted.gzip_encoding and not sent.gzip_encoding:
            data = gzip.compress(data)
        return await models.unary("TrainModel")(
            models_pb2.TrainModelRequest(
                **scope,
                data_format=parameters.data_format,
                format_options=wanted,
                data=data,
            ),
            timeout=CALL_TIMEOUT,
        )

    model = _run_models(args, work).model
    state = "trained" if model.HasField("classification") else "still training"
    print(f"model {model.id} {state} on workspace {args.workspace_id}")
    return 0


def run_models_classify(settings: BaseSettings, args: argparse.Namespace) -> int:
    async def work(stub: Stub) -> Any:
        request = models_pb2.ClassifyRequest(
            **_scope(args),
            model_id=args.model_id,
            examples=[service_pb2.Example(contents=text) for text in args.texts],
        )
        return await stub.unary("Classify")(request, timeout=60)

    reply = _run_models(args, work)
    for text, prediction in zip(args.texts, reply.predictions, strict=True):
        best = ", ".join(
            f"{match.name or match.id} {match.score:.2f}"
            for match in prediction.matches[:MATCHES_SHOWN]
        )
        print(f"{text}\t{best or '(no intent)'}")
    return 0


def run_models_delete(settings: BaseSettings, args: argparse.Namespace) -> int:
    async def work(stub: Stub) -> Any:
        request = models_pb2.DeleteModelRequest(**_scope(args), model_id=args.model_id)
        return await stub.unary("DeleteModel")(request, timeout=30)

    _run_models(args, work)
    print(f"model {args.model_id} deleted")
    return 0
