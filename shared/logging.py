"""Structured JSON logs, one object per line, with secrets redacted on the way out."""

from __future__ import annotations

import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

import msgspec

SECRET_KEYS = re.compile(
    r"pass(word)?|secret|token|authorization|api[_-]?key|credential|cookie", re.I
)
_PATTERNS = [
    # userinfo in URLs: amqp://user:pass@host -> amqp://user:***@host
    (re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+(?=@)", re.I), r"\g<pre>***"),
    (re.compile(r"(?P<pre>\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.I), r"\g<pre>***"),
    # key=value / "key": "value" pairs whose key says it is a secret
    (
        re.compile(
            r"(?P<pre>(?:pass(?:word)?|secret|token|api[_-]?key|authorization)[\"']?\s*[:=]\s*[\"']?)"
            r"[^\"'\s,&}]+",
            re.I,
        ),
        r"\g<pre>***",
    ),
]
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def redact_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(value: Any, key: str = "") -> Any:
    """A copy of `value` with secret-looking keys masked and secrets in strings replaced."""
    if key and SECRET_KEYS.search(key):
        return "***"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = redact(value, key)
        if record.exc_info:
            entry["error"] = redact_text("".join(traceback.format_exception(*record.exc_info)))
        return msgspec.json.encode(entry, enc_hook=str).decode()


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route every logger (ours, FastStream's, aio-pika's) to JSON lines on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiormq logs every reconnect attempt at INFO with full tracebacks; warnings are enough.
    for noisy in ("aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
