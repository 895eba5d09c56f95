"""Contracts of the OpenHexa launcher's queues: pipelines listed and described
(request/reply), runs launched and watched (commands).

A launch is a task's driving command: the tracker publishes it with `task_id` added, and
again when the task stalls, so the launcher makes it idempotent per task. A watch carries
the run id it follows, so a restarted launcher resumes every watch from its message.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar

import msgspec

from shared.contracts.base import Contract, Identifier, Reply, ShortText

Code = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Count = Annotated[int, msgspec.Meta(ge=0)]


class PipelineParameter(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """One parameter of a pipeline version, as OpenHexa's `PipelineParameter` (and the
    SDK's `Parameter.to_dict`) give it. Also the shape of `ferry pipelines check-config
    --spec` entries."""

    code: str
    type: str
    name: str | None = None
    choices: list[Any] | None = None
    default: Any = None
    required: bool = True
    multiple: bool = False
    help: str | None = None
    widget: str | None = None
    connection: str | None = None
    directory: str | None = None
    # SDK 2.22: a bool parameter that disables others while it equals `disable_when`.
    disables: list[str] | None = None
    disable_when: bool = True


class PipelineVersion(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    id: str
    number: int
    name: str | None = None
    parameters: list[PipelineParameter] = []


class PipelineSummary(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    id: str
    code: str
    name: str | None = None
    type: str | None = None
    current_version_id: str | None = None
    current_version_number: int | None = None


class PipelineDetail(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    id: str
    code: str
    name: str | None = None
    type: str | None = None
    # The version asked for (`version_id`), else the current one; None: no version pushed.
    version: PipelineVersion | None = None
    # The parameter of that version the launcher fills with the task id (its
    # FERRY_TASK_ID_PARAMETER, when the version declares it): what a launch will carry.
    task_id_parameter: str | None = None


class PipelineList(Contract, kw_only=True):
    """Every pipeline of the launcher's workspace (all pages)."""

    ROUTING_KEY: ClassVar[str] = "openhexa.pipelines.list"

    name: ShortText | None = None  # only pipelines whose name contains this


class PipelineListReply(Reply, kw_only=True):
    pipelines: list[PipelineSummary] = []


class PipelineGet(Contract, kw_only=True):
    """One pipeline, by id or by code, with a version's parameters."""

    ROUTING_KEY: ClassVar[str] = "openhexa.pipelines.get"

    pipeline_id: Code | None = None
    pipeline_code: Code | None = None
    version_id: Code | None = None

    def __post_init__(self) -> None:
        if (self.pipeline_id is None) == (self.pipeline_code is None):
            raise ValueError("give exactly one of pipeline_id and pipeline_code")


class PipelineGetReply(Reply, kw_only=True):
    pipeline: PipelineDetail | None = None


class RunLaunch(Contract, kw_only=True):
    """Launch one run of a pipeline for a task, once per task however often it arrives."""

    ROUTING_KEY: ClassVar[str] = "openhexa.runs.launch"

    task_id: Identifier
    pipeline_id: Code | None = None
    pipeline_code: Code | None = None
    version_id: Code | None = None
    config: dict[str, Any] = {}
    # How often this launch already waited for a free run slot (the runs limit).
    limit_waits: Count = 0

    def __post_init__(self) -> None:
        if (self.pipeline_id is None) == (self.pipeline_code is None):
            raise ValueError("give exactly one of pipeline_id and pipeline_code")


class RunWatch(Contract, kw_only=True):
    """Look at one run once and report it on its task; scheduled again until it ends."""

    ROUTING_KEY: ClassVar[str] = "openhexa.runs.watch"

    task_id: Identifier
    run_id: Code
    pipeline_id: Code
    # The launch that started this chain of watches: a newer launch of the same task
    # starts a new chain, and the older one ends when it sees the task names another.
    watch_id: Code
    started_at: datetime  # when the run was launched: the maximum duration counts from it
    polls: Count = 0  # polls so far: the interval backs off with it
