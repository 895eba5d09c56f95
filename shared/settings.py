"""Settings from the environment: `FERRY_<FIELD>` (and `FERRY_<FIELD>_FILE` for secrets).

Each value is converted with msgspec against the field's declared type: `int`, `float`,
`bool` (true/false, yes/no, on/off, 1/0), `str`, `X | None` (empty means None), tuples
(comma-separated) and `Literal[...]` choices. Checked once at start; a bad value stops the
service with one line naming the variable and what was expected.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import msgspec

S = TypeVar("S", bound="BaseSettings")
PREFIX = "FERRY_"

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True, kw_only=True)
class BaseSettings:
    """What every service reads. Services subclass it with their own fields."""

    amqp_url: str = field(default="amqp://guest:guest@127.0.0.1:5672/", metadata={"secret": True})
    namespace: str = ""  # prefix of every exchange and queue name, for parallel test runs
    http_host: str = "0.0.0.0"
    http_port: int = 8080  # /healthz, /readyz, /metrics
    log_level: str = "INFO"
    prefetch: int = 64
    graceful_timeout: float = 15.0  # seconds to let running handlers finish on shutdown
    connect_timeout: float = 60.0  # seconds to keep retrying the broker at start
    request_timeout: float = 10.0  # default deadline of a request/reply round trip
    delivery_limit: int = 10  # x-delivery-limit of every work queue
    max_message_bytes: int = 1_048_576  # larger bodies are dead-lettered unread
    retry_attempts: int = 4  # in-process attempts per delivery
    retry_base_delay: float = 0.2
    retry_max_delay: float = 10.0
    retry_budget: float = 30.0  # seconds of in-process retrying before the message is parked
    park_delays: tuple[float, ...] = (30.0, 300.0)  # one parking queue per delay class
    http_timeout: float = 30.0  # read/write/pool timeout of clients of external APIs
    http_max_connections: int = 100  # connection pool size per external API

    @classmethod
    def from_env(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
        env = os.environ if environ is None else environ
        types_ = _field_types(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = _read(env, f.name.upper())
            if f.name == "amqp_url" and raw is None:
                raw = env.get("AMQP_URL")  # the conventional name, as in the tests
            if raw is None:
                continue
            variable = PREFIX + f.name.upper()
            try:
                values[f.name] = _convert(raw, types_[f.name])
            except ValueError:  # msgspec.ValidationError is one
                shown = "***" if f.metadata.get("secret") else repr(raw)
                expected = _expected(types_[f.name])
                raise SettingsError(f"{variable}: expected {expected}, got {shown}") from None
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if not self.amqp_url.startswith(("amqp://", "amqps://")):
            raise SettingsError("FERRY_AMQP_URL: must start with amqp:// or amqps://")
        if self.namespace and not _is_name(self.namespace):
            raise SettingsError("FERRY_NAMESPACE: letters, digits, '-' and '_' only")
        if not 0 < self.http_port < 65536 and self.http_port != 0:
            raise SettingsError(f"FERRY_HTTP_PORT: {self.http_port} is not a port")
        if self.prefetch < 1:
            raise SettingsError("FERRY_PREFETCH: must be at least 1")
        if not self.park_delays or any(d <= 0 for d in self.park_delays):
            raise SettingsError("FERRY_PARK_DELAYS: one or more positive numbers of seconds")
        for name in ("connect_timeout", "request_timeout", "http_timeout", "http_max_connections"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{PREFIX}{name.upper()}: must be positive")

    def as_environment(self) -> dict[str, str]:
        """The settings as `FERRY_*` variables: what `from_env` reads back to these settings
        (to start a service as a process with them). None becomes the empty string, so an
        optional text field set to "" comes back as None."""
        return {
            PREFIX + f.name.upper(): _as_text(getattr(self, f.name))
            for f in dataclasses.fields(self)
        }

    def redacted(self) -> dict[str, Any]:
        """The settings as they may be logged: secrets masked."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = "***" if f.metadata.get("secret") and value else value
        return out


def _field_types(cls: type[BaseSettings]) -> dict[str, Any]:
    # `from __future__ import annotations` leaves `Field.type` a string; this resolves it,
    # in the module of whichever class (base or subclass) declared the field.
    return typing.get_type_hints(cls)


def _read(env: Mapping[str, str], name: str) -> str | None:
    path = env.get(f"{PREFIX}{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise SettingsError(
                f"{PREFIX}{name}_FILE: cannot read {path}: {exc.strerror}"
            ) from None
    return env.get(PREFIX + name)


def _convert(raw: str, annotation: Any) -> Any:
    """`raw` as a value of `annotation`; ValueError when it is not one."""
    args = get_args(annotation)
    if _is_union(annotation):
        if type(None) in args and not raw.strip():
            return None
        others = tuple(a for a in args if a is not type(None))
        if len(others) == 1:
            return _convert(raw, others[0])
        return msgspec.convert(raw.strip(), Union[others], strict=False)  # noqa: UP007
    if get_origin(annotation) is tuple:
        parts = [p.strip() for p in raw.split(",") if p.strip()]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(p, args[0]) for p in parts)
        if len(parts) != len(args):
            raise ValueError(f"{len(parts)} items where {len(args)} are expected")
        return tuple(_convert(p, a) for p, a in zip(parts, args, strict=True))
    if annotation is str:
        return raw
    if annotation is bool:  # msgspec knows true/false/1/0 only; people write yes/no too
        word = raw.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ValueError(raw)
    value = msgspec.convert(raw.strip(), annotation, strict=False)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(raw)  # a NaN or infinite timeout is a typo, not a setting
    return value


def _expected(annotation: Any) -> str:
    """What a value of `annotation` looks like, for the one-line error."""
    args = get_args(annotation)
    if _is_union(annotation):
        others = [_expected(a) for a in args if a is not type(None)]
        empty = ["empty"] if type(None) in args else []
        return " or ".join(others + empty)
    if get_origin(annotation) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"comma-separated {_expected(args[0])}s"
        return f"{len(args)} comma-separated values ({', '.join(map(_expected, args))})"
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(map(str, args))
    if annotation is bool:
        return "true or false"
    return getattr(annotation, "__name__", str(annotation))


def _as_text(value: Any) -> str:
    """The inverse of `_convert`."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(map(_as_text, value))
    return str(value)


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _is_name(value: str) -> bool:
    return all(c.isalnum() or c in "-_" for c in value)
