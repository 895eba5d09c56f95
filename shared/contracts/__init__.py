"""Message contracts: msgspec Structs, JSON on the wire, one module per domain."""

from shared.contracts.aiod import DatasetPrune, DatasetRemove, DatasetUpsert
from shared.contracts.base import Contract, json_schema
from shared.contracts.hf import (
    HfDatasetChanged,
    HfDatasetsCollect,
    HfRepoCreate,
    HfRepoCreateReply,
    HfRepoDelete,
    HfRepoDeleteReply,
    HfRepoVisibility,
    HfRepoVisibilityReply,
    HfWhoami,
    HfWhoamiReply,
)
from shared.contracts.hf_sync import HfDatasetsPage
from shared.contracts.models import (
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
)
from shared.contracts.openhexa import (
    PipelineGet,
    PipelineGetReply,
    PipelineList,
    PipelineListReply,
    RunLaunch,
    RunWatch,
)
from shared.contracts.tasks import (
    DrivingCommand,
    ItemOutcome,
    ItemView,
    TaskCancel,
    TaskCancelled,
    TaskGet,
    TaskGetReply,
    TaskList,
    TaskListReply,
    TasksChanged,
    TaskStatus,
    TaskSubmit,
    TaskUpdate,
    TaskView,
)
from shared.contracts.workspaces import (
    WorkspaceCreate,
    WorkspaceExport,
    WorkspaceExportReply,
    WorkspaceGet,
    WorkspaceImport,
    WorkspaceImportReply,
    WorkspaceList,
    WorkspaceListReply,
    WorkspaceReply,
)

# Every contract a routing key carries: `ferry publish` validates against it.
BY_ROUTING_KEY: dict[str, type[Contract]] = {
    c.ROUTING_KEY: c
    for c in (
        *(TaskSubmit, TaskUpdate, TaskCancel, TaskCancelled, TasksChanged, TaskGet, TaskList),
        *(PipelineList, PipelineGet, RunLaunch, RunWatch),
        *(WorkspaceList, WorkspaceGet, WorkspaceCreate, WorkspaceImport, WorkspaceExport),
        *(HfDatasetsCollect, HfDatasetChanged, HfWhoami, HfRepoCreate, HfRepoDelete),
        HfRepoVisibility,
        *(ModelCapabilities, ModelTrainParameters, ModelTrain, ModelTrainRun, ModelList),
        *(ModelGet, ModelDelete, ModelUnload, ModelClassify, ModelEmbed),
        *(HfDatasetsPage, DatasetUpsert, DatasetRemove, DatasetPrune),
    )
}

# The answer each request/reply routing key gets (on `reply_to`).
REPLIES: dict[str, type[Contract]] = {
    TaskGet.ROUTING_KEY: TaskGetReply,
    TaskList.ROUTING_KEY: TaskListReply,
    PipelineList.ROUTING_KEY: PipelineListReply,
    PipelineGet.ROUTING_KEY: PipelineGetReply,
    WorkspaceList.ROUTING_KEY: WorkspaceListReply,
    WorkspaceGet.ROUTING_KEY: WorkspaceReply,
    WorkspaceCreate.ROUTING_KEY: WorkspaceReply,
    WorkspaceImport.ROUTING_KEY: WorkspaceImportReply,
    WorkspaceExport.ROUTING_KEY: WorkspaceExportReply,
    HfWhoami.ROUTING_KEY: HfWhoamiReply,
    HfRepoCreate.ROUTING_KEY: HfRepoCreateReply,
    HfRepoDelete.ROUTING_KEY: HfRepoDeleteReply,
    HfRepoVisibility.ROUTING_KEY: HfRepoVisibilityReply,
    ModelCapabilities.ROUTING_KEY: ModelCapabilitiesReply,
    ModelTrainParameters.ROUTING_KEY: ModelTrainParametersReply,
    ModelTrain.ROUTING_KEY: ModelReply,
    ModelList.ROUTING_KEY: ModelListReply,
    ModelGet.ROUTING_KEY: ModelReply,
    ModelDelete.ROUTING_KEY: ModelDone,
    ModelUnload.ROUTING_KEY: ModelDone,
    ModelClassify.ROUTING_KEY: ModelClassifyReply,
    ModelEmbed.ROUTING_KEY: ModelEmbedReply,
}

__all__ = [
    "BY_ROUTING_KEY",
    "REPLIES",
    "Contract",
    "DrivingCommand",
    "ItemOutcome",
    "ItemView",
    "TaskCancel",
    "TaskCancelled",
    "TaskGet",
    "TaskGetReply",
    "TaskList",
    "TaskListReply",
    "TaskStatus",
    "TaskSubmit",
    "TaskUpdate",
    "TaskView",
    "TasksChanged",
    "json_schema",
]
