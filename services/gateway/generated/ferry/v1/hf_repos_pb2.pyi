from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RepoType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPO_TYPE_UNSPECIFIED: _ClassVar[RepoType]
    REPO_TYPE_DATASET: _ClassVar[RepoType]
    REPO_TYPE_MODEL: _ClassVar[RepoType]
    REPO_TYPE_SPACE: _ClassVar[RepoType]
REPO_TYPE_UNSPECIFIED: RepoType
REPO_TYPE_DATASET: RepoType
REPO_TYPE_MODEL: RepoType
REPO_TYPE_SPACE: RepoType

class WhoamiRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WhoamiResponse(_message.Message):
    __slots__ = ("name", "type", "fullname", "orgs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FULLNAME_FIELD_NUMBER: _ClassVar[int]
    ORGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    fullname: str
    orgs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., fullname: _Optional[str] = ..., orgs: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateRepoRequest(_message.Message):
    __slots__ = ("repo_id", "type", "private", "space_sdk")
    REPO_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_FIELD_NUMBER: _ClassVar[int]
    SPACE_SDK_FIELD_NUMBER: _ClassVar[int]
    repo_id: str
    type: RepoType
    private: bool
    space_sdk: str
    def __init__(self, repo_id: _Optional[str] = ..., type: _Optional[_Union[RepoType, str]] = ..., private: _Optional[bool] = ..., space_sdk: _Optional[str] = ...) -> None: ...

class CreateRepoResponse(_message.Message):
    __slots__ = ("url",)
    URL_FIELD_NUMBER: _ClassVar[int]
    url: str
    def __init__(self, url: _Optional[str] = ...) -> None: ...

class DeleteRepoRequest(_message.Message):
    __slots__ = ("repo_id", "type")
    REPO_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    repo_id: str
    type: RepoType
    def __init__(self, repo_id: _Optional[str] = ..., type: _Optional[_Union[RepoType, str]] = ...) -> None: ...

class DeleteRepoResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpdateRepoVisibilityRequest(_message.Message):
    __slots__ = ("repo_id", "type", "private")
    REPO_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_FIELD_NUMBER: _ClassVar[int]
    repo_id: str
    type: RepoType
    private: bool
    def __init__(self, repo_id: _Optional[str] = ..., type: _Optional[_Union[RepoType, str]] = ..., private: _Optional[bool] = ...) -> None: ...

class UpdateRepoVisibilityResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
