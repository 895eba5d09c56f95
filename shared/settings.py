"""Settings from the environment: `FERRY_<FIELD>` (and `FERRY_<FIELD>_FILE` for secrets).

Checked once at start; a bad value stops the service with one line naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec

S = TypeVar("S", bound="BaseSettings")
PREFIX = "FERRY_"


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
    delivery_limit: int = 10  # x-delivery-limit of every work queue
    max_message_bytes: int = 1_048_576  # larger bodies are dead-lettered unread
    retry_attempts: int = 4  # in-process attempts per delivery
    retry_base_delay: float = 0.2
    retry_max_delay: float = 10.0
    retry_budget: float = 30.0  # seconds of in-process retrying before the message is parked
    park_delays: tuple[float, ...] = (30.0, 300.0)  # one parking queue per delay class

    @classmethod
    def from_env(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = _read(env, f.name.upper())
            if f.name == "amqp_url" and raw is None:
                raw = env.get("AMQP_URL")  # the conventional name, as in the tests
            if raw is None:
                continue
            values[f.name] = _convert(PREFIX + f.name.upper(), raw, f.type)
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

    def as_environment(self) -> dict[str, str]:
        """The settings as `FERRY_*` variables: what `from_env` reads back to these settings
        (to start a service as a process with them)."""
        env: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            env[PREFIX + f.name.upper()] = text
        return env

    def redacted(self) -> dict[str, Any]:
        """The settings as they may be logged: secrets masked."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = "***" if f.metadata.get("secret") and value else value
        return out


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


def _convert(variable: str, raw: str, annotation: Any) -> Any:
    text = str(annotation)
    try:
        if text.startswith("tuple"):
            parts = [p.strip() for p in raw.split(",") if p.strip()]
            return tuple(msgspec.convert(p, float, strict=False) for p in parts)
        target = {"int": int, "float": float, "bool": bool, "str": str}.get(text, str)
        return msgspec.convert(raw, target, strict=False)
    except msgspec.ValidationError:
        raise SettingsError(f"{variable}: expected {text}, got {raw!r}") from None


def _is_name(value: str) -> bool:
    return all(c.isalnum() or c in "-_" for c in value)
