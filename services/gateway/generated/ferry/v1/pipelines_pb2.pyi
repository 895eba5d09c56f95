from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PipelineSummary(_message.Message):
    __slots__ = ("id", "code", "name", "type", "current_version_id", "current_version_number")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_NUMBER_FIELD_NUMBER: _ClassVar[int]
    id: str
    code: str
    name: str
    type: str
    current_version_id: str
    current_version_number: int
    def __init__(self, id: _Optional[str] = ..., code: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[str] = ..., current_version_id: _Optional[str] = ..., current_version_number: _Optional[int] = ...) -> None: ...

class ListPipelinesRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListPipelinesResponse(_message.Message):
    __slots__ = ("pipelines",)
    PIPELINES_FIELD_NUMBER: _ClassVar[int]
    pipelines: _containers.RepeatedCompositeFieldContainer[PipelineSummary]
    def __init__(self, pipelines: _Optional[_Iterable[_Union[PipelineSummary, _Mapping]]] = ...) -> None: ...

class GetPipelineRequest(_message.Message):
    __slots__ = ("pipeline_id", "pipeline_code", "version_id")
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_CODE_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    pipeline_id: str
    pipeline_code: str
    version_id: str
    def __init__(self, pipeline_id: _Optional[str] = ..., pipeline_code: _Optional[str] = ..., version_id: _Optional[str] = ...) -> None: ...

class PipelineParameter(_message.Message):
    __slots__ = ("code", "type", "name", "choices_json", "default_json", "required", "multiple", "help")
    CODE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHOICES_JSON_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_JSON_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    code: str
    type: str
    name: str
    choices_json: str
    default_json: str
    required: bool
    multiple: bool
    help: str
    def __init__(self, code: _Optional[str] = ..., type: _Optional[str] = ..., name: _Optional[str] = ..., choices_json: _Optional[str] = ..., default_json: _Optional[str] = ..., required: _Optional[bool] = ..., multiple: _Optional[bool] = ..., help: _Optional[str] = ...) -> None: ...

class PipelineVersion(_message.Message):
    __slots__ = ("id", "number", "name", "parameters")
    ID_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    id: str
    number: int
    name: str
    parameters: _containers.RepeatedCompositeFieldContainer[PipelineParameter]
    def __init__(self, id: _Optional[str] = ..., number: _Optional[int] = ..., name: _Optional[str] = ..., parameters: _Optional[_Iterable[_Union[PipelineParameter, _Mapping]]] = ...) -> None: ...

class Pipeline(_message.Message):
    __slots__ = ("id", "code", "name", "type", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    code: str
    name: str
    type: str
    version: PipelineVersion
    def __init__(self, id: _Optional[str] = ..., code: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[str] = ..., version: _Optional[_Union[PipelineVersion, _Mapping]] = ...) -> None: ...
