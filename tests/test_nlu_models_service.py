"""The `nlu_models` service over the real RabbitMQ, with the task tracker beside it: each of
HumanFirst's eight `Models` operations, the advertised capabilities, models that outlive a
restart, the errors the gateway maps to gRPC codes, and a training whose worker is
SIGKILLed midway finishing after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import numpy as np
import pytest

from services.nlu_models.app import NluModels
from services.nlu_models.embedding import SentenceEncoder
from services.nlu_models.settings import ModelSettings
from services.task_tracker.app import TaskTracker
from shared.chunks import (
    TransferLimits,
    declare_transfer_queue,
    delete_transfer_queue,
    new_transfer_id,
    send_chunks,
    transfer_queue,
)
from shared.contracts.models import (
    IntentsDataOptions,
    Model,
    ModelCapabilities,
    ModelCapabilitiesReply,
    ModelClassify,
    ModelClassifyReply,
    ModelDelete,
    ModelDone,
    ModelEmbed,
    ModelEmbedReply,
    ModelGet,
    ModelList,
    ModelListReply,
    ModelReply,
    ModelTrain,
    ModelTrainParameters,
    ModelTrainParametersReply,
    ModelUnload,
)
from shared.contracts.tasks import TaskCancel, TaskGet, TaskGetReply, TaskView
from shared.faults import fault_of
from shared.messaging import RemoteError, Requester, publish
from shared.settings import BaseSettings
from tests.conftest import Cleanup
from tests.support.tracker import free_port, tracker_settings
from tests.support.waiting import eventually

NS, INTEGRATION = "acme", "int-1"
LIST = ModelList(namespace=NS, integration_id=INTEGRATION)

PHRASES = {
    "balance": [
        "what is my balance",
        "how much money do i have",
        "show me my account balance",
        "check my balance please",
        "how much is left in my savings",
        "tell me my current balance",
    ],
    "transfer": [
        "send 50 dollars to my sister",
        "transfer money to john",
        "wire 200 euros to my landlord",
        "move cash to my savings account",
        "pay my friend twenty bucks",
        "make a transfer of 100 pounds",
    ],
    "card_lost": [
        "i lost my credit card",
        "my card is missing",
        "i can't find my debit card",
        "report a lost card",
        "i dropped my card somewhere",
        "my visa card is gone",
    ],
}


def workspace(phrases: dict[str, list[str]] = PHRASES, **extra: Any) -> dict[str, Any]:
    intents = [{"id": f"intent-{name}", "name": name} for name in phrases]
    examples = [
        {"text": text, "intents": [{"intent_id": f"intent-{name}"}]}
        for name, texts in phrases.items()
        for text in texts
    ]
    return {"intents": intents, "examples": examples, **extra}


def train_request(data: bytes, *, gzip_encoding: bool = True) -> ModelTrain:
    return ModelTrain(
        namespace=NS,
        integration_id=INTEGRATION,
        format_options=IntentsDataOptions(gzip_encoding=gzip_encoding, skip_empty_intents=True),
        data=gzip.compress(data) if gzip_encoding else data,
        display_name="banking",
    )


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
        train_iterations=150,
    )


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


@pytest.fixture
async def tracker(
    base_settings: BaseSettings, tmp_path: Path, cleanup: Cleanup
) -> AsyncIterator[TaskTracker]:
    tracker = TaskTracker(tracker_settings(base_settings, "sqlite", tmp_path))
    async with cleanup.running(tracker.service):
        yield tracker


@pytest.fixture
async def models(
    model_settings: ModelSettings,
    encoder: SentenceEncoder,
    tracker: TaskTracker,
    cleanup: Cleanup,
) -> AsyncIterator[NluModels]:
    async with running_models(model_settings, encoder, cleanup) as models:
        yield models


@pytest.fixture
async def client(base_settings: BaseSettings, models: NluModels) -> AsyncIterator[Requester]:
    async with Requester(base_settings.amqp_url, models.service.names) as requester:
        yield requester


async def task_of(client: Requester, task_id: str) -> TaskView | None:
    try:
        return (await client.request(TaskGet(task_id=task_id), TaskGetReply)).task
    except RemoteError:
        return None


async def trained(client: Requester, data: bytes, *, timeout: float = 60) -> Model:
    """Train on `data` and wait for the model to be READY (its task SUCCESS)."""
    reply = await client.request(train_request(data), ModelReply, timeout=30)
    assert reply.model is not None and reply.model.status == "TRAINING"
    assert reply.model.task_id is not None
    task_id = reply.model.task_id

    async def done() -> TaskView | None:
        task = await task_of(client, task_id)
        return task if task is not None and task.status in ("SUCCESS", "ERRORED") else None

    task = await eventually(done, timeout=timeout, interval=0.2)
    assert task.status == "SUCCESS", task
    got = await client.request(get(reply.model.id), ModelReply)
    assert got.model is not None
    return got.model


def get(model_id: str) -> ModelGet:
    return ModelGet(namespace=NS, integration_id=INTEGRATION, model_id=model_id)


def classify(model_id: str, examples: list[str]) -> ModelClassify:
    return ModelClassify(
        namespace=NS, integration_id=INTEGRATION, model_id=model_id, examples=examples
    )


def code_of(exc: RemoteError) -> str | None:
    return fault_of(str(exc))[0]


# -- the operations -------------------------------------------------------------------------


async def test_capabilities_and_train_parameters(
    client: Requester, model_settings: ModelSettings
) -> None:
    capabilities = await client.request(ModelCapabilities(), ModelCapabilitiesReply)
    assert capabilities.max_concurrent_models == model_settings.max_loaded_models
    assert capabilities.model_classification_batch_size == model_settings.classify_batch_size
    assert capabilities.dimensionality == 384

    params = await client.request(
        ModelTrainParameters(namespace=NS, integration_id=INTEGRATION), ModelTrainParametersReply
    )
    assert params.data_format == "INTENTS_FORMAT_HF_JSON"
    assert params.format_options.gzip_encoding is True
    assert params.format_options.skip_empty_intents is True


async def test_train_list_get_classify_embed_unload_delete(
    client: Requester, models: NluModels
) -> None:
    model = await trained(client, json.dumps(workspace()).encode())
    assert model.status == "READY" and model.intents == 3 and model.examples == 18
    assert model.classification is not None and model.classification.max_batch_size == 64
    assert model.embeddings is not None and model.embeddings.dimensionality == 384

    listed = await client.request(
        ModelList(namespace=NS, integration_id=INTEGRATION), ModelListReply
    )
    assert [m.id for m in listed.models] == [model.id]
    other = await client.request(ModelList(namespace=NS, integration_id="other"), ModelListReply)
    assert other.models == []

    texts = ["how much do i have in my account", "please send money to my brother", "lost my card"]
    reply = await client.request(classify(model.id, texts), ModelClassifyReply)
    assert len(reply.predictions) == len(texts)  # one per example, in order
    best = [p.matches[0].id for p in reply.predictions]
    assert best == ["intent-balance", "intent-transfer", "intent-card_lost"]
    for prediction in reply.predictions:
        scores = [m.score for m in prediction.matches]
        assert scores == sorted(scores, reverse=True)
        assert all(s >= models.settings.match_floor for s in scores)
    assert reply.predictions[0].matches[0].name == "balance"

    embedded = await client.request(
        ModelEmbed(namespace=NS, integration_id=INTEGRATION, model_id=model.id, examples=texts),
        ModelEmbedReply,
    )
    assert embedded.shape == [3, 384]
    assert len(embedded.data) == 3 * 384
    rows = np.array(embedded.data, dtype=np.float32).reshape(embedded.shape)
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-4)

    # Unload frees it; it stays on disk and loads again on the next use.
    assert (await client.request(get(model.id), ModelReply)).model.loaded  # type: ignore[union-attr]
    await client.request(
        ModelUnload(namespace=NS, integration_id=INTEGRATION, model_id=model.id), ModelDone
    )
    assert not (await client.request(get(model.id), ModelReply)).model.loaded  # type: ignore[union-attr]
    again = await client.request(classify(model.id, texts[:1]), ModelClassifyReply)
    assert again.predictions[0].matches[0].id == "intent-balance"

    await client.request(
        ModelDelete(namespace=NS, integration_id=INTEGRATION, model_id=model.id), ModelDone
    )
    with pytest.raises(RemoteError) as gone:
        await client.request(get(model.id), ModelReply)
    assert code_of(gone.value) == "NOT_FOUND"
    with pytest.raises(RemoteError) as twice:
        await client.request(
            ModelDelete(namespace=NS, integration_id=INTEGRATION, model_id=model.id), ModelDone
        )
    assert code_of(twice.value) == "NOT_FOUND"


async def test_training_data_can_arrive_as_chunks(
    client: Requester, models: NluModels, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    """As the gateway sends a 200 MiB TrainModel: chunks on a transfer queue it declares."""
    limits = TransferLimits(chunk_bytes=4096, window=4)
    data = gzip.compress(json.dumps(workspace()).encode())
    transfer_id = new_transfer_id()
    queue = transfer_queue(models.service.names, transfer_id)
    channel = await amqp.channel(publisher_confirms=True)
    await declare_transfer_queue(channel, queue, limits)
    request = train_request(b"", gzip_encoding=False)
    request.format_options.gzip_encoding = True
    request.transfer_id = transfer_id
    try:
        asking = client.request(request, ModelReply, timeout=30)
        sending = send_chunks(channel, queue, transfer_id, [data[:5000], data[5000:]], limits)
        reply, _sent = await asyncio.gather(asking, sending)
    finally:
        await delete_transfer_queue(channel, queue)
        await channel.close()
    assert reply.model is not None and reply.model.status == "TRAINING"
    assert reply.model.examples == 18

    async def ready() -> bool:
        got = await client.request(get(reply.model.id), ModelReply)  # type: ignore[union-attr]
        return got.model is not None and got.model.status == "READY"

    await eventually(ready, timeout=60, interval=0.2)

    # A transfer that never comes fails the request, and leaves nothing behind.
    request.transfer_id = new_transfer_id()
    with pytest.raises(RemoteError) as caught:
        await client.request(request, ModelReply, timeout=30)
    assert "TransferFailed" in str(caught.value)
    listed = await client.request(LIST, ModelListReply)
    assert [m.id for m in listed.models] == [reply.model.id]


async def test_models_in_memory_are_capped_least_recently_used_first(
    client: Requester, models: NluModels
) -> None:
    cap = models.settings.max_loaded_models  # 2: Discovery's max_concurrent_models
    data = json.dumps(workspace()).encode()
    trained_ids = [(await trained(client, data)).id for _ in range(cap + 1)]
    for model_id in trained_ids:
        await client.request(classify(model_id, ["my card is gone"]), ModelClassifyReply)
    listed = await client.request(LIST, ModelListReply)
    loaded = {m.id for m in listed.models if m.loaded}
    assert loaded == set(trained_ids[1:])  # the least recently used went; it stays on disk
    again = await client.request(classify(trained_ids[0], ["lost my card"]), ModelClassifyReply)
    assert again.predictions[0].matches[0].id == "intent-card_lost"


async def test_a_cancelled_training_stops_and_its_task_is_killed(
    model_settings: ModelSettings,
    encoder: SentenceEncoder,
    tracker: TaskTracker,
    cleanup: Cleanup,
    base_settings: BaseSettings,
) -> None:
    slow = replace(model_settings, train_iterations=10_000_000)
    async with (
        running_models(slow, encoder, cleanup) as models,
        Requester(base_settings.amqp_url, models.service.names) as client,
    ):
        reply = await client.request(
            train_request(json.dumps(workspace()).encode()), ModelReply, timeout=30
        )
        assert reply.model is not None and reply.model.task_id is not None
        task_id = reply.model.task_id

        async def fitting() -> bool:
            task = await task_of(client, task_id)
            return task is not None and task.status == "RUNNING" and task.progress_value >= 90

        await eventually(fitting, timeout=60, interval=0.2)
        await publish(
            tracker.service.broker,
            tracker.service.names,
            TaskCancel(task_id=task_id, requested_at=datetime.now(UTC)),
        )

        async def killed() -> TaskView | None:
            task = await task_of(client, task_id)
            return task if task is not None and task.status == "KILLED" else None

        await eventually(killed, timeout=30, interval=0.2)
        got = await client.request(get(reply.model.id), ModelReply)
        assert got.model is not None and got.model.status == "FAILED"
        assert got.model.error is not None and "cancelled" in got.model.error
        with pytest.raises(RemoteError) as caught:
            await client.request(classify(reply.model.id, ["hi"]), ModelClassifyReply)
        assert code_of(caught.value) == "FAILED_PRECONDITION"


async def test_a_trained_model_survives_a_restart(
    model_settings: ModelSettings,
    encoder: SentenceEncoder,
    tracker: TaskTracker,
    cleanup: Cleanup,
    base_settings: BaseSettings,
) -> None:
    question = ["my card is gone"]
    async with (
        running_models(model_settings, encoder, cleanup) as first,
        Requester(base_settings.amqp_url, first.service.names) as client,
    ):
        model = await trained(client, json.dumps(workspace()).encode())
        before = await client.request(classify(model.id, question), ModelClassifyReply)
    async with (
        running_models(model_settings, encoder, cleanup) as second,
        Requester(base_settings.amqp_url, second.service.names) as client,
    ):
        got = await client.request(get(model.id), ModelReply)
        assert got.model is not None and got.model.status == "READY"
        assert not got.model.loaded
        after = await client.request(classify(model.id, question), ModelClassifyReply)
    assert after.predictions == before.predictions


async def test_classify_on_a_model_that_does_not_exist_is_not_found(client: Requester) -> None:
    with pytest.raises(RemoteError) as caught:
        await client.request(classify("model-nope", ["hello"]), ModelClassifyReply)
    assert code_of(caught.value) == "NOT_FOUND"
    assert "model-nope" in str(caught.value)


@pytest.mark.parametrize(
    ("data", "gzip_encoding", "reason"),
    [
        (b"", False, "the training data is empty"),
        (b"{not json", False, "is not HumanFirst JSON"),
        (b"plain, not gzip", True, "not gzip-compressed"),
        (json.dumps({"intents": [], "examples": []}).encode(), False, "no labelled examples"),
        (
            json.dumps(workspace({"balance": PHRASES["balance"]})).encode(),
            False,
            "only one intent",
        ),
        (
            json.dumps(
                {
                    "intents": [{"id": "a", "name": "a"}],
                    "examples": [
                        {"text": "hi", "intents": [{"intent_id": "a"}]},
                        {"text": "yo", "intents": [{"intent_id": "ghost"}]},
                    ],
                }
            ).encode(),
            False,
            "'ghost', which the training data does not define",
        ),
        (json.dumps({"examples": [{"intents": []}]}).encode(), False, "`text`"),
    ],
)
async def test_an_empty_or_malformed_training_set_is_invalid_argument(
    client: Requester, data: bytes, gzip_encoding: bool, reason: str
) -> None:
    request = train_request(data, gzip_encoding=False)
    request.format_options.gzip_encoding = gzip_encoding
    with pytest.raises(RemoteError) as caught:
        await client.request(request, ModelReply)
    assert code_of(caught.value) == "INVALID_ARGUMENT", str(caught.value)
    assert reason in str(caught.value)
    listed = await client.request(
        ModelList(namespace=NS, integration_id=INTEGRATION), ModelListReply
    )
    assert listed.models == []  # nothing was stored


async def test_bad_ids_and_oversized_batches_are_invalid_argument(client: Requester) -> None:
    with pytest.raises(RemoteError) as caught:
        await client.request(
            ModelGet(namespace=NS, integration_id=INTEGRATION, model_id="../etc"), ModelReply
        )
    assert "model_id" in str(caught.value)
    with pytest.raises(RemoteError) as too_many:
        await client.request(classify("model-x", ["hi"] * 65), ModelClassifyReply)
    assert code_of(too_many.value) == "INVALID_ARGUMENT"
    assert "at most 64" in str(too_many.value)


# -- a worker killed mid-training -------------------------------------------------------------


class ModelProcess:
    """`python -m services.nlu_models` as an operator would run it."""

    def __init__(self, settings: ModelSettings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        env = {**os.environ, **self.settings.as_environment()}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.nlu_models"], env=env, stdout=out, stderr=out
            )
        url = f"http://127.0.0.1:{self.settings.http_port}/readyz"

        async def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"nlu_models exited: {self.log.read_text()[-2000:]}")
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(url, timeout=1)).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(ready, timeout=60, interval=0.2)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 30) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout)


@pytest.mark.slow
async def test_a_worker_killed_mid_training_leaves_a_task_that_completes_after_restart(
    model_settings: ModelSettings,
    tracker: TaskTracker,
    cleanup: Cleanup,
    base_settings: BaseSettings,
    tmp_path: Path,
) -> None:
    port = free_port()
    # So many gradient steps that the first worker is surely still fitting when killed.
    slow = replace(model_settings, http_port=port, train_iterations=10_000_000)
    worker = ModelProcess(slow, tmp_path / "worker.log")
    probe = NluModels(slow)  # only for its queue names, for the clean-up
    cleanup.services.append(probe.service)
    probe.close()
    await worker.start()
    try:
        async with Requester(base_settings.amqp_url, probe.service.names) as client:
            reply = await client.request(
                train_request(json.dumps(workspace()).encode()), ModelReply, timeout=30
            )
            assert reply.model is not None and reply.model.task_id is not None
            task_id, model_id = reply.model.task_id, reply.model.id

            async def fitting() -> bool:
                task = await task_of(client, task_id)
                return task is not None and task.status == "RUNNING" and task.progress_value >= 90

            await eventually(fitting, timeout=60, interval=0.2)
            # SIGTERM: the process stops soon (the training gives up, unacked), ...
            worker.stop(timeout=20)
            task = await task_of(client, task_id)
            assert task is not None and task.status == "RUNNING"
            # ... and the next worker takes the training up again; SIGKILL that one.
            worker = ModelProcess(slow, tmp_path / "worker1.log")
            await worker.start()

            # Progress never moves backwards on the tracker: the worker's log tells when the
            # training started again; then let it fit for a moment before the kill.
            log = tmp_path / "worker1.log"
            await eventually(lambda: "training started" in log.read_text(), timeout=60)
            await asyncio.sleep(1.0)
            worker.kill()
            task = await task_of(client, task_id)
            assert task is not None and task.status == "RUNNING"

            worker = ModelProcess(replace(slow, train_iterations=100), tmp_path / "worker2.log")
            await worker.start()

            async def finished() -> TaskView | None:
                found = await task_of(client, task_id)
                return found if found is not None and found.status == "SUCCESS" else None

            done = await eventually(finished, timeout=60, interval=0.2)
            assert done.result["model_id"] == model_id
            got = await client.request(get(model_id), ModelReply)
            assert got.model is not None and got.model.status == "READY"
            result = await client.request(classify(model_id, ["lost my card"]), ModelClassifyReply)
            assert result.predictions[0].matches[0].id == "intent-card_lost"
    finally:
        worker.stop()
