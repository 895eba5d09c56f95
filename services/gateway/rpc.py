"""gRPC plumbing of the gateway: binding servicers to the service descriptors, the one
mapping of failures to status codes, and asking the owning service within the deadline.

Servicers are bound from the descriptors of the generated modules (no `_pb2_grpc` code):
each RPC of the service must be a method of the same name on the servicer, which is
checked when the server is built, and every failure leaves it as a status with a message
that says what is wrong:

| failure | status |
|---|---|
| bad argument (checked here, or `InvalidArgument:` from the owner) | INVALID_ARGUMENT |
| `NotFound:` (or "no such task") / `AlreadyExists:` from the owner | NOT_FOUND / ALREADY_EXISTS |
| no answer within the deadline | DEADLINE_EXCEEDED |
| the owning service is not running (nothing consumes the key), a transfer broke | UNAVAILABLE |
| a feature not deployed | UNIMPLEMENTED |
| anything else | INTERNAL (the detail is logged, not sent) |
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio
import msgspec
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from shared.chunks import TransferFailed
from shared.contracts.base import Contract
from shared.faults import Fault, fault_of
from shared.messaging import NoReply, RemoteError, Unroutable
from shared.service import Service

R = TypeVar("R", bound=Contract)
C = TypeVar("C", bound=Contract)
T = TypeVar("T")
U = TypeVar("U")
log = logging.getLogger("ferry.gateway")

# Who owns the work behind each routing-key domain, to name it when it is missing.
OWNERS = {
    "workspaces": "workspace_store",
    "tasks": "task_tracker",
    "hf": "hf_collector",
    "openhexa": "openhexa_launcher",
    "models": "nlu_models",
}
# Left of a deadline for the answer to travel back.
DEADLINE_MARGIN = 0.05


class RpcError(Exception):
    """End the RPC with `code` and `message` (shown to the client as they are)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> RpcError:
    return RpcError(grpc.StatusCode.INVALID_ARGUMENT, message)


def validated(kind: type[C], fields: dict[str, Any]) -> C:
    """The contract made of `fields`, or INVALID_ARGUMENT saying what is wrong with them."""
    try:
        return msgspec.convert(fields, kind)
    except msgspec.ValidationError as exc:
        raise invalid(str(exc).replace("`$.", "`")) from None


def owner_of(routing_key: str) -> str:
    return OWNERS.get(routing_key.split(".", 1)[0], "service")


def request_failed(exc: Exception, routing_key: str) -> RpcError:
    """The status for a failed request to the service owning `routing_key`."""
    owner = owner_of(routing_key)
    if isinstance(exc, Unroutable):
        return RpcError(
            grpc.StatusCode.UNAVAILABLE,
            f"the {owner} is not running (nothing consumes {routing_key})",
        )
    if isinstance(exc, NoReply):
        if "lost" in str(exc):
            return RpcError(grpc.StatusCode.UNAVAILABLE, f"{owner}: {exc}")
        return RpcError(grpc.StatusCode.DEADLINE_EXCEEDED, f"the {owner} did not answer: {exc}")
    if isinstance(exc, TransferFailed):
        return RpcError(grpc.StatusCode.UNAVAILABLE, f"transfer failed: {exc}")
    if isinstance(exc, Fault):
        return RpcError(getattr(grpc.StatusCode, exc.code), str(exc))
    text = str(exc)
    code, message = fault_of(text)
    if code is not None:
        return RpcError(getattr(grpc.StatusCode, code), message)
    if text.startswith("no such task"):
        return RpcError(grpc.StatusCode.NOT_FOUND, text)
    if "Malformed" in text or "ValidationError" in text or "Expected" in text:
        return RpcError(grpc.StatusCode.INVALID_ARGUMENT, f"{owner}: {text}")
    return RpcError(grpc.StatusCode.INTERNAL, f"{owner}: {text}")


def remaining(context: grpc.aio.ServicerContext, ceiling: float) -> float:
    """Seconds left for work on this RPC: its deadline (less a margin), at most `ceiling`."""
    left: float | None = context.time_remaining()
    if left is None:
        return ceiling
    if left - DEADLINE_MARGIN <= 0:
        raise RpcError(
            grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the work began"
        )
    return min(ceiling, left - DEADLINE_MARGIN)


async def ask(
    service: Service,
    context: grpc.aio.ServicerContext,
    message: Contract,
    reply_type: type[R],
    *,
    ceiling: float | None = None,
) -> R:
    """Request/reply with the owning service within the RPC's deadline."""
    timeout = remaining(context, ceiling or service.settings.request_timeout)
    try:
        return await service.request(message, reply_type, timeout=timeout)
    except (RemoteError, NoReply, Unroutable) as exc:
        raise request_failed(exc, message.ROUTING_KEY) from None
    except (OSError, TimeoutError) as exc:  # connecting to the broker failed
        raise RpcError(grpc.StatusCode.UNAVAILABLE, f"RabbitMQ is not reachable: {exc}") from None


# -- binding -----------------------------------------------------------------------------


def message_class(descriptor: Any) -> type[Message]:
    cls: type[Message] = message_factory.GetMessageClass(descriptor)
    return cls


def _abort_code(exc: Exception) -> RpcError | None:
    if isinstance(exc, RpcError):
        return exc
    if isinstance(exc, Fault):
        return RpcError(getattr(grpc.StatusCode, exc.code), str(exc))
    return None


async def _fail(context: grpc.aio.ServicerContext, method: str, exc: Exception) -> None:
    known = _abort_code(exc)
    if known is None:
        log.error("RPC failed", exc_info=exc, extra={"method": method})
        known = RpcError(grpc.StatusCode.INTERNAL, f"{method} failed in the gateway (see its log)")
    await context.abort(known.code, known.message)


def _unary(
    method: str, impl: Callable[..., Awaitable[Message]]
) -> Callable[..., Awaitable[Message]]:
    async def handle(request: Message, context: grpc.aio.ServicerContext) -> Message:
        try:
            return await impl(request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _fail(context, method, exc)
            raise  # abort raised already; this is never reached

    return handle


def _streaming(
    method: str, impl: Callable[..., AsyncIterator[Message]]
) -> Callable[..., AsyncIterator[Message]]:
    async def handle(request: Message, context: grpc.aio.ServicerContext) -> AsyncIterator[Message]:
        try:
            async for item in impl(request, context):
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _fail(context, method, exc)

    return handle


def bind(descriptor: ServiceDescriptor, servicer: object) -> grpc.GenericRpcHandler:
    """The generic handler serving `descriptor`'s RPCs with `servicer`'s methods."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in descriptor.methods:
        impl = getattr(servicer, method.name, None)
        if impl is None:
            raise TypeError(f"{type(servicer).__name__} lacks the RPC {method.full_name}")
        request_type = message_class(method.input_type)
        response_type = message_class(method.output_type)
        name = f"{descriptor.name}.{method.name}"
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _streaming(name, impl),
                request_deserializer=request_type.FromString,
                response_serializer=response_type.SerializeToString,
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(name, impl),
                request_deserializer=request_type.FromString,
                response_serializer=response_type.SerializeToString,
            )
    return grpc.method_handlers_generic_handler(descriptor.full_name, handlers)


class Stub:
    """A client of one service, from its descriptor: `stub.unary("ListWorkspaces")`."""

    def __init__(self, channel: grpc.aio.Channel, descriptor: ServiceDescriptor) -> None:
        self.channel = channel
        self.descriptor = descriptor

    def _method(self, name: str) -> tuple[str, MethodDescriptor]:
        method = self.descriptor.methods_by_name[name]
        return f"/{self.descriptor.full_name}/{name}", method

    def unary(self, name: str) -> Any:
        path, method = self._method(name)
        return self.channel.unary_unary(
            path,
            request_serializer=message_class(method.input_type).SerializeToString,
            response_deserializer=message_class(method.output_type).FromString,
        )

    def stream(self, name: str) -> Any:
        path, method = self._method(name)
        return self.channel.unary_stream(
            path,
            request_serializer=message_class(method.input_type).SerializeToString,
            response_deserializer=message_class(method.output_type).FromString,
        )


async def with_transfer(
    asking: Awaitable[T], moving: Awaitable[U], routing_key: str
) -> tuple[T, U]:
    """Run the request and its transfer side by side; the first failure of either ends
    both (an error reply stops the chunks; a broken transfer abandons the request)."""
    request = asyncio.ensure_future(asking)
    transfer = asyncio.ensure_future(moving)
    try:
        done, _ = await asyncio.wait({request, transfer}, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            failure = task.exception()
            if failure is not None:
                raise failure
        return await request, await transfer
    except (RemoteError, NoReply, Unroutable, TransferFailed) as exc:
        raise request_failed(exc, routing_key) from None
    finally:
        for task in (request, transfer):
            if not task.done():
                task.cancel()
        await asyncio.gather(request, transfer, return_exceptions=True)
