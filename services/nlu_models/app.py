"""The NLU model service: HumanFirst `Models` behind RabbitMQ request/reply (`models.*`).

It trains intent classifiers on HumanFirst JSON, classifies and embeds examples with them,
and keeps them on disk, one directory per HumanFirst namespace and integration. Every model
shares one sentence encoder (all-MiniLM-L6-v2, run on the CPU with numpy; see
`embedding.py`), and its classifier is a logistic regression on those embeddings, so
`Classify` and `Embed` answer in one latent space.

Training is a task on the tracker: `models.create` (TrainModel) validates and stores the
training data, records the model as TRAINING and submits a task whose driving command,
`models.train`, does the work with progress reports. The command is acked only when the
model is stored, so a worker that dies mid-training leaves it to be redelivered (or
re-driven by the tracker's sweep) and trained again from the stored data after a restart.

Errors come back as error replies that start with their kind (`NotFound:`,
`InvalidArgument:`, `FailedPrecondition:`), which the gateway turns into gRPC status codes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import msgspec
import numpy as np

from services.nlu_models import training
from services.nlu_models.classifier import IntentClassifier
from services.nlu_models.embedding import (
    MAX_TOKENS,
    RUNTIMES,
    ModelUnavailable,
    SentenceEncoder,
)
from services.nlu_models.settings import ModelSettings
from services.nlu_models.storage import IntentRecord, ModelFiles, ModelKey, ModelRecord
from shared.chunks import ChunkLink, TransferLimits, receive_chunks, transfer_queue
from shared.contracts.base import Contract
from shared.contracts.models import (
    HF_JSON,
    ClassificationConfig,
    EmbedConfig,
    IntentMatch,
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
    ModelTrainRun,
    ModelUnload,
    Predictions,
)
from shared.contracts.tasks import DrivingCommand, TaskCancelled, TaskSubmit, TaskUpdate
from shared.faults import FailedPrecondition, InvalidArgument, NotFound
from shared.messaging import publish
from shared.retry import describe
from shared.service import Service, StartupFailed
from shared.topology import WorkQueue

SERVICE = "nlu_models"
TASK_KIND = "nlu_models.train"
MAX_TRAINING_BYTES = 1024 * 1024 * 1024  # inflated HumanFirst JSON; a bigger one is refused
PROGRESS_INTERVAL = 0.5  # seconds between two progress reports, at least
PROGRESS_TIMEOUT = 30.0  # seconds a progress report may take to be confirmed

T = TypeVar("T")
ReportedStatus = Literal["RUNNING", "SUCCESS", "ERRORED", "KILLED"]


Report = Callable[..., Coroutine[Any, Any, None]]  # report(status, percent, message, **fields)


class TrainingCancelled(Exception):
    """The training's task was cancelled; raised in the training thread to stop it."""


class TrainingInterrupted(Exception):
    """The service stopped; raised in the training thread so that the process can exit."""


@dataclass(frozen=True)
class LoadedModel:
    record: ModelRecord
    classifier: IntentClassifier


class NluModels:
    def __init__(self, settings: ModelSettings, *, encoder: SentenceEncoder | None = None) -> None:
        """`encoder`: one already loaded (tests share one); by default it is loaded at
        start, not here: building connects to nothing and loads no model."""
        self.settings = settings
        self.service = Service(SERVICE, settings, description=__doc__)
        self.log = logging.getLogger(f"ferry.{SERVICE}")
        self.files = ModelFiles(settings.data_dir)
        self.link = ChunkLink(settings.amqp_url)  # training data arriving in chunks
        self.encoder = encoder
        # One thread for the requests' CPU work (the encoder uses the cores itself, so
        # requests queue here in order rather than fight over them), and one for training,
        # so that a long training does not hold Classify and Embed up.
        self._compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlu-compute")
        self._training = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlu-training")
        self._loaded: OrderedDict[ModelKey, LoadedModel] = OrderedDict()
        self._locks: dict[ModelKey, asyncio.Lock] = {}
        # The trainings running here, by task id: set when their task is cancelled.
        self._stopping: dict[str, threading.Event] = {}
        # Set once the service stopped: a training still running in its thread gives up
        # (its command was not acked, so it is redelivered), and the process can exit.
        self._stopped = threading.Event()
        self.service.app.on_startup(self._start)
        self.service.app.after_shutdown(self._stop)
        self._register()

    # -- lifecycle -------------------------------------------------------------------------

    async def _start(self) -> None:
        self._stopped.clear()
        self.files.open()
        if self.encoder is None:
            try:
                self.encoder = await self._run(self._load_encoder)
            except ModelUnavailable as exc:
                raise StartupFailed(str(exc)) from None
            self.log.info(
                "embedding model loaded",
                extra={
                    "model": self.encoder.name,
                    "runtime": self.encoder.runtime,
                    "dimensionality": self.encoder.dimensionality,
                },
            )

    def _load_encoder(self) -> SentenceEncoder:
        runtime = self.settings.embedding_runtime
        assert runtime in RUNTIMES  # checked with the settings
        return SentenceEncoder.load_packaged(
            runtime=runtime,  # type: ignore[arg-type]
            threads=self.settings.compute_threads,
        )

    async def _stop(self) -> None:
        self._stopped.set()
        await self.link.close()
        self.files.close()
        self._loaded.clear()

    def close(self) -> None:
        """Release the compute threads (for tests that build many services)."""
        self._compute.shutdown(wait=False, cancel_futures=True)
        self._training.shutdown(wait=False, cancel_futures=True)

    def _register(self) -> None:
        service = self.service

        def request(purpose: str, contract: type[Contract], prefetch: int = 8) -> WorkQueue:
            return WorkQueue.request(SERVICE, purpose, contract.ROUTING_KEY, prefetch=prefetch)

        service.handles(request("capabilities", ModelCapabilities), ModelCapabilities)(
            self.capabilities
        )
        service.handles(request("train_parameters", ModelTrainParameters), ModelTrainParameters)(
            self.train_parameters
        )
        service.handles(request("create", ModelTrain, prefetch=2), ModelTrain)(self.create)
        service.handles(request("list", ModelList), ModelList)(self.list_models)
        service.handles(request("get", ModelGet), ModelGet)(self.get)
        service.handles(request("delete", ModelDelete), ModelDelete)(self.delete)
        service.handles(request("unload", ModelUnload), ModelUnload)(self.unload)
        service.handles(request("classify", ModelClassify), ModelClassify)(self.classify)
        service.handles(request("embed", ModelEmbed), ModelEmbed)(self.embed)
        service.handles(
            WorkQueue(SERVICE, "cancelled", TaskCancelled.ROUTING_KEY, kind="broadcast"),
            TaskCancelled,
        )(self.cancelled)
        # One training at a time per worker: it takes the CPU.
        service.handles(
            WorkQueue(SERVICE, "train", ModelTrainRun.ROUTING_KEY, kind="command", prefetch=1),
            ModelTrainRun,
        )(self.train)

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._compute, func, *args)

    def _lock(self, key: ModelKey) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    @property
    def _encoder(self) -> SentenceEncoder:
        if self.encoder is None:
            raise FailedPrecondition("the embedding model is not loaded yet")
        return self.encoder

    # -- what a model looks like -----------------------------------------------------------

    def _embed_config(self) -> EmbedConfig:
        batch = self.settings.classify_batch_size
        return EmbedConfig(
            dimensionality=self._encoder.dimensionality,
            max_batch_size=batch,
            max_token_size=MAX_TOKENS,
            max_token_count=batch * MAX_TOKENS,
        )

    def _view(self, key: ModelKey, record: ModelRecord) -> Model:
        ready = record.status == "READY"
        return Model(
            id=record.id,
            display_name=record.display_name,
            embeddings=self._embed_config(),
            classification=ClassificationConfig(max_batch_size=self.settings.classify_batch_size)
            if ready
            else None,
            status=record.status,  # type: ignore[arg-type]
            task_id=record.task_id,
            error=record.error,
            intents=len(record.intents),
            examples=record.examples,
            loaded=key in self._loaded,
            created_at=datetime.fromisoformat(record.created_at) if record.created_at else None,
            trained_at=datetime.fromisoformat(record.trained_at) if record.trained_at else None,
        )

    def _record(self, key: ModelKey) -> ModelRecord:
        record = self.files.read_record(key)
        if record is None:
            raise NotFound(f"no model {key}")
        return record

    # -- queries ---------------------------------------------------------------------------

    async def capabilities(self, body: ModelCapabilities) -> ModelCapabilitiesReply:
        return ModelCapabilitiesReply(
            max_concurrent_models=self.settings.max_loaded_models,
            model_classification_batch_size=self.settings.classify_batch_size,
            embedding_model=self._encoder.name,
            dimensionality=self._encoder.dimensionality,
        )

    async def train_parameters(self, body: ModelTrainParameters) -> ModelTrainParametersReply:
        return ModelTrainParametersReply(
            data_format=HF_JSON,
            format_options=IntentsDataOptions(gzip_encoding=True, skip_empty_intents=True),
        )

    async def list_models(self, body: ModelList) -> ModelListReply:
        models = []
        for model_id in self.files.model_ids(body.namespace, body.integration_id):
            key = ModelKey(body.namespace, body.integration_id, model_id)
            record = self.files.read_record(key)
            if record is not None:
                models.append(self._view(key, record))
        return ModelListReply(models=models)

    async def get(self, body: ModelGet) -> ModelReply:
        key = ModelKey(body.namespace, body.integration_id, body.model_id)
        return ModelReply(model=self._view(key, self._record(key)))

    # -- changes ---------------------------------------------------------------------------

    async def create(self, body: ModelTrain) -> ModelReply:
        """TrainModel: store the training data, validate it, then hand the training to a
        task. A bad training set is refused to the asker, and nothing of it is kept."""
        options = body.format_options
        gzip = options.gzip_encoding
        if body.transfer_id is not None and body.data:
            raise InvalidArgument("send the training data in `data` or by `transfer_id`, not both")
        model_id = f"model-{uuid.uuid4().hex[:16]}"
        key = ModelKey(body.namespace, body.integration_id, model_id)

        def validate(data: bytes) -> training.TrainingSet:
            raw = training.inflate(data, gzip=gzip, limit=MAX_TRAINING_BYTES)
            return training.parse(raw, options, data_format=body.data_format)

        if body.transfer_id is None:
            training_set = await self._run(validate, body.data)
            await asyncio.to_thread(self.files.write_data, key, body.data)
        else:
            await self._receive(body.transfer_id, key)
            try:
                stored = await asyncio.to_thread(self.files.read_data, key) or b""
                training_set = await self._run(validate, stored)
                del stored
            except BaseException:
                self.files.remove_data(key)
                raise
        task_id = f"{TASK_KIND}:{body.namespace}:{model_id}"[:200]
        record = ModelRecord(
            id=model_id,
            display_name=body.display_name or model_id,
            status="TRAINING",
            task_id=task_id,
            gzip=gzip,
            hierarchy_names=not options.hierarchical_intent_name_disabled,
            hierarchical_delimiter=options.hierarchical_delimiter,
            examples=len(training_set.texts),
            embedding_model=self._encoder.name,
            created_at=datetime.now(UTC).isoformat(),
        )
        self.files.write_record(key, record)
        command = ModelTrainRun(
            task_id=task_id,
            namespace=body.namespace,
            integration_id=body.integration_id,
            model_id=model_id,
        )
        submit = TaskSubmit(
            task_id=task_id,
            kind=TASK_KIND,
            name=f"train {record.display_name} ({len(training_set.texts)} examples,"
            f" {len(training_set.intents)} intents)",
            params={"namespace": body.namespace, "integration_id": body.integration_id},
            command=DrivingCommand(
                routing_key=ModelTrainRun.ROUTING_KEY,
                body={k: v for k, v in _fields(command).items() if k != "task_id"},
            ),
            submitted_at=datetime.now(UTC),
        )
        try:
            await publish(self.service.broker, self.service.names, submit)
        except Exception:
            self.files.remove(key)  # no task will ever train it
            raise
        self.log.info(
            "training submitted",
            extra={"model": str(key), "task_id": task_id, "examples": record.examples},
        )
        return ModelReply(model=self._view(key, record))

    async def _receive(self, transfer_id: str, key: ModelKey) -> None:
        """The chunks of `transfer_id`, as sent (gzip or not), into the model's data file."""
        queue = transfer_queue(self.service.names, transfer_id)
        limits = TransferLimits(
            chunk_bytes=self.settings.max_message_bytes,
            window=self.settings.transfer_window,
            idle_timeout=self.settings.transfer_idle_timeout,
            max_bytes=self.settings.max_training_bytes,
        )
        with self.files.directory.stage() as staged:
            channel = await self.link.channel()
            try:
                await receive_chunks(channel, queue, transfer_id, staged.handle.write, limits)
            finally:
                await channel.close()
            await asyncio.to_thread(self.files.commit_data, key, staged)

    async def delete(self, body: ModelDelete) -> ModelDone:
        key = ModelKey(body.namespace, body.integration_id, body.model_id)
        async with self._lock(key):
            self._loaded.pop(key, None)
            if not self.files.remove(key):
                raise NotFound(f"no model {key}")
        self._locks.pop(key, None)
        return ModelDone()

    async def unload(self, body: ModelUnload) -> ModelDone:
        key = ModelKey(body.namespace, body.integration_id, body.model_id)
        self._record(key)  # NotFound for a model that does not exist
        self._loaded.pop(key, None)
        return ModelDone()

    # -- using a model ---------------------------------------------------------------------

    def _check_batch(self, examples: list[str]) -> None:
        limit = self.settings.classify_batch_size
        if len(examples) > limit:
            raise InvalidArgument(f"{len(examples)} examples in one request; at most {limit}")

    async def _loaded_model(self, key: ModelKey) -> LoadedModel:
        loaded = self._loaded.get(key)
        if loaded is not None:
            self._loaded.move_to_end(key)
            return loaded
        record = self._record(key)
        if record.status != "READY":
            detail = f": {record.error}" if record.error else f" (task {record.task_id})"
            raise FailedPrecondition(f"model {key} is {record.status}{detail}")
        head = self.files.read_head(key)
        if head is None:
            raise FailedPrecondition(f"model {key} has no stored classifier")
        try:
            classifier = IntentClassifier.from_bytes(head)
        except (ValueError, KeyError, OSError) as exc:
            raise FailedPrecondition(f"the classifier of model {key} is damaged: {exc}") from None
        loaded = LoadedModel(record=record, classifier=classifier)
        self._loaded[key] = loaded
        while len(self._loaded) > self.settings.max_loaded_models:
            self._loaded.popitem(last=False)  # the least recently used: it reloads from disk
        return loaded

    async def classify(self, body: ModelClassify) -> ModelClassifyReply:
        self._check_batch(body.examples)
        key = ModelKey(body.namespace, body.integration_id, body.model_id)
        model = await self._loaded_model(key)
        encoder = self._encoder

        def scores() -> np.ndarray[Any, Any]:
            return model.classifier.probabilities(encoder.encode(body.examples))

        probabilities = await self._run(scores)
        intents = model.record.intents
        floor = self.settings.match_floor
        predictions = []
        for row in probabilities:
            ranked = np.argsort(-row, kind="stable")
            predictions.append(
                Predictions(
                    matches=[
                        IntentMatch(id=intents[i].id, name=intents[i].name, score=float(row[i]))
                        for i in ranked
                        if row[i] >= floor
                    ]
                )
            )
        return ModelClassifyReply(predictions=predictions)

    async def embed(self, body: ModelEmbed) -> ModelEmbedReply:
        self._check_batch(body.examples)
        key = ModelKey(body.namespace, body.integration_id, body.model_id)
        self._record(key)  # NotFound for a model that does not exist
        vectors = await self._run(self._encoder.encode, body.examples)
        return ModelEmbedReply(data=vectors.ravel().tolist(), shape=list(vectors.shape))

    # -- training (the task's driving command) ---------------------------------------------

    async def train(self, body: ModelTrainRun) -> None:
        key = ModelKey(body.namespace, body.integration_id, body.model_id)
        task_id = body.task_id
        report = self._reporter(task_id)
        record = self.files.read_record(key)
        if record is None:
            await report("ERRORED", 0, f"model {key} was deleted before it was trained")
            return
        if record.status == "READY":  # trained already: a redelivery after the last report
            await report("SUCCESS", 100, "trained", result=_result(record))
            return
        if record.status == "FAILED":
            await report("ERRORED", 0, record.error or "training failed")
            return
        data = await asyncio.to_thread(self.files.read_data, key)
        if data is None:
            await self._fail(key, record, "the training data is missing from the store", report)
            return
        await report("RUNNING", 0, "reading the training data")
        self.log.info("training started", extra={"model": str(key), "task_id": task_id})
        stopping = self._stopping.setdefault(task_id, threading.Event())
        on_progress = self._progress(task_id, report, stopping)
        try:
            training_set, classifier = await asyncio.get_running_loop().run_in_executor(
                self._training, self._fit, record, data, on_progress
            )
        except InvalidArgument as exc:  # validated on arrival: the stored copy is damaged
            await self._fail(key, record, str(exc), report)
            return
        except TrainingCancelled as exc:
            await self._fail(key, record, str(exc), report, status="KILLED")
            return
        finally:
            self._stopping.pop(task_id, None)
        async with self._lock(key):
            if self.files.read_record(key) is None:
                await report("ERRORED", 0, f"model {key} was deleted while training")
                return
            await asyncio.to_thread(self.files.write_head, key, classifier.to_bytes())
            trained = _replace(
                record,
                status="READY",
                intents=[
                    IntentRecord(id=intent.id, name=intent.name, parent_id=intent.parent_id)
                    for intent in training_set.intents
                ],
                examples=len(training_set.texts),
                trained_at=datetime.now(UTC).isoformat(),
            )
            self.files.write_record(key, trained)
            self._loaded.pop(key, None)
        self.files.remove_data(key)
        await report("SUCCESS", 100, "trained", result=_result(trained))
        self.log.info("model trained", extra={"model": str(key), "task_id": task_id})

    def _reporter(self, task_id: str) -> Report:
        """`report(status, percent, message, **fields)`: one `TaskUpdate` of the task."""

        async def report(status: ReportedStatus, percent: int, message: str, **extra: Any) -> None:
            update = TaskUpdate(
                task_id=task_id,
                status=status,
                progress_value=percent,
                end_value=100,
                progress_message=message[:4000],
                observed_at=datetime.now(UTC),
                **extra,
            )
            await publish(self.service.broker, self.service.names, update)

        return report

    def _progress(
        self, task_id: str, report: Report, stopping: threading.Event
    ) -> training.Progress:
        """The progress callback of a training, called in the compute thread: it stops the
        training once its task is cancelled, and reports at most every PROGRESS_INTERVAL
        (sent by the event loop and awaited here, so reports go out in order)."""
        loop = asyncio.get_running_loop()
        last_sent = [0.0]

        def on_progress(percent: int, message: str) -> None:
            if stopping.is_set():
                raise TrainingCancelled(f"task {task_id} was cancelled")
            if self._stopped.is_set():
                raise TrainingInterrupted(f"the service stopped while training task {task_id}")
            now = time.monotonic()
            if now - last_sent[0] < PROGRESS_INTERVAL:
                return
            last_sent[0] = now
            sent = asyncio.run_coroutine_threadsafe(report("RUNNING", percent, message), loop)
            try:
                sent.result(timeout=PROGRESS_TIMEOUT)
            except Exception as exc:  # a lost progress report is not worth a training
                self.log.warning(
                    "progress report not sent", extra={"task_id": task_id, "error": describe(exc)}
                )

        return on_progress

    def _fit(
        self, record: ModelRecord, data: bytes, on_progress: training.Progress
    ) -> tuple[training.TrainingSet, IntentClassifier]:
        """Parse the stored training data and train on it (in the compute thread)."""
        options = IntentsDataOptions(
            hierarchical_intent_name_disabled=not record.hierarchy_names,
            hierarchical_delimiter=record.hierarchical_delimiter,
        )
        raw = training.inflate(data, gzip=record.gzip, limit=MAX_TRAINING_BYTES)
        training_set = training.parse(raw, options)
        classifier = training.train(
            self._encoder,
            training_set,
            iterations=self.settings.train_iterations,
            regularization=self.settings.train_regularization,
            on_progress=on_progress,
        )
        return training_set, classifier

    async def _fail(
        self,
        key: ModelKey,
        record: ModelRecord,
        reason: str,
        report: Report,
        *,
        status: ReportedStatus = "ERRORED",
    ) -> None:
        self.files.write_record(key, _replace(record, status="FAILED", error=reason))
        self.files.remove_data(key)
        self.log.error("training failed", extra={"model": str(key), "error": reason})
        await report(status, 0, reason)

    async def cancelled(self, body: TaskCancelled) -> None:
        """A task was cancelled: stop its training if it runs here (every instance hears
        this; the one training it reports KILLED)."""
        stopping = self._stopping.get(body.task_id)
        if stopping is not None:
            stopping.set()


def _fields(struct: Any) -> dict[str, Any]:
    fields: dict[str, Any] = msgspec.to_builtins(struct)
    return fields


def _replace(record: ModelRecord, **changes: Any) -> ModelRecord:
    return msgspec.structs.replace(record, **changes)


def _result(record: ModelRecord) -> dict[str, Any]:
    return {"model_id": record.id, "intents": len(record.intents), "examples": record.examples}


def build(settings: ModelSettings | None = None) -> NluModels:
    return NluModels(settings or ModelSettings.from_env())
