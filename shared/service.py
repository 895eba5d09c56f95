"""The runtime every Ferry service shares: broker, topology, reliable handlers, health.

A service declares what it consumes with `@service.handles(WorkQueue(...), Contract)`; the
runtime adds the rest of DESIGN.md's delivery rules around the handler, by the queue's kind:

- every body is size-checked and strictly decoded before the handler sees it;
- transient failures are retried in the worker (`RetryPolicy`), permanent ones are not;
- a **command** that cannot be done is parked on a delay queue while its failure is
  transient, and dead-lettered with the reason when it is permanent, malformed, or parked
  too often; an `ItemCommand`'s item is then recorded as failed on its task first;
- a **request** always gets an answer: its reply, or an error reply; it is never parked or
  dead-lettered (its asker is waiting, and a stale query is not worth keeping);
- a **broadcast** (an event each instance hears on its own queue) that fails is logged and
  dropped: the level-sensitive design recovers what an event would have said;
- a message is acked only after its handler, and every follow-up it awaited, is done.

Handlers with a second parameter get the `Delivery` (headers, ids, attempt count, and
`publish` / `publish_many` / `publish_later`). `service.request(...)` asks another service.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiormq
from faststream import BaseMiddleware, FastStream
from faststream.rabbit import RabbitMessage, RabbitResponse
from faststream.rabbit.schemas import Channel
from faststream.specification import AsyncAPI

from shared import metrics
from shared.contracts.base import Contract, ErrorReply, ItemCommand
from shared.contracts.tasks import ItemOutcome, TaskUpdate
from shared.delivery import Delivery, Scheduler, seconds_until_due
from shared.health import HealthServer
from shared.logging import configure_logging
from shared.messaging import JSON, Requester, make_broker, publish
from shared.redaction import redact_text
from shared.retry import BudgetSpent, RetryPolicy, classify, describe
from shared.settings import BaseSettings
from shared.topology import DELAY_HEADER, LATER_CLASSES, Topology, WorkQueue, delay_label

C = TypeVar("C", bound=Contract)
R = TypeVar("R", bound=Contract)
Handler = Callable[..., Awaitable[Contract | None]]
ReadinessCheck = Callable[[], list[str]]

# Headers Ferry sets on messages it parks or dead-letters.
QUEUE_HEADER = "x-ferry-queue"  # the queue the message belongs to (and returns to)
PARKED_HEADER = "x-ferry-parked"  # how many times it has been parked
ERROR_HEADER = "x-ferry-error"  # why it failed, last
ERROR_KIND_HEADER = "x-ferry-error-kind"  # malformed | permanent | exhausted
ROUTING_KEY_HEADER = "x-ferry-routing-key"  # the routing key it was first published with
FAILED_AT_HEADER = "x-ferry-failed-at"
REPORT_FAILED_HEADER = "x-ferry-report-failed"  # the item-failed report could not be sent

BROKER_ATTEMPT_TIMEOUT = 10.0  # seconds one connection attempt may take at start


class Malformed(Exception):
    """The body does not decode or validate against the queue's contract."""


class StartupFailed(Exception):
    """The service cannot start; the message says what to fix."""


class Service:
    def __init__(
        self, name: str, settings: BaseSettings, *, description: str | None = None
    ) -> None:
        self.name = name
        self.settings = settings
        # The service's own description (its module docstring), for the AsyncAPI document.
        self.description = description
        self.log = logging.getLogger(f"ferry.{name}")
        # Names this process's broadcast queues apart from other instances'.
        self.instance = uuid.uuid4().hex[:12]
        self.topology = Topology(settings.namespace, delivery_limit=settings.delivery_limit)
        self.names = self.topology.names
        self.policy = RetryPolicy(
            attempts=settings.retry_attempts,
            base_delay=settings.retry_base_delay,
            max_delay=settings.retry_max_delay,
            budget=settings.retry_budget,
        )
        self.broker = make_broker(
            settings,
            service=name,
            middlewares=[self._malformed_middleware()],
            logger=self.log,
            log_level=logging.DEBUG,  # one line per message is too much at INFO
        )
        self.scheduler = Scheduler(self.broker, self.topology)
        self.requester = Requester(
            settings.amqp_url, self.names, default_timeout=settings.request_timeout
        )
        self.app = FastStream(
            self.broker,
            logger=self.log,
            specification=AsyncAPI(
                title=f"Ferry {name}", version="1", description=description or ""
            ),
        )
        self.health = HealthServer(settings.http_host, settings.http_port, self.readiness)
        self.queues: list[WorkQueue] = []
        self._kinds: dict[str, WorkQueue] = {}  # queue name -> its spec
        self._readiness_checks: list[ReadinessCheck] = []
        self._paused: str | None = None  # why consuming is paused
        self._requester_started: asyncio.Future[None] | None = None
        self.app.on_startup(self._declare_topology)
        self.app.after_startup(self._start_side_services)
        self.app.after_shutdown(self._stop_side_services)

    def declared_names(self) -> tuple[list[str], list[str]]:
        """The queues and exchanges this service declares (or may, on a first scheduled
        message) on the broker: what to delete to remove it from a namespace."""
        names = self.names
        queues = [names.queue(spec.service, spec.purpose) for spec in self.queues]
        queues.append(names.dead_letter_queue(self.name))
        queues.extend(names.parking_queue(seconds) for seconds in self.settings.park_delays)
        queues.extend(names.delay_queue(seconds) for seconds in LATER_CLASSES)
        return queues, names.exchanges

    # -- declaring handlers -------------------------------------------------------------

    def handles(self, spec: WorkQueue, contract: type[C]) -> Callable[[Handler], Handler]:
        """Register `func` as the handler of `spec`'s queue, decoding bodies as `contract`.

        `func(body)` or `func(body, delivery)`. A handler that returns a contract answers
        the request it was given (direct reply-to).
        """
        queue = self.topology.work_queue(spec, self.instance)
        queue_name = queue.name
        self.queues.append(spec)
        self._kinds[queue_name] = spec
        limit = self.settings.max_message_bytes

        async def parser(raw: Any, original: Callable[[Any], Awaitable[RabbitMessage]]) -> Any:
            message = await original(raw)
            message.headers[QUEUE_HEADER] = queue_name  # trusted: overwrites any sender's
            return message

        async def decoder(message: RabbitMessage, original: Any) -> C:
            if len(message.body) > limit:
                raise Malformed(f"body of {len(message.body)} bytes exceeds the limit of {limit}")
            try:
                return contract.decode(message.body)
            except Exception as exc:  # msgspec.DecodeError / ValidationError / version
                raise Malformed(redact_text(f"{contract.__name__}: {exc}")) from None

        def register(func: Handler) -> Handler:
            wants_delivery = len(inspect.signature(func).parameters) >= 2

            async def handle(body: Any) -> Any:
                # Taken from the context rather than as a parameter: a `message` parameter
                # costs a trip through a thread pool for every delivery.
                message = self.broker.context.get_local("message")
                if await self._sent_round_again(message):
                    return None
                delivery = self._delivery(message, queue_name) if wants_delivery else None

                async def call() -> Contract | None:
                    return await (func(body) if delivery is None else func(body, delivery))

                return await self._run_reliably(call, body, message, spec, queue_name)

            # FastStream reads the body's type from the annotations (for AsyncAPI, too).
            handle.__annotations__ = {"body": contract}
            handle.__name__ = func.__name__
            handle.__doc__ = func.__doc__
            channel = Channel(
                prefetch_count=spec.prefetch, publisher_confirms=True, on_return_raises=True
            )
            self.broker.subscriber(
                queue,
                self.topology.exchange,
                parser=parser,
                decoder=decoder,
                title=queue_name,
                channel=channel if spec.prefetch is not None else None,
            )(handle)
            return func

        return register

    def _delivery(self, message: RabbitMessage, queue: str) -> Delivery:
        headers = message.headers
        return Delivery(
            broker=self.broker,
            scheduler=self.scheduler,
            queue=queue,
            routing_key=message.raw_message.routing_key or "",
            headers=headers,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            attempt=1 + int(headers.get("x-delivery-count", 0) or 0),
            parked=int(headers.get(PARKED_HEADER, 0) or 0),
        )

    async def request(
        self,
        message: Contract,
        reply_type: type[R],
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> R:
        """Ask the service that owns `message`'s routing key; see `Requester.request`.
        The client connects on first use: a service that never asks holds no connection."""
        if self._requester_started is None:
            self._requester_started = asyncio.ensure_future(
                self.requester.connect(timeout=BROKER_ATTEMPT_TIMEOUT)
            )
        try:
            await asyncio.shield(self._requester_started)
        except Exception:
            self._requester_started = None  # the next request tries again
            raise
        return await self.requester.request(message, reply_type, timeout=timeout)

    # -- running a handler --------------------------------------------------------------

    async def _run_reliably(
        self,
        call: Callable[[], Awaitable[Contract | None]],
        body: Contract,
        message: RabbitMessage,
        spec: WorkQueue,
        queue: str,
    ) -> Any:
        started = time.perf_counter()
        outcome = "ok"

        def on_retry(attempt: int, exc: BaseException, pause: float) -> None:
            metrics.retries.labels(queue).inc()
            self.log.warning(
                "retrying after a transient failure",
                extra={
                    "queue": queue,
                    "attempt": attempt,
                    "pause_s": round(pause, 3),
                    "error": describe(exc),
                },
            )

        try:
            result = await self.policy.run(call, on_retry=on_retry)
        except BudgetSpent as exc:
            outcome = {"command": "parked", "request": "error_reply"}.get(spec.kind, "dropped")
            if spec.kind == "command":
                await self._park_or_dead_letter(message, queue, body, exc)
            return self._failed(message, spec, queue, describe(exc.last))
        except Exception as exc:  # permanent: the policy re-raises those untouched
            outcome = {"command": "dead_lettered", "request": "error_reply"}.get(
                spec.kind, "dropped"
            )
            if spec.kind == "command":
                await self.dead_letter(message, queue, "permanent", describe(exc), body=body)
            return self._failed(message, spec, queue, describe(exc))
        finally:
            metrics.handled.labels(queue, outcome).observe(time.perf_counter() - started)
        if result is not None and message.reply_to:
            return RabbitResponse(result.encode(), mandatory=False, content_type=JSON)
        return None

    def _failed(
        self, message: RabbitMessage, spec: WorkQueue, queue: str, reason: str
    ) -> RabbitResponse | None:
        """What a failed handler answers: an error reply to a request; nothing otherwise
        (a broadcast is logged and dropped here; a command was parked or dead-lettered)."""
        if spec.kind == "broadcast":
            self.log.error("broadcast dropped", extra={"queue": queue, "error": reason})
        return _error_reply(message, reason) if spec.kind == "request" else None

    async def _sent_round_again(self, message: RabbitMessage) -> bool:
        """A scheduled message that came back early (it waits in delay classes) is sent
        round once more; True when it was."""
        remaining = seconds_until_due(message.headers)
        if remaining <= 0:
            return False
        await self.scheduler.schedule(
            message.body,
            message.raw_message.routing_key or "",
            due_at=time.time() + remaining,
            headers=_carried_headers(message),
            message_id=message.message_id,
            correlation_id=message.correlation_id,
        )
        return True

    # -- failure paths ------------------------------------------------------------------

    async def _park_or_dead_letter(
        self, message: RabbitMessage, queue: str, body: Contract, spent: BudgetSpent
    ) -> None:
        delays = self.settings.park_delays
        parked = int(message.headers.get(PARKED_HEADER, 0) or 0)
        reason = describe(spent.last)
        if parked >= len(delays):
            await self.dead_letter(message, queue, "exhausted", reason, body=body)
            return
        # The peer's Retry-After may ask for more than the next class: skip ahead to it.
        hint = classify(spent.last).retry_after or 0.0
        index = next((i for i in range(parked, len(delays)) if delays[i] >= hint), len(delays) - 1)
        label = delay_label(delays[index])
        await self._republish(
            message,
            exchange=self.names.retry_exchange,
            routing_key=queue,
            headers={DELAY_HEADER: label, PARKED_HEADER: index + 1, ERROR_HEADER: reason},
        )
        metrics.parked.labels(queue, label).inc()
        self.log.warning(
            "parked after the retry budget was spent",
            extra={"queue": queue, "delay": label, "parked": index + 1, "error": reason},
        )

    async def dead_letter(
        self,
        message: RabbitMessage,
        queue: str,
        kind: str,
        reason: str,
        *,
        body: Contract | None = None,
    ) -> None:
        """Send the message to its service's dead-letter queue with the reason attached.

        An item's failure is reported to its task first: if that report cannot be sent,
        the message is still dead-lettered exactly once, marked so an operator sees it.
        """
        headers: dict[str, Any] = {
            ERROR_HEADER: reason[:2000],
            ERROR_KIND_HEADER: kind,
            FAILED_AT_HEADER: datetime.now(UTC).isoformat(),
        }
        if kind != "malformed" and isinstance(body, ItemCommand):
            report_problem = await self._record_item_failed(body, reason)
            if report_problem is not None:
                headers[REPORT_FAILED_HEADER] = report_problem
        await self._republish(
            message,
            exchange=self.names.dead_letter_exchange,
            routing_key=queue,
            headers=headers,
        )
        metrics.dead_lettered.labels(queue, kind).inc()
        self.log.error(
            "dead-lettered", extra={"queue": queue, "kind": kind, "error": reason[:2000]}
        )

    async def _record_item_failed(self, body: ItemCommand, reason: str) -> str | None:
        """Report the item as failed on its task; returns why that failed, if it did."""
        update = TaskUpdate(
            task_id=body.task_id,
            items=[ItemOutcome(item_key=body.item_key, outcome="ERRORED", message=reason[:4000])],
            observed_at=datetime.now(UTC),
        )
        try:
            await publish(self.broker, self.names, update)
        except Exception as exc:
            problem = describe(exc)
            self.log.error(
                "could not record the failed item on its task",
                extra={"task_id": body.task_id, "item_key": body.item_key, "error": problem},
            )
            return problem
        return None

    async def _republish(
        self, message: RabbitMessage, *, exchange: str, routing_key: str, headers: dict[str, Any]
    ) -> None:
        """A copy of `message` (same body, ids and timestamp) with Ferry's headers added."""
        raw = message.raw_message
        await publish(
            self.broker,
            self.names,
            message.body,
            exchange=exchange,
            routing_key=routing_key,
            headers={**_carried_headers(message), **headers},
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            timestamp=raw.timestamp,
        )

    def _malformed_middleware(self) -> type[BaseMiddleware]:
        service = self

        class HandleMalformed(BaseMiddleware):
            """A body that does not decode never reaches a handler: a command is
            dead-lettered with the reason, a request answered with it, a broadcast
            dropped; then the message is acked."""

            async def consume_scope(self, call_next: Any, msg: Any) -> Any:
                try:
                    return await call_next(msg)
                except Malformed as exc:
                    queue = msg.headers.get(QUEUE_HEADER, "")
                    spec = service._kinds.get(queue)
                    if spec is None or spec.kind == "command":
                        await service.dead_letter(msg, queue, "malformed", str(exc))
                    else:
                        service.log.warning(
                            "malformed message", extra={"queue": queue, "error": str(exc)}
                        )
                    reply = _error_reply(msg, str(exc))
                    if reply is not None:
                        await service.broker.publish(
                            reply.body,
                            routing_key=msg.reply_to,
                            mandatory=False,
                            correlation_id=msg.correlation_id,
                            content_type=JSON,
                        )
                    return None

        return HandleMalformed

    # -- pausing and readiness ----------------------------------------------------------

    def add_readiness_check(self, check: ReadinessCheck) -> None:
        """`check()` names what is not ready (from state: it must not wait on I/O)."""
        self._readiness_checks.append(check)

    async def pause(self, reason: str) -> None:
        """Stop taking new commands and broadcasts; those in hand stay in hand (unacked).

        Used while something the handlers need is down, so that messages wait in their
        queues instead of failing into the park and dead-letter paths. Request queues go on:
        a request is answered at once (with an error reply saying what is down) rather
        than left to time out."""
        if self._paused is not None:
            return
        self._paused = reason
        self.log.warning("paused consuming", extra={"reason": reason})
        for subscriber in self._pausable():
            queue_obj, tag = _consumer_of(subscriber)
            if queue_obj is not None and tag is not None and not queue_obj.channel.is_closed:
                await queue_obj.cancel(tag)
                subscriber._consumer_tag = None

    async def resume(self) -> None:
        if self._paused is None:
            return
        for subscriber in self._pausable():
            queue_obj, tag = _consumer_of(subscriber)
            if queue_obj is not None and tag is None:
                subscriber._consumer_tag = await queue_obj.consume(
                    subscriber.consume, arguments=getattr(subscriber, "consume_args", None) or None
                )
        self.log.info("resumed consuming", extra={"was_paused_for": self._paused})
        self._paused = None

    def _pausable(self) -> list[Any]:
        return [
            subscriber
            for subscriber in self.broker.subscribers
            if (spec := self._kinds.get(getattr(getattr(subscriber, "queue", None), "name", "")))
            is None
            or spec.kind != "request"
        ]

    async def readiness(self) -> list[str]:
        """What is not ready, from state alone (answered at once, even with no broker)."""
        problems: list[str] = []
        connection = getattr(self.broker, "_connection", None)
        if connection is None or not connection.connected.is_set():
            problems.append("broker not connected")
        if self._paused is not None:
            problems.append(f"consuming paused: {self._paused}")
        paused = set(map(id, self._pausable())) if self._paused is not None else set()
        for subscriber in self.broker.subscribers:
            queue_obj, tag = _consumer_of(subscriber)
            if id(subscriber) in paused:
                continue
            if queue_obj is None or tag is None or queue_obj.channel.is_closed:
                problems.append(f"no consumer on {getattr(subscriber, 'queue', subscriber)}")
        if self._requester_started is not None and not self.requester.is_connected:
            problems.append("request client not connected")
        for check in self._readiness_checks:
            problems.extend(check())
        return problems

    # -- lifecycle ----------------------------------------------------------------------

    async def _declare_topology(self) -> None:
        """Exchanges, the dead-letter queue and the parking queues, before consuming starts."""
        connection = await self.broker.connect()
        self.topology.broker_major = _broker_major(connection)
        topology = self.topology
        await self.broker.declare_exchange(topology.exchange)
        if not any(spec.kind == "command" for spec in self.queues):
            return
        dlx = await self.broker.declare_exchange(topology.dead_letter_exchange)
        retry = await self.broker.declare_exchange(topology.retry_exchange)
        dlq = await self.broker.declare_queue(topology.dead_letter_queue(self.name))
        for spec in self.queues:
            if spec.kind == "command":
                await dlq.bind(dlx, routing_key=self.names.queue(spec.service, spec.purpose))
        for seconds in self.settings.park_delays:
            parking = topology.parking_queue(seconds)
            declared = await self.broker.declare_queue(parking)
            await declared.bind(retry, routing_key="", arguments=parking.bind_arguments)

    async def _start_side_services(self) -> None:
        try:
            await self.health.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupFailed(
                    f"port {self.settings.http_port} is already in use"
                    " (set FERRY_HTTP_PORT to a free port)"
                ) from None
            raise

    async def _stop_side_services(self) -> None:
        await self.health.stop()
        await self.requester.close()

    async def connect_broker(self) -> None:
        """Connect, retrying with backoff for up to `connect_timeout` seconds; one log line
        per failed attempt. Wrong credentials fail at once: retrying cannot fix them."""
        where = _broker_address(self.settings.amqp_url)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.connect_timeout
        pause = 0.5
        for attempt in range(1, 10_000):
            try:
                await asyncio.wait_for(self.broker.connect(), BROKER_ATTEMPT_TIMEOUT)
                return
            except aiormq.exceptions.ProbableAuthenticationError as exc:
                raise StartupFailed(
                    f"RabbitMQ at {where} refused the credentials of user"
                    f" {urlsplit(self.settings.amqp_url).username or 'guest'!r}"
                    " (check the user and password in FERRY_AMQP_URL)"
                ) from exc
            except (OSError, aiormq.exceptions.AMQPError, TimeoutError) as exc:
                reason = describe(exc)
                if loop.time() + pause > deadline:
                    raise StartupFailed(
                        f"cannot reach RabbitMQ at {where} after {attempt} attempts in"
                        f" {self.settings.connect_timeout:g}s ({reason});"
                        " check FERRY_AMQP_URL and that the broker is running"
                    ) from exc
                self.log.warning(
                    "RabbitMQ not reachable yet; retrying",
                    extra={"broker": where, "attempt": attempt, "pause_s": pause, "error": reason},
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def serve(self) -> None:
        """Connect (with retries), then run until SIGINT/SIGTERM; running handlers get
        `graceful_timeout` to finish."""
        await self.connect_broker()
        await self.app.run()

    def run(self) -> None:
        """The process entry point: every failure an operator can cause ends as one log
        line and exit status 1, never a traceback."""
        configure_logging(self.name, self.settings.log_level)
        self.log.info("starting", extra={"settings": self.settings.redacted()})
        try:
            asyncio.run(self.serve())
        except KeyboardInterrupt:
            pass
        except StartupFailed as exc:
            self.log.error(f"cannot start: {exc}")
            sys.exit(1)
        except Exception as exc:
            self.log.debug("stopped by an error", exc_info=True)
            advice = _redeclaration_advice(exc)
            self.log.error(f"cannot start: {advice}" if advice else f"stopped: {describe(exc)}")
            sys.exit(1)


_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<argument>[^']+)' for (?P<kind>queue|exchange) '(?P<name>[^']+)'"
)


def _redeclaration_advice(exc: BaseException) -> str | None:
    """What to do when the broker holds a queue or exchange declared with other arguments
    (by an older Ferry, or by hand): RabbitMQ refuses to change them in place."""
    match = _INEQUIVALENT.search(str(exc))
    if match is None:
        return None
    kind, name = match["kind"], match["name"]
    remove = f"rabbitmqctl delete_queue {name}"
    if kind == "exchange":
        remove = f"rabbitmqadmin delete exchange name={name}"
    return (
        f"the {kind} {name} exists with another {match['argument']!r} than this version"
        f" declares (made by an older Ferry, or by hand); RabbitMQ cannot change it in place:"
        f" once it is drained, {remove}, and it is declared afresh at the next start"
    )


def _error_reply(message: RabbitMessage, reason: str) -> RabbitResponse | None:
    if not message.reply_to:
        return None
    return RabbitResponse(ErrorReply(error=reason).encode(), mandatory=False, content_type=JSON)


def _carried_headers(message: RabbitMessage) -> dict[str, Any]:
    """The headers a copy keeps: everything but the broker's own death records."""
    headers = {
        k: v
        for k, v in message.headers.items()
        if not k.startswith(("x-death", "x-first-death-", "x-last-death-", "x-delivery-count"))
    }
    headers.setdefault(ROUTING_KEY_HEADER, message.raw_message.routing_key or "")
    return headers


def _consumer_of(subscriber: Any) -> tuple[Any, str | None]:
    # FastStream keeps the consuming queue and consumer tag private; they are the one place
    # that knows whether the consumer is attached (FastStream issue #2758: after a broker
    # restart it may not be), and the one handle to pause and resume consuming with.
    return getattr(subscriber, "_queue_obj", None), getattr(subscriber, "_consumer_tag", None)


def _broker_major(connection: Any) -> int:
    try:
        version = connection.transport.connection.server_properties["version"]
        text = version.decode() if isinstance(version, bytes) else str(version)
        return int(text.split(".")[0])
    except (AttributeError, KeyError, ValueError):
        # Unknown: no argument, which on 4.x is its default limit of 20 looks, where `-1`
        # on 3.x would drop a dead letter at its first look.
        return 3


def _broker_address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 5672}"
