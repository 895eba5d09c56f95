import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATUS_UNSPECIFIED: _ClassVar[TaskStatus]
    TASK_STATUS_QUEUED: _ClassVar[TaskStatus]
    TASK_STATUS_RUNNING: _ClassVar[TaskStatus]
    TASK_STATUS_SUCCESS: _ClassVar[TaskStatus]
    TASK_STATUS_ERRORED: _ClassVar[TaskStatus]
    TASK_STATUS_KILLED: _ClassVar[TaskStatus]
    TASK_STATUS_SKIPPED: _ClassVar[TaskStatus]

class HfSyncMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HF_SYNC_MODE_UNSPECIFIED: _ClassVar[HfSyncMode]
    HF_SYNC_MODE_ALL: _ClassVar[HfSyncMode]
    HF_SYNC_MODE_ID: _ClassVar[HfSyncMode]
    HF_SYNC_MODE_SINCE: _ClassVar[HfSyncMode]
TASK_STATUS_UNSPECIFIED: TaskStatus
TASK_STATUS_QUEUED: TaskStatus
TASK_STATUS_RUNNING: TaskStatus
TASK_STATUS_SUCCESS: TaskStatus
TASK_STATUS_ERRORED: TaskStatus
TASK_STATUS_KILLED: TaskStatus
TASK_STATUS_SKIPPED: TaskStatus
HF_SYNC_MODE_UNSPECIFIED: HfSyncMode
HF_SYNC_MODE_ALL: HfSyncMode
HF_SYNC_MODE_ID: HfSyncMode
HF_SYNC_MODE_SINCE: HfSyncMode

class Task(_message.Message):
    __slots__ = ("id", "kind", "name", "status", "progress_value", "end_value", "progress_message", "result_json", "params_json", "created_at", "started_at", "ended_at", "updated_at", "should_be_killed", "items_total", "items_succeeded", "items_failed", "items_skipped", "cancelling", "waiting_reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_VALUE_FIELD_NUMBER: _ClassVar[int]
    END_VALUE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SHOULD_BE_KILLED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FAILED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    CANCELLING_FIELD_NUMBER: _ClassVar[int]
    WAITING_REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    name: str
    status: TaskStatus
    progress_value: int
    end_value: int
    progress_message: str
    result_json: str
    params_json: str
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    should_be_killed: bool
    items_total: int
    items_succeeded: int
    items_failed: int
    items_skipped: int
    cancelling: bool
    waiting_reason: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., progress_value: _Optional[int] = ..., end_value: _Optional[int] = ..., progress_message: _Optional[str] = ..., result_json: _Optional[str] = ..., params_json: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., should_be_killed: _Optional[bool] = ..., items_total: _Optional[int] = ..., items_succeeded: _Optional[int] = ..., items_failed: _Optional[int] = ..., items_skipped: _Optional[int] = ..., cancelling: _Optional[bool] = ..., waiting_reason: _Optional[str] = ...) -> None: ...

class TaskItem(_message.Message):
    __slots__ = ("item_key", "outcome", "message", "observed_at")
    ITEM_KEY_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    item_key: str
    outcome: TaskStatus
    message: str
    observed_at: _timestamp_pb2.Timestamp
    def __init__(self, item_key: _Optional[str] = ..., outcome: _Optional[_Union[TaskStatus, str]] = ..., message: _Optional[str] = ..., observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubmitHfSyncRequest(_message.Message):
    __slots__ = ("task_id", "name", "mode", "value", "author", "search", "filter", "limit", "prune", "force")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PRUNE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    name: str
    mode: HfSyncMode
    value: str
    author: str
    search: str
    filter: _containers.RepeatedScalarFieldContainer[str]
    limit: int
    prune: bool
    force: bool
    def __init__(self, task_id: _Optional[str] = ..., name: _Optional[str] = ..., mode: _Optional[_Union[HfSyncMode, str]] = ..., value: _Optional[str] = ..., author: _Optional[str] = ..., search: _Optional[str] = ..., filter: _Optional[_Iterable[str]] = ..., limit: _Optional[int] = ..., prune: _Optional[bool] = ..., force: _Optional[bool] = ...) -> None: ...

class LaunchPipelineRequest(_message.Message):
    __slots__ = ("task_id", "name", "pipeline_id", "pipeline_code", "version_id", "config_json")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_CODE_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    name: str
    pipeline_id: str
    pipeline_code: str
    version_id: str
    config_json: str
    def __init__(self, task_id: _Optional[str] = ..., name: _Optional[str] = ..., pipeline_id: _Optional[str] = ..., pipeline_code: _Optional[str] = ..., version_id: _Optional[str] = ..., config_json: _Optional[str] = ...) -> None: ...

class SubmitTaskResponse(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id", "include_items")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    include_items: bool
    def __init__(self, task_id: _Optional[str] = ..., include_items: _Optional[bool] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("task", "items")
    TASK_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    task: Task
    items: _containers.RepeatedCompositeFieldContainer[TaskItem]
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., items: _Optional[_Iterable[_Union[TaskItem, _Mapping]]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("statuses", "kind", "page_size", "page_token")
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedScalarFieldContainer[TaskStatus]
    kind: str
    page_size: int
    page_token: str
    def __init__(self, statuses: _Optional[_Iterable[_Union[TaskStatus, str]]] = ..., kind: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    next_page_token: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelTaskResponse(_message.Message):
    __slots__ = ("already_ended", "status")
    ALREADY_ENDED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    already_ended: bool
    status: TaskStatus
    def __init__(self, already_ended: _Optional[bool] = ..., status: _Optional[_Union[TaskStatus, str]] = ...) -> None: ...
