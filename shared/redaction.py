"""Secrets out of everything Ferry writes down: log lines, dead-letter headers, the failure
messages of task items, error replies. `describe()` in shared.retry (where every failure
reason is built) and the JSON log formatter both go through here."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import msgspec

SECRET_KEYS = re.compile(
    r"pass(word)?|secret|token|authorization|api[_-]?key|credential|cookie", re.I
)
_PATTERNS = [
    # userinfo in URLs: amqp://user:pass@host -> amqp://user:***@host
    (re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+(?=@)", re.I), r"\g<pre>***"),
    # credentials of an HTTP authorization scheme: "Authorization: Basic dXNlcjpw..."
    (
        re.compile(r"(?P<pre>\b(?:Bearer|Basic|Digest|Token|ApiKey)\s+)[A-Za-z0-9._~+/=-]+", re.I),
        r"\g<pre>***",
    ),
    # key=value / "key": "value" pairs whose key says it is a secret
    (
        re.compile(
            r"(?P<pre>(?:pass(?:word)?|secret|token|api[_-]?key|authorization)[\"']?\s*[:=]\s*[\"']?"
            r"(?:(?:Bearer|Basic|Digest|Token|ApiKey)\s+)?)"
            r"[^\"'\s,&}]+",
            re.I,
        ),
        r"\g<pre>***",
    ),
]


def redact_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(value: Any, key: str = "") -> Any:
    """A copy of `value` with secret-looking keys masked and secrets in strings replaced.
    Structs and dataclasses are redacted field by field, as the dicts they encode to."""
    if key and SECRET_KEYS.search(key):
        return "***"
    if isinstance(value, msgspec.Struct) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    ):
        value = msgspec.to_builtins(value, enc_hook=str)
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value
