"""Contracts of the `nlu_models` service's queues: HumanFirst `Models`, one request per RPC.

Each request maps 1:1 to an RPC of `zia.ai.external_integration.v1alpha1.Models` with the
proto's field names, so the gateway's servicer is a thin translation:

| RPC | request (routing key) | reply |
|---|---|---|
| GetTrainParameters | `ModelTrainParameters` (`models.train_parameters`) | `...Reply` |
| TrainModel | `ModelTrain` (`models.create`) | `ModelReply` (`model.status` TRAINING) |
| ListModels | `ModelList` (`models.list`) | `ModelListReply` |
| GetModel | `ModelGet` (`models.get`) | `ModelReply` |
| DeleteModel | `ModelDelete` (`models.delete`) | `ModelDone` |
| UnloadModel | `ModelUnload` (`models.unload`) | `ModelDone` |
| Classify | `ModelClassify` (`models.classify`) | `ModelClassifyReply` |
| Embed | `ModelEmbed` (`models.embed`) | `ModelEmbedReply` |

plus `ModelCapabilities` (`models.capabilities`), the numbers `Discovery.GetCapabilities`
advertises when this service is deployed, and the command `ModelTrainRun` (`models.train`),
which the task tracker publishes (with `task_id`) to drive a training.

`TrainModel` answers at once with the model in status TRAINING and the `task_id` of the
training task; the model classifies once `ModelGet` says READY (a gateway that must answer
`TrainModel` with a ready model polls `models.get`, or the task, within its deadline).

Errors use the workspace contracts' convention: an error reply's text starts with the
fault's class name (`NotFound: ...`, `InvalidArgument: ...`, `FailedPrecondition: ...`) and
`shared.contracts.workspaces.fault_of` reads back the gRPC status name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

import msgspec

from shared.contracts.base import Contract, Identifier, Reply, ShortText
from shared.contracts.workspaces import ID_PATTERN, MAX_ID_LENGTH, TransferId

ScopeId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, max_length=MAX_ID_LENGTH)]
# The proto's enum value names, as the gateway reads them off the request.
DataFormat = Literal[
    "INTENTS_FORMAT_INVALID",
    "INTENTS_FORMAT_CSV_SIMPLE_INTENTS",
    "INTENTS_FORMAT_RASA_MARKDOWN",
    "INTENTS_FORMAT_BOTPRESS_JSON",
    "INTENTS_FORMAT_RASA_YAML",
    "INTENTS_FORMAT_DIALOGFLOW_ES_AGENT",
    "INTENTS_FORMAT_TXT_PHRASES",
    "INTENTS_FORMAT_HF_JSON",
    "INTENTS_FORMAT_COGNIGY_JSON",
    "INTENTS_FORMAT_DIALOGFLOW_CX_AGENT",
]
HF_JSON: DataFormat = "INTENTS_FORMAT_HF_JSON"
ModelStatus = Literal["TRAINING", "READY", "FAILED"]


class IntentsDataOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """`zia.ai.playbook.data.config.v1alpha1.IntentsDataOptions` without the tag
    predicates (HumanFirst applies those itself before it sends the data)."""

    hierarchical_intent_name_disabled: bool = False
    hierarchical_delimiter: str = ""
    zip_encoding: bool = False
    hierarchical_follow_up: bool = False
    include_negative_phrases: bool = False
    gzip_encoding: bool = False
    skip_empty_intents: bool = False


class ClassificationConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    max_batch_size: int = 0


class EmbedConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    dimensionality: int = 0
    max_batch_size: int = 0
    max_token_size: int = 0  # tokens per example; longer examples are cut
    max_token_count: int = 0  # tokens per request


class Model(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """The proto's `Model` (id, display_name, embeddings, classification) and what Ferry
    knows beside it (status, the training task, intents, whether it is in memory)."""

    id: str
    display_name: str = ""
    embeddings: EmbedConfig | None = None
    classification: ClassificationConfig | None = None
    status: ModelStatus = "READY"
    task_id: str | None = None
    error: str | None = None  # why training failed (status FAILED)
    intents: int = 0
    examples: int = 0
    loaded: bool = False
    created_at: datetime | None = None
    trained_at: datetime | None = None


class IntentMatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    id: str
    name: str
    score: float


class Predictions(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """One example's intents, best first; matches below the service's floor are left out."""

    matches: list[IntentMatch] = []


# -- requests ----------------------------------------------------------------------------


class Scoped(Contract, kw_only=True):
    """A request about the models of one HumanFirst integration."""

    namespace: ScopeId
    integration_id: ScopeId


class ModelScoped(Scoped, kw_only=True):
    model_id: ScopeId


class ModelCapabilities(Contract, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "models.capabilities"


class ModelCapabilitiesReply(Reply, kw_only=True):
    max_concurrent_models: int = 0  # models held in memory at once (more are reloaded)
    model_classification_batch_size: int = 0  # examples per Classify
    embedding_model: str = ""
    dimensionality: int = 0


class ModelTrainParameters(Scoped, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "models.train_parameters"


class ModelTrainParametersReply(Reply, kw_only=True):
    data_format: DataFormat = HF_JSON
    format_options: IntentsDataOptions = msgspec.field(default_factory=IntentsDataOptions)


class ModelTrain(Scoped, kw_only=True):
    """TrainModel: HumanFirst JSON, gzip-compressed when `format_options.gzip_encoding`,
    either as chunks on the transfer queue `transfer_id` (`shared.chunks`; the asker
    declares the queue and sends, as for a workspace import: up to 200 MiB) or inline in
    `data` (small sets: the whole request must fit FERRY_MAX_MESSAGE_BYTES, base64)."""

    ROUTING_KEY: ClassVar[str] = "models.create"

    data_format: DataFormat = HF_JSON
    format_options: IntentsDataOptions = msgspec.field(default_factory=IntentsDataOptions)
    transfer_id: TransferId | None = None
    data: bytes = b""
    display_name: ShortText = ""


class ModelList(Scoped, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "models.list"


class ModelGet(ModelScoped, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "models.get"


class ModelDelete(ModelScoped, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "models.delete"


class ModelUnload(ModelScoped, kw_only=True):
    """Free the model's memory; it stays on disk and loads again on its next use."""

    ROUTING_KEY: ClassVar[str] = "models.unload"


class ModelClassify(ModelScoped, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "models.classify"

    examples: list[str]  # the `contents` of each `Example`


class ModelEmbed(ModelScoped, kw_only=True):
    ROUTING_KEY: ClassVar[str] = "models.embed"

    examples: list[str]


# -- replies -----------------------------------------------------------------------------


class ModelReply(Reply, kw_only=True):
    model: Model | None = None


class ModelListReply(Reply, kw_only=True):
    models: list[Model] = []


class ModelDone(Reply, kw_only=True):
    """DeleteModelResponse / UnloadModelResponse: empty, as in the proto."""


class ModelClassifyReply(Reply, kw_only=True):
    predictions: list[Predictions] = []  # one per example, in order


class ModelEmbedReply(Reply, kw_only=True):
    data: list[float] = []  # packed row-major
    shape: list[int] = []  # [examples, dimensionality]


# -- the driving command -----------------------------------------------------------------


class ModelTrainRun(Contract, kw_only=True):
    """Train model `model_id` from its stored training data, reporting to task `task_id`.
    Idempotent: a model already trained is reported done again."""

    ROUTING_KEY: ClassVar[str] = "models.train"

    task_id: Identifier
    namespace: ScopeId
    integration_id: ScopeId
    model_id: ScopeId
