"""HumanFirst's `Models` and `Discovery` through the gateway, served by the `nlu_models`
service over RabbitMQ, as HumanFirst Studio calls them: over mutual TLS, on a real broker,
with the model service, the task tracker (trainings are tasks) and the workspace store
running in-process. Also `ferry models ...` end to end."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np
import pytest

from services.cli.errors import CliError
from services.gateway import cli as gateway_cli
from services.gateway.app import Gateway
from services.gateway.discovery import DiscoveryServicer
from services.gateway.generated.zia.ai.external_integration.v1alpha1 import (
    discovery_pb2,
    models_pb2,
)
from services.gateway.generated.zia.ai.external_nlu.v1alpha1 import service_pb2
from services.gateway.generated.zia.ai.playbook.data.config.v1alpha1 import config_pb2
from services.gateway.models import ModelsAvailability, ModelsServicer
from services.gateway.rpc import Stub
from services.gateway.settings import GatewaySettings
from services.gateway.tls import CLIENT_FILE, DevelopmentCertificates
from services.nlu_models.app import NluModels
from services.nlu_models.embedding import SentenceEncoder
from services.nlu_models.settings import ModelSettings
from services.task_tracker.app import TaskTracker
from shared.settings import BaseSettings
from tests.conftest import Cleanup
from tests.support.gateway import (
    HF_SCOPE,
    certificates,  # noqa: F401 (a fixture)
    client,
    gateway_settings,
    running_store,
    store_settings,
    stub,
)
from tests.support.tracker import tracker_settings
from tests.support.waiting import eventually

PHRASES = {
    "balance": ["what is my balance", "how much money do i have", "check my balance please"],
    "transfer": ["send 50 dollars to my sister", "transfer money to john", "wire 200 euros"],
    "card_lost": ["i lost my credit card", "my card is missing", "report a lost card"],
}
QUESTIONS = ["how much do i have in my account", "send money to my brother", "lost my card"]
BEST = ["intent-balance", "intent-transfer", "intent-card_lost"]


def workspace_json() -> bytes:
    intents = [{"id": f"intent-{name}", "name": name} for name in PHRASES]
    examples = [
        {"text": text, "intents": [{"intent_id": f"intent-{name}"}]}
        for name, texts in PHRASES.items()
        for text in texts
    ]
    return json.dumps({"intents": intents, "examples": examples}).encode()


def serve_models(gateway: Gateway) -> ModelsAvailability:
    """Give the gateway's Discovery and Models an availability check that remembers its answer
    for 0.2 s instead of 5 s, so a test sees the model service come and go quickly."""
    availability = ModelsAvailability(gateway.service, ttl=0.2)
    servicers: dict[str, object] = {
        "Discovery": DiscoveryServicer(availability),
        "Models": ModelsServicer(gateway.service, gateway.settings, gateway.link, availability),
    }
    gateway.served = [
        replace(s, servicer=servicers.get(s.descriptor.name, s.servicer)) for s in gateway.served
    ]
    return availability


@contextlib.asynccontextmanager
async def running_gateway(settings: GatewaySettings, cleanup: Cleanup) -> AsyncIterator[Gateway]:
    gateway = Gateway(settings)
    serve_models(gateway)
    async with cleanup.running(gateway.service):
        yield gateway


@contextlib.asynccontextmanager
async def running_models(
    settings: ModelSettings, encoder: SentenceEncoder, cleanup: Cleanup
) -> AsyncIterator[NluModels]:
    models = NluModels(settings, encoder=encoder)
    try:
        async with cleanup.running(models.service):
            yield models
    finally:
        models.close()


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder.load_packaged()


@pytest.fixture
def model_settings(base_settings: BaseSettings, tmp_path: Path) -> ModelSettings:
    common = {f.name: getattr(base_settings, f.name) for f in fields(BaseSettings)}
    return ModelSettings(
        **common,  # type: ignore[arg-type]
        data_dir=str(tmp_path / "models"),
        classify_batch_size=64,
        max_loaded_models=2,
        train_iterations=100,
    )


@dataclass
class Deployment:
    gateway: Gateway
    models: Stub
    discovery: Stub


@pytest.fixture
async def gateway(
    base_settings: BaseSettings,
    certificates: DevelopmentCertificates,  # noqa: F811
    tmp_path: Path,
    cleanup: Cleanup,
) -> AsyncIterator[Gateway]:
    """The gateway and the workspace store, without a model service."""
    async with (
        running_store(store_settings(base_settings, tmp_path / "data"), cleanup),
        running_gateway(gateway_settings(base_settings, certificates, tmp_path), cleanup) as gw,
    ):
        yield gw


@pytest.fixture
async def tracker(
    base_settings: BaseSettings, tmp_path: Path, cleanup: Cleanup
) -> AsyncIterator[TaskTracker]:
    tracker = TaskTracker(tracker_settings(base_settings, "sqlite", tmp_path))
    async with cleanup.running(tracker.service):
        yield tracker


@pytest.fixture
async def model_service(
    model_settings: ModelSettings, encoder: SentenceEncoder, tracker: TaskTracker, cleanup: Cleanup
) -> AsyncIterator[NluModels]:
    async with running_models(model_settings, encoder, cleanup) as models:
        yield models


@pytest.fixture
async def deployment(
    gateway: Gateway,
    model_service: NluModels,
    certificates: DevelopmentCertificates,  # noqa: F811
) -> AsyncIterator[Deployment]:
    async with client(gateway, certificates.client_credentials) as channel:
        yield Deployment(
            gateway, stub(channel, models_pb2, "Models"), stub(channel, discovery_pb2, "Discovery")
        )


async def call(stub: Stub, method: str, request: object, timeout: float = 30) -> Any:
    return await stub.unary(method)(request, timeout=timeout)


async def status_of(awaitable: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await awaitable  # type: ignore[misc]
    return failure.value.code(), failure.value.details() or ""


def train_request(data: bytes) -> models_pb2.TrainModelRequest:
    return models_pb2.TrainModelRequest(
        **HF_SCOPE,
        data_format=config_pb2.INTENTS_FORMAT_HF_JSON,
        format_options=config_pb2.IntentsDataOptions(gzip_encoding=True),
        data=gzip.compress(data),
    )


# -- the eight RPCs ------------------------------------------------------------------------


async def test_the_eight_rpcs_through_the_gateway(deployment: Deployment) -> None:
    models = deployment.models
    parameters = await call(
        models, "GetTrainParameters", models_pb2.GetTrainParametersRequest(**HF_SCOPE)
    )
    assert parameters.data_format == config_pb2.INTENTS_FORMAT_HF_JSON
    assert parameters.format_options.gzip_encoding
    assert parameters.format_options.skip_empty_intents

    # TrainModel answers once the model is trained: it classifies at once.
    trained = await call(models, "TrainModel", train_request(workspace_json()), timeout=60)
    model = trained.model
    assert model.id and model.classification.max_batch_size == 64
    assert model.embeddings.dimensionality == 384

    listed = await call(models, "ListModels", models_pb2.ListModelsRequest(**HF_SCOPE))
    assert [m.id for m in listed.models] == [model.id]
    got = await call(models, "GetModel", models_pb2.GetModelRequest(**HF_SCOPE, model_id=model.id))
    assert got == model

    examples = [service_pb2.Example(contents=text) for text in QUESTIONS]
    classified = await call(
        models,
        "Classify",
        models_pb2.ClassifyRequest(**HF_SCOPE, model_id=model.id, examples=examples),
    )
    assert [p.matches[0].id for p in classified.predictions] == BEST
    assert classified.predictions[0].matches[0].name == "balance"

    embedded = await call(
        models, "Embed", models_pb2.EmbedRequest(**HF_SCOPE, model_id=model.id, examples=QUESTIONS)
    )
    assert list(embedded.shape) == [3, 384]  # [n, dim]; data packed row-major
    rows = np.array(embedded.data, dtype=np.float32).reshape(tuple(embedded.shape))
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-3)

    scoped = {**HF_SCOPE, "model_id": model.id}
    await call(models, "UnloadModel", models_pb2.UnloadModelRequest(**scoped))
    again = await call(
        models, "Classify", models_pb2.ClassifyRequest(**scoped, examples=examples[:1])
    )
    assert again.predictions[0].matches[0].id == BEST[0]  # reloaded from disk

    await call(models, "DeleteModel", models_pb2.DeleteModelRequest(**scoped))
    code, details = await status_of(call(models, "GetModel", models_pb2.GetModelRequest(**scoped)))
    assert code == grpc.StatusCode.NOT_FOUND and model.id in details


async def test_unknown_model_is_not_found_and_a_bad_training_set_is_invalid(
    deployment: Deployment,
) -> None:
    models = deployment.models
    request = models_pb2.ClassifyRequest(
        **HF_SCOPE, model_id="model-nope", examples=[service_pb2.Example(contents="hello")]
    )
    code, details = await status_of(call(models, "Classify", request))
    assert code == grpc.StatusCode.NOT_FOUND and "model-nope" in details

    code, details = await status_of(call(models, "TrainModel", train_request(b"{not json")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not HumanFirst JSON" in details
    listed = await call(models, "ListModels", models_pb2.ListModelsRequest(**HF_SCOPE))
    assert list(listed.models) == []  # nothing of the refused set was kept

    code, details = await status_of(
        call(models, "GetModel", models_pb2.GetModelRequest(**HF_SCOPE, model_id="../x"))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "model_id" in details


# -- Discovery -----------------------------------------------------------------------------


async def test_discovery_offers_models_while_the_model_service_runs(
    *,
    gateway: Gateway,
    model_settings: ModelSettings,
    encoder: SentenceEncoder,
    tracker: TaskTracker,
    certificates: DevelopmentCertificates,  # noqa: F811
    cleanup: Cleanup,
) -> None:
    request = discovery_pb2.GetCapabilitiesRequest()
    async with client(gateway, certificates.client_credentials) as channel:
        discovery = stub(channel, discovery_pb2, "Discovery")
        models = stub(channel, models_pb2, "Models")
        async with running_models(model_settings, encoder, cleanup):
            reply = await call(discovery, "GetCapabilities", request)
            assert reply.supports_models and reply.supports_workspaces
            assert reply.max_concurrent_models == 2  # the service's own numbers
            assert reply.model_classification_batch_size == 64

        # Stopped: its queues stay, but nothing answers within the probe's short deadline.
        async def models_withdrawn() -> bool:
            answer = await call(discovery, "GetCapabilities", request, timeout=10)
            return not answer.supports_models

        await eventually(models_withdrawn, timeout=10, interval=0.3)
        code, details = await status_of(
            call(models, "ListModels", models_pb2.ListModelsRequest(**HF_SCOPE))
        )
        assert code == grpc.StatusCode.UNIMPLEMENTED and "no model service" in details


async def test_without_a_model_service_discovery_says_no_and_models_are_unimplemented(
    gateway: Gateway,
    certificates: DevelopmentCertificates,  # noqa: F811
) -> None:
    async with client(gateway, certificates.client_credentials) as channel:
        reply = await call(
            stub(channel, discovery_pb2, "Discovery"),
            "GetCapabilities",
            discovery_pb2.GetCapabilitiesRequest(),
        )
        assert reply.supports_workspaces and not reply.supports_models
        assert reply.max_concurrent_models == 0 and reply.model_classification_batch_size == 0
        models = stub(channel, models_pb2, "Models")
        for method, request in [
            ("ListModels", models_pb2.ListModelsRequest(**HF_SCOPE)),
            ("TrainModel", train_request(workspace_json())),
        ]:
            code, details = await status_of(call(models, method, request, timeout=10))
            assert code == grpc.StatusCode.UNIMPLEMENTED
            assert details.startswith(method) and "no model service is deployed" in details


# -- ferry models ----------------------------------------------------------------------------


async def ferry(gateway: Gateway, credentials: Path, command: str, *argv: str) -> int:
    """One `ferry workspaces|models ...` command, in a thread (it runs its own event loop)."""
    parser = argparse.ArgumentParser(prog="ferry")
    gateway_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            command,
            "--gateway",
            f"localhost:{gateway.grpc_port}",
            "--credentials",
            str(credentials),
            "--hf-namespace",
            HF_SCOPE["namespace"],
            "--integration-id",
            HF_SCOPE["integration_id"],
            *argv,
        ]
    )
    return int(await asyncio.to_thread(args.run, BaseSettings(), args))


async def test_ferry_models_list_train_classify_delete(
    deployment: Deployment,
    certificates: DevelopmentCertificates,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gateway = deployment.gateway
    credentials = tmp_path / CLIENT_FILE
    credentials.write_bytes(certificates.client_credentials.to_json())
    source = tmp_path / "banking.json"
    source.write_bytes(workspace_json())
    imported = await ferry(
        gateway, credentials, "workspaces", "import", "bank", str(source), "--create"
    )
    assert imported == 0
    capsys.readouterr()

    assert await ferry(gateway, credentials, "models", "train", "bank") == 0
    out = capsys.readouterr().out
    found = re.search(r"model (\S+) trained on workspace bank", out)
    assert found, out
    model_id = found.group(1)

    assert await ferry(gateway, credentials, "models", "list") == 0
    listing = capsys.readouterr().out
    assert model_id in listing and "yes" in listing

    assert await ferry(gateway, credentials, "models", "classify", model_id, *QUESTIONS) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[1].split(" ")[0] for line in lines] == [
        "balance",
        "transfer",
        "card_lost",
    ]

    assert await ferry(gateway, credentials, "models", "delete", model_id) == 0
    assert f"model {model_id} deleted" in capsys.readouterr().out
    with pytest.raises(CliError, match=r"NOT_FOUND: .*" + re.escape(model_id)):
        await ferry(gateway, credentials, "models", "delete", model_id)
