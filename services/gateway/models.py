"""HumanFirst `Models`, served by the `nlu_models` service over RabbitMQ.

Each RPC is a thin translation between the proto and `shared.contracts.models` (one request
per RPC). TrainModel's data (up to 200 MiB) travels as chunks on a private transfer queue,
as a workspace import does; the RPC then waits, within its deadline, for the training to
finish, so that HumanFirst gets a model it can classify with (a training still running
when the time is up is answered as it stands: a model without `classification`).

Whether models are offered at all is decided by asking `models.capabilities` with a short
deadline (`ModelsAvailability`): when the model service is not deployed (nothing consumes
the key, or nothing answers in time) Discovery says `supports_models=false` and every RPC
here answers UNIMPLEMENTED saying so. Once it is deployed, failures map as `rpc.py` maps
them, naming the `nlu_models` service.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypedDict, TypeVar, cast

import grpc
import grpc.aio

from services.gateway.generated.zia.ai.external_integration.v1alpha1 import models_pb2
from services.gateway.generated.zia.ai.external_nlu.v1alpha1 import service_pb2
from services.gateway.generated.zia.ai.playbook.data.config.v1alpha1 import config_pb2
from services.gateway.rpc import RpcError, ask, remaining, with_transfer
from services.gateway.settings import GatewaySettings
from shared.chunks import (
    ChunkLink,
    TransferLimits,
    declare_transfer_queue,
    delete_transfer_queue,
    new_transfer_id,
    send_chunks,
    transfer_queue,
)
from shared.contracts.base import Contract
from shared.contracts.models import (
    DataFormat,
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
from shared.contracts.workspaces import check_id
from shared.messaging import NoReply, RemoteError, Unroutable
from shared.service import Service

R = TypeVar("R", bound=Contract)

MODEL_SERVICE = "nlu_models"
NOT_DEPLOYED = (
    "models are not supported by this integration: no model service is deployed in Ferry"
    " (Discovery.GetCapabilities answers supports_models=false)"
)
# Asking whether the model service runs must not hold Discovery up: it answers at once
# when it runs, and nothing consuming the key is reported at once too.
PROBE_TIMEOUT = 2.0
# How long one answer of the probe holds: every Models RPC consults it, and HumanFirst calls
# several in a row; short, so that deploying (or removing) the service shows soon.
PROBE_TTL = 5.0
# At most this long, within the RPC's deadline, for one request to the model service.
REQUEST_CEILING = 60.0
# TrainModel waits for its training this long at most (within the RPC's deadline).
TRAINING_WAIT = 300.0
TRAINING_POLL = 0.25  # seconds between two looks at a training model
# Left of the deadline to answer with the model as it stands rather than fail the RPC.
TRAINING_ANSWER_MARGIN = 1.0


async def _ask(
    service: Service,
    context: grpc.aio.ServicerContext,
    message: Contract,
    reply_type: type[R],
    *,
    ceiling: float = REQUEST_CEILING,
) -> R:
    """`rpc.ask`, with the model service's ceiling: training and classifying take longer
    than the other services' requests."""
    return await ask(service, context, message, reply_type, ceiling=ceiling)


class ModelsAvailability:
    """Whether the model service is deployed, and what it advertises, from a recent
    `models.capabilities` answer (shared by Discovery and the Models RPCs)."""

    def __init__(
        self, service: Service, *, timeout: float = PROBE_TIMEOUT, ttl: float = PROBE_TTL
    ) -> None:
        self.service = service
        self.timeout = timeout
        self.ttl = ttl
        self._answer: ModelCapabilitiesReply | None = None
        self._asked_at: float | None = None
        self._probing = asyncio.Lock()  # concurrent RPCs share one probe

    async def capabilities(self) -> ModelCapabilitiesReply | None:
        """The model service's capabilities, or None when it is not deployed (or not
        reachable: RabbitMQ down means no models either, which Discovery must not hide)."""
        async with self._probing:
            now = time.monotonic()
            if self._asked_at is not None and now - self._asked_at < self.ttl:
                return self._answer
            try:
                self._answer = await self.service.request(
                    ModelCapabilities(), ModelCapabilitiesReply, timeout=self.timeout
                )
            except (RemoteError, NoReply, Unroutable, OSError, TimeoutError):
                self._answer = None
            self._asked_at = time.monotonic()
            return self._answer

    def forget(self) -> None:
        """Ask again next time (the service was seen missing)."""
        self._asked_at = None


# -- proto <-> contracts -------------------------------------------------------------------


def _model(model: Model | None) -> models_pb2.Model:
    if model is None:
        raise RpcError(grpc.StatusCode.INTERNAL, f"the {MODEL_SERVICE} answered without a model")
    message = models_pb2.Model(id=model.id, display_name=model.display_name)
    if model.embeddings is not None:
        e = model.embeddings
        message.embeddings.CopyFrom(
            models_pb2.EmbedConfig(
                dimensionality=e.dimensionality,
                max_batch_size=e.max_batch_size,
                max_token_size=e.max_token_size,
                max_token_count=e.max_token_count,
            )
        )
    if model.classification is not None:
        message.classification.CopyFrom(
            models_pb2.ClassificationConfig(max_batch_size=model.classification.max_batch_size)
        )
    return message


def _options_to_proto(options: IntentsDataOptions) -> config_pb2.IntentsDataOptions:
    return config_pb2.IntentsDataOptions(
        hierarchical_intent_name_disabled=options.hierarchical_intent_name_disabled,
        hierarchical_delimiter=options.hierarchical_delimiter,
        zip_encoding=options.zip_encoding,
        hierarchical_follow_up=options.hierarchical_follow_up,
        include_negative_phrases=options.include_negative_phrases,
        gzip_encoding=options.gzip_encoding,
        skip_empty_intents=options.skip_empty_intents,
    )


def _options_from_proto(options: config_pb2.IntentsDataOptions) -> IntentsDataOptions:
    # The tag predicates are left out: HumanFirst applies them before it sends the data.
    return IntentsDataOptions(
        hierarchical_intent_name_disabled=options.hierarchical_intent_name_disabled,
        hierarchical_delimiter=options.hierarchical_delimiter,
        zip_encoding=options.zip_encoding,
        hierarchical_follow_up=options.hierarchical_follow_up,
        include_negative_phrases=options.include_negative_phrases,
        gzip_encoding=options.gzip_encoding,
        skip_empty_intents=options.skip_empty_intents,
    )


def _data_format(value: int) -> DataFormat:
    if value == config_pb2.INTENTS_FORMAT_INVALID:
        return "INTENTS_FORMAT_HF_JSON"  # unset, as a workspace import takes it
    try:
        return cast(DataFormat, config_pb2.IntentsDataFormat.Name(value))
    except ValueError:
        raise RpcError(
            grpc.StatusCode.INVALID_ARGUMENT, f"data_format {value} is not an IntentsDataFormat"
        ) from None


class ScopeFields(TypedDict):
    namespace: str
    integration_id: str


class ModelScopeFields(ScopeFields):
    model_id: str


def _scope(request: Any) -> ScopeFields:
    return {
        "namespace": check_id("namespace", request.namespace),
        "integration_id": check_id("integration_id", request.integration_id),
    }


def _model_scope(request: Any) -> ModelScopeFields:
    # check_id's kinds name workspace ids; its rules are the model ids' rules too.
    return {**_scope(request), "model_id": check_id(cast(Any, "model_id"), request.model_id)}


# -- the servicer --------------------------------------------------------------------------


class ModelsServicer:
    """HumanFirst `Models` over the `nlu_models` service. Built without a runtime (or while
    the model service is not deployed), every RPC answers UNIMPLEMENTED."""

    def __init__(
        self,
        service: Service | None = None,
        settings: GatewaySettings | None = None,
        link: ChunkLink | None = None,
        availability: ModelsAvailability | None = None,
    ) -> None:
        self.service = service
        self.link = link
        self.availability = availability
        if availability is None and service is not None:
            self.availability = ModelsAvailability(service)
        settings = settings or GatewaySettings()
        self.transfer_timeout = settings.transfer_timeout
        self.send_limits = TransferLimits(
            chunk_bytes=settings.chunk_bytes,
            window=settings.transfer_window,
            max_bytes=settings.max_message_bytes_grpc,
        )

    async def _deployed(self, rpc: str) -> Service:
        """The runtime to ask with, or UNIMPLEMENTED when there is no model service."""
        if self.service is None or self.availability is None:
            raise RpcError(grpc.StatusCode.UNIMPLEMENTED, f"{rpc}: {NOT_DEPLOYED}")
        if await self.availability.capabilities() is None:
            raise RpcError(grpc.StatusCode.UNIMPLEMENTED, f"{rpc}: {NOT_DEPLOYED}")
        return self.service

    async def _ask(
        self, rpc: str, context: grpc.aio.ServicerContext, message: Contract, reply_type: type[R]
    ) -> R:
        service = await self._deployed(rpc)
        try:
            return await _ask(service, context, message, reply_type)
        except RpcError as exc:
            if exc.code == grpc.StatusCode.UNAVAILABLE and self.availability is not None:
                self.availability.forget()  # gone since the probe: look again next time
            raise

    async def GetTrainParameters(
        self, request: models_pb2.GetTrainParametersRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.GetTrainParametersResponse:
        query = ModelTrainParameters(**_scope(request))
        reply = await self._ask("GetTrainParameters", context, query, ModelTrainParametersReply)
        return models_pb2.GetTrainParametersResponse(
            data_format=config_pb2.IntentsDataFormat.Value(reply.data_format),
            format_options=_options_to_proto(reply.format_options),
        )

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ListModelsResponse:
        reply = await self._ask("ListModels", context, ModelList(**_scope(request)), ModelListReply)
        return models_pb2.ListModelsResponse(models=[_model(m) for m in reply.models])

    async def GetModel(
        self, request: models_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.Model:
        query = ModelGet(**_model_scope(request))
        return _model((await self._ask("GetModel", context, query, ModelReply)).model)

    async def DeleteModel(
        self, request: models_pb2.DeleteModelRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.DeleteModelResponse:
        await self._ask("DeleteModel", context, ModelDelete(**_model_scope(request)), ModelDone)
        return models_pb2.DeleteModelResponse()

    async def UnloadModel(
        self, request: models_pb2.UnloadModelRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.UnloadModelResponse:
        await self._ask("UnloadModel", context, ModelUnload(**_model_scope(request)), ModelDone)
        return models_pb2.UnloadModelResponse()

    async def Classify(
        self, request: models_pb2.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ClassifyResponse:
        query = ModelClassify(
            **_model_scope(request), examples=[example.contents for example in request.examples]
        )
        reply = await self._ask("Classify", context, query, ModelClassifyReply)
        return models_pb2.ClassifyResponse(
            predictions=[
                service_pb2.Predictions(
                    matches=[
                        service_pb2.IntentMatch(id=m.id, name=m.name, score=m.score)
                        for m in prediction.matches
                    ]
                )
                for prediction in reply.predictions
            ]
        )

    async def Embed(
        self, request: models_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.EmbedResponse:
        query = ModelEmbed(**_model_scope(request), examples=list(request.examples))
        reply = await self._ask("Embed", context, query, ModelEmbedReply)
        # Already packed row-major with shape [examples, dimensionality], as the proto wants.
        return models_pb2.EmbedResponse(data=reply.data, shape=reply.shape)

    async def TrainModel(
        self, request: models_pb2.TrainModelRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.TrainModelResponse:
        scope = _scope(request)
        data_format = _data_format(request.data_format)
        service = await self._deployed("TrainModel")
        assert self.link is not None  # built with a runtime, so with its chunk link
        transfer_id = new_transfer_id()
        command = ModelTrain(
            **scope,
            data_format=data_format,
            format_options=_options_from_proto(request.format_options),
            transfer_id=transfer_id,
        )
        data = request.data
        timeout = remaining(context, self.transfer_timeout)
        queue = transfer_queue(service.names, transfer_id)
        channel = await self.link.channel()
        try:
            await declare_transfer_queue(channel, queue, self.send_limits)
            asking = service.request(command, ModelReply, timeout=timeout)
            sending = send_chunks(channel, queue, transfer_id, [data], self.send_limits)
            del data  # the request keeps the bytes; the chunks are slices of them
            reply, _ = await with_transfer(asking, sending, command.ROUTING_KEY)
        finally:
            await delete_transfer_queue(channel, queue)
            await channel.close()
        model = reply.model
        if model is None:
            raise RpcError(grpc.StatusCode.INTERNAL, f"{MODEL_SERVICE} answered without a model")
        trained = await self._trained(service, context, ModelGet(**scope, model_id=model.id))
        return models_pb2.TrainModelResponse(model=_model(trained or model))

    async def _trained(
        self, service: Service, context: grpc.aio.ServicerContext, query: ModelGet
    ) -> Model | None:
        """The model once its training ended, or as it stands when the time is up. A failed
        training fails the RPC with the service's reason."""
        deadline = time.monotonic() + remaining(context, TRAINING_WAIT)
        model: Model | None = None
        while deadline - time.monotonic() > TRAINING_ANSWER_MARGIN:
            ceiling = max(0.1, deadline - time.monotonic() - TRAINING_ANSWER_MARGIN)
            model = (await _ask(service, context, query, ModelReply, ceiling=ceiling)).model
            if model is None or model.status == "READY":
                return model
            if model.status == "FAILED":
                raise RpcError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"training model {model.id} failed: {model.error or 'no reason given'}",
                )
            await asyncio.sleep(TRAINING_POLL)
        return model
