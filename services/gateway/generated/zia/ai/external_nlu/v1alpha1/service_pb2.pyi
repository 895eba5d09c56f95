from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Example(_message.Message):
    __slots__ = ("contents",)
    CONTENTS_FIELD_NUMBER: _ClassVar[int]
    contents: str
    def __init__(self, contents: _Optional[str] = ...) -> None: ...

class Predictions(_message.Message):
    __slots__ = ("matches", "entity_matches")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    ENTITY_MATCHES_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[IntentMatch]
    entity_matches: _containers.RepeatedCompositeFieldContainer[EntityMatch]
    def __init__(self, matches: _Optional[_Iterable[_Union[IntentMatch, _Mapping]]] = ..., entity_matches: _Optional[_Iterable[_Union[EntityMatch, _Mapping]]] = ...) -> None: ...

class IntentMatch(_message.Message):
    __slots__ = ("id", "name", "score")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    score: float
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class EntityMatch(_message.Message):
    __slots__ = ("entity", "score", "span", "extractor")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SPAN_FIELD_NUMBER: _ClassVar[int]
    EXTRACTOR_FIELD_NUMBER: _ClassVar[int]
    entity: EntityReference
    score: float
    span: Span
    extractor: str
    def __init__(self, entity: _Optional[_Union[EntityReference, _Mapping]] = ..., score: _Optional[float] = ..., span: _Optional[_Union[Span, _Mapping]] = ..., extractor: _Optional[str] = ...) -> None: ...

class EntityReference(_message.Message):
    __slots__ = ("text", "key", "value", "role", "entity_id", "entity_value_id")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_VALUE_ID_FIELD_NUMBER: _ClassVar[int]
    text: str
    key: str
    value: str
    role: str
    entity_id: str
    entity_value_id: str
    def __init__(self, text: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[str] = ..., role: _Optional[str] = ..., entity_id: _Optional[str] = ..., entity_value_id: _Optional[str] = ...) -> None: ...

class Span(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...
