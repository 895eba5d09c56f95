"""The kinds of failure a request can meet that retrying cannot fix, shared by every service.

An error reply names its kind by its first word, the class name of the failure
(`NotFound: ...`, `AlreadyExists: ...`, `InvalidArgument: ...`, `FailedPrecondition: ...`):
`shared.retry.describe` writes it so, and `fault_of` reads it back, so the gateway can answer
with the matching gRPC status.
"""

from __future__ import annotations

from typing import ClassVar

from shared.retry import PermanentError


class Fault(PermanentError):
    """A request that cannot be served as asked; retrying it unchanged cannot help."""

    code: ClassVar[str] = "FAILED_PRECONDITION"


class NotFound(Fault):
    code = "NOT_FOUND"


class AlreadyExists(Fault):
    code = "ALREADY_EXISTS"


class InvalidArgument(Fault):
    code = "INVALID_ARGUMENT"


class FailedPrecondition(Fault):
    """The request is fine but the state it meets is not (a stored file is damaged)."""

    code = "FAILED_PRECONDITION"


FAULTS: dict[str, type[Fault]] = {
    f.__name__: f for f in (NotFound, AlreadyExists, InvalidArgument, FailedPrecondition)
}


def fault_of(error: str) -> tuple[str | None, str]:
    """(the gRPC status name, the message) of an error reply's text; (None, text) when the
    text does not start with a known fault's name."""
    name, sep, rest = error.partition(": ")
    fault = FAULTS.get(name) if sep else None
    return (fault.code, rest) if fault is not None else (None, error)
