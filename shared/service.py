"""The runtime every Ferry service shares: broker, topology, reliable handlers, health.

A service declares what it consumes with `@service.handles(WorkQueue(...), Contract)`; the
runtime adds the rest of DESIGN.md's delivery rules around the handler:

- the body is strictly decoded (and size-checked) before the handler sees it; a body that
  does not decode or validate is dead-lettered with the reason and acked;
- transient failures are retried in the worker (`RetryPolicy`); when the budget is spent the
  message is parked on a delay queue, and after the last parking it is dead-lettered and,
  when it names a task item, that item is recorded as failed on its task;
- permanent failures are dead-lettered at once;
- the message is acked only after the handler (and every publish it awaited) is done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from faststream import BaseMiddleware, FastStream
from faststream.rabbit import RabbitMessage, RabbitResponse
from faststream.specification import AsyncAPI

from shared import metrics
from shared.contracts.base import Contract, ErrorReply
from shared.contracts.tasks import ItemOutcome, TaskUpdate
from shared.health import HealthServer
from shared.logging import configure_logging
from shared.messaging import JSON, make_broker, publish
from shared.retry import BudgetSpent, RetryPolicy, classify, describe
from shared.settings import BaseSettings
from shared.topology import DELAY_HEADER, Topology, WorkQueue, delay_label

C = TypeVar("C", bound=Contract)
Handler = Callable[[C], Awaitable[Contract | None]]

# Headers Ferry sets on messages it parks or dead-letters.
QUEUE_HEADER = "x-ferry-queue"  # the queue the message belongs to (and returns to)
PARKED_HEADER = "x-ferry-parked"  # how many times it has been parked
ERROR_HEADER = "x-ferry-error"  # why it failed, last
ERROR_KIND_HEADER = "x-ferry-error-kind"  # malformed | permanent | exhausted
ROUTING_KEY_HEADER = "x-ferry-routing-key"  # the routing key it was first published with
FAILED_AT_HEADER = "x-ferry-failed-at"


class Malformed(Exception):
    """The body does not decode or validate against the queue's contract."""


class Service:
    def __init__(self, name: str, settings: BaseSettings) -> None:
        self.name = name
        self.settings = settings
        self.log = logging.getLogger(f"ferry.{name}")
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
        self.app = FastStream(
            self.broker,
            logger=self.log,
            specification=AsyncAPI(title=f"Ferry {name}", version="1", description=__doc__),
        )
        self.health = HealthServer(settings.http_host, settings.http_port, self.readiness)
        self.queues: list[WorkQueue] = []
        self.app.on_startup(self._declare_topology)
        self.app.after_startup(self.health.start)
        self.app.after_shutdown(self.health.stop)

    # -- declaring handlers -------------------------------------------------------------

    def handles(self, spec: WorkQueue, contract: type[C]) -> Callable[[Handler[C]], Handler[C]]:
        """Register `func` as the handler of `spec`'s queue, decoding bodies as `contract`.

        A handler that returns a contract answers the request it was given (direct reply-to).
        """
        queue = self.topology.work_queue(spec)
        queue_name = queue.name
        self.queues.append(spec)
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
            except Exception as exc:  # msgspec.DecodeError / ValidationError
                raise Malformed(f"{contract.__name__}: {exc}") from None

        def register(func: Handler[C]) -> Handler[C]:
            async def handle(body: Any) -> Any:
                # Taken from the context rather than as a parameter: a `message` parameter
                # costs a trip through a thread pool for every delivery.
                message = self.broker.context.get_local("message")
                return await self._run_reliably(func, body, message, queue_name)

            # FastStream reads the body's type from the annotations (for AsyncAPI, too).
            handle.__annotations__ = {"body": contract}
            handle.__name__ = func.__name__
            handle.__doc__ = func.__doc__
            self.broker.subscriber(
                queue, self.topology.exchange, parser=parser, decoder=decoder, title=queue_name
            )(handle)
            return func

        return register

    async def _run_reliably(
        self, func: Handler[C], body: C, message: RabbitMessage, queue: str
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
            result = await self.policy.run(lambda: func(body), on_retry=on_retry)
        except BudgetSpent as exc:
            outcome = "parked"
            await self._park_or_dead_letter(message, queue, body, exc)
            return None
        except Exception as exc:  # permanent: the policy re-raises those untouched
            outcome = "dead_lettered"
            await self.dead_letter(message, queue, "permanent", describe(exc), body=body)
            return self._error_reply(message, describe(exc))
        finally:
            metrics.handled.labels(queue, outcome).observe(time.perf_counter() - started)
        if result is not None and message.reply_to:
            return RabbitResponse(result.encode(), mandatory=False, content_type=JSON)
        return None

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
        await publish(
            self.broker,
            self.names,
            message.body,
            exchange=self.names.retry_exchange,
            routing_key=queue,
            headers={
                **self._carried_headers(message),
                DELAY_HEADER: label,
                PARKED_HEADER: index + 1,
                ERROR_HEADER: reason,
            },
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
        """Send the message to its service's dead-letter queue with the reason attached."""
        await publish(
            self.broker,
            self.names,
            message.body,
            exchange=self.names.dead_letter_exchange,
            routing_key=queue,
            headers={
                **self._carried_headers(message),
                ERROR_HEADER: reason[:2000],
                ERROR_KIND_HEADER: kind,
                FAILED_AT_HEADER: datetime.now(UTC).isoformat(),
            },
        )
        metrics.dead_lettered.labels(queue, kind).inc()
        self.log.error(
            "dead-lettered", extra={"queue": queue, "kind": kind, "error": reason[:2000]}
        )
        if kind != "malformed" and body is not None:
            await self._record_item_failed(body, reason)

    async def _record_item_failed(self, body: Contract, reason: str) -> None:
        task_id = getattr(body, "task_id", None)
        item_key = getattr(body, "item_key", None)
        if not task_id or not item_key:
            return
        update = TaskUpdate(
            task_id=task_id,
            items=[ItemOutcome(item_key=item_key, outcome="ERRORED", message=reason[:4000])],
        )
        await publish(self.broker, self.names, update)

    @staticmethod
    def _carried_headers(message: RabbitMessage) -> dict[str, Any]:
        headers = {k: v for k, v in message.headers.items() if k != "x-death"}
        headers.setdefault(ROUTING_KEY_HEADER, message.raw_message.routing_key or "")
        return headers

    @staticmethod
    def _error_reply(message: RabbitMessage, reason: str) -> RabbitResponse | None:
        if not message.reply_to:
            return None
        return RabbitResponse(ErrorReply(error=reason).encode(), mandatory=False, content_type=JSON)

    def _malformed_middleware(self) -> type[BaseMiddleware]:
        service = self

        class DeadLetterMalformed(BaseMiddleware):
            """A body that does not decode never reaches a handler: dead-letter it with the
            reason, answer the requester if there is one, and ack."""

            async def consume_scope(self, call_next: Any, msg: Any) -> Any:
                try:
                    return await call_next(msg)
                except Malformed as exc:
                    queue = msg.headers.get(QUEUE_HEADER, "")
                    await service.dead_letter(msg, queue, "malformed", str(exc))
                    reply = Service._error_reply(msg, str(exc))
                    if reply is not None:
                        await service.broker.publish(
                            reply.body,
                            routing_key=msg.reply_to,
                            mandatory=False,
                            correlation_id=msg.correlation_id,
                            content_type=JSON,
                        )
                    return None

        return DeadLetterMalformed

    # -- lifecycle ----------------------------------------------------------------------

    async def _declare_topology(self) -> None:
        """Exchanges, the dead-letter queue and the parking queues, before consuming starts."""
        await self.broker.connect()
        topology = self.topology
        await self.broker.declare_exchange(topology.exchange)
        dlx = await self.broker.declare_exchange(topology.dead_letter_exchange)
        retry = await self.broker.declare_exchange(topology.retry_exchange)
        dlq = await self.broker.declare_queue(topology.dead_letter_queue(self.name))
        for spec in self.queues:
            await dlq.bind(dlx, routing_key=self.names.queue(spec.service, spec.purpose))
        for seconds in self.settings.park_delays:
            parking = topology.parking_queue(seconds)
            declared = await self.broker.declare_queue(parking)
            await declared.bind(retry, routing_key="", arguments=parking.bind_arguments)

    async def readiness(self) -> list[str]:
        problems: list[str] = []
        if not await self.broker.ping(timeout=2):
            problems.append("broker not connected")
        for subscriber in self.broker.subscribers:
            # FastStream keeps the consuming queue private; it is the one place that knows
            # whether the consumer is attached (FastStream issue #2758: after a broker
            # restart it may not be), so readiness looks there.
            queue_obj = getattr(subscriber, "_queue_obj", None)
            if queue_obj is None or queue_obj.channel.is_closed:
                problems.append(f"no consumer on {getattr(subscriber, 'queue', subscriber)}")
        return problems

    def run(self) -> None:
        """Run until SIGINT/SIGTERM; running handlers get `graceful_timeout` to finish."""
        configure_logging(self.name, self.settings.log_level)
        self.log.info("starting", extra={"settings": self.settings.redacted()})
        asyncio.run(self.app.run())
