from services.gateway.generated.zia.ai.playbook.data.config.v1alpha1 import config_pb2 as _config_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Workspace(_message.Message):
    __slots__ = ("id", "name", "description")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ListWorkspacesRequest(_message.Message):
    __slots__ = ("namespace", "integration_id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    INTEGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    integration_id: str
    def __init__(self, namespace: _Optional[str] = ..., integration_id: _Optional[str] = ...) -> None: ...

class ListWorkspacesResponse(_message.Message):
    __slots__ = ("workspaces",)
    WORKSPACES_FIELD_NUMBER: _ClassVar[int]
    workspaces: _containers.RepeatedCompositeFieldContainer[Workspace]
    def __init__(self, workspaces: _Optional[_Iterable[_Union[Workspace, _Mapping]]] = ...) -> None: ...

class GetWorkspaceRequest(_message.Message):
    __slots__ = ("namespace", "integration_id", "workspace_id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    INTEGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    integration_id: str
    workspace_id: str
    def __init__(self, namespace: _Optional[str] = ..., integration_id: _Optional[str] = ..., workspace_id: _Optional[str] = ...) -> None: ...

class CreateWorkspaceRequest(_message.Message):
    __slots__ = ("namespace", "integration_id", "workspace")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    INTEGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    integration_id: str
    workspace: Workspace
    def __init__(self, namespace: _Optional[str] = ..., integration_id: _Optional[str] = ..., workspace: _Optional[_Union[Workspace, _Mapping]] = ...) -> None: ...

class GetImportParametersRequest(_message.Message):
    __slots__ = ("namespace", "integration_id", "workspace_id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    INTEGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    integration_id: str
    workspace_id: str
    def __init__(self, namespace: _Optional[str] = ..., integration_id: _Optional[str] = ..., workspace_id: _Optional[str] = ...) -> None: ...

class GetImportParametersResponse(_message.Message):
    __slots__ = ("data_format", "format_options")
    DATA_FORMAT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    data_format: _config_pb2.IntentsDataFormat
    format_options: _config_pb2.IntentsDataOptions
    def __init__(self, data_format: _Optional[_Union[_config_pb2.IntentsDataFormat, str]] = ..., format_options: _Optional[_Union[_config_pb2.IntentsDataOptions, _Mapping]] = ...) -> None: ...

class ImportWorkspaceRequest(_message.Message):
    __slots__ = ("namespace", "integration_id", "workspace_id", "data_format", "format_options", "data")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    INTEGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FORMAT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    integration_id: str
    workspace_id: str
    data_format: _config_pb2.IntentsDataFormat
    format_options: _config_pb2.IntentsDataOptions
    data: bytes
    def __init__(self, namespace: _Optional[str] = ..., integration_id: _Optional[str] = ..., workspace_id: _Optional[str] = ..., data_format: _Optional[_Union[_config_pb2.IntentsDataFormat, str]] = ..., format_options: _Optional[_Union[_config_pb2.IntentsDataOptions, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ImportWorkspaceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExportWorkspaceRequest(_message.Message):
    __slots__ = ("namespace", "integration_id", "workspace_id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    INTEGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    integration_id: str
    workspace_id: str
    def __init__(self, namespace: _Optional[str] = ..., integration_id: _Optional[str] = ..., workspace_id: _Optional[str] = ...) -> None: ...

class ExportWorkspaceResponse(_message.Message):
    __slots__ = ("data_format", "format_options", "data")
    DATA_FORMAT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    data_format: _config_pb2.IntentsDataFormat
    format_options: _config_pb2.IntentsDataOptions
    data: bytes
    def __init__(self, data_format: _Optional[_Union[_config_pb2.IntentsDataFormat, str]] = ..., format_options: _Optional[_Union[_config_pb2.IntentsDataOptions, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...
