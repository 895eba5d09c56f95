"""The messaging topology of DESIGN.md, in one place.

- `ferry` (topic) carries commands and events, `ferry.dlx` (topic) dead letters,
  `ferry.retry` (headers) the parking lot;
- every work queue is a quorum queue `ferry.<service>.<purpose>` that dead-letters to
  `ferry.dlx` with its own name as routing key, into the service's `ferry.<service>.dlq`;
- a parking queue per delay class (`ferry.retry.30s`) holds a message for its TTL, then
  dead-letters it through the default exchange back to the queue named by its routing key.

Only features that both RabbitMQ 3.10 and 4.x have are used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from faststream.rabbit import ExchangeType, QueueType, RabbitExchange, RabbitQueue

# The header that names a parked message's delay class; the retry exchange routes on it.
# (Headers exchanges ignore headers whose names begin with "x-" when matching.)
DELAY_HEADER = "ferry-delay"


def delay_label(seconds: float) -> str:
    """30.0 -> '30s', 300.0 -> '5m', 0.5 -> '500ms': the suffix of a parking queue."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Names:
    """Every name, with the optional namespace prefix applied."""

    namespace: str = ""

    def __call__(self, base: str) -> str:
        return f"{self.namespace}.{base}" if self.namespace else base

    @property
    def exchange(self) -> str:
        return self("ferry")

    @property
    def dead_letter_exchange(self) -> str:
        return self("ferry.dlx")

    @property
    def retry_exchange(self) -> str:
        return self("ferry.retry")

    def queue(self, service: str, purpose: str) -> str:
        return self(f"ferry.{service}.{purpose}")

    def dead_letter_queue(self, service: str) -> str:
        return self(f"ferry.{service}.dlq")

    def parking_queue(self, seconds: float) -> str:
        return self(f"ferry.retry.{delay_label(seconds)}")


@dataclass(frozen=True)
class WorkQueue:
    """One consumer group of a service: a quorum queue bound to one routing key."""

    service: str
    purpose: str
    routing_key: str
    # Request/reply queues drop stale requests: nobody waits for their answers any more.
    message_ttl_ms: int | None = None
    extra_arguments: dict[str, Any] = field(default_factory=dict)


class Topology:
    """Builds FastStream queue and exchange objects for one namespace."""

    def __init__(self, namespace: str = "", *, delivery_limit: int = 10) -> None:
        self.names = Names(namespace)
        self.delivery_limit = delivery_limit

    @property
    def exchange(self) -> RabbitExchange:
        return RabbitExchange(self.names.exchange, type=ExchangeType.TOPIC, durable=True)

    @property
    def dead_letter_exchange(self) -> RabbitExchange:
        return RabbitExchange(
            self.names.dead_letter_exchange, type=ExchangeType.TOPIC, durable=True
        )

    @property
    def retry_exchange(self) -> RabbitExchange:
        return RabbitExchange(self.names.retry_exchange, type=ExchangeType.HEADERS, durable=True)

    def work_queue(self, spec: WorkQueue) -> RabbitQueue:
        name = self.names.queue(spec.service, spec.purpose)
        arguments: dict[str, Any] = {
            "x-dead-letter-exchange": self.names.dead_letter_exchange,
            "x-dead-letter-routing-key": name,
            "x-delivery-limit": self.delivery_limit,
            **spec.extra_arguments,
        }
        if spec.message_ttl_ms is not None:
            arguments["x-message-ttl"] = spec.message_ttl_ms
        queue: RabbitQueue = RabbitQueue(  # type: ignore[call-overload]
            name,
            queue_type=QueueType.QUORUM,
            durable=True,
            routing_key=spec.routing_key,
            arguments=arguments,
        )
        return queue

    def dead_letter_queue(self, service: str) -> RabbitQueue:
        return RabbitQueue(
            self.names.dead_letter_queue(service), queue_type=QueueType.QUORUM, durable=True
        )

    def parking_queue(self, seconds: float) -> RabbitQueue:
        # Classic on purpose: TTL expiry from the head is exact when every message of the
        # queue has the same TTL, and dead-lettering by the default exchange keeps the
        # routing key, which is the name of the queue the message returns to.
        return RabbitQueue(
            self.names.parking_queue(seconds),
            queue_type=QueueType.CLASSIC,
            durable=True,
            arguments={"x-message-ttl": int(seconds * 1000), "x-dead-letter-exchange": ""},
            bind_arguments={"x-match": "all", DELAY_HEADER: delay_label(seconds)},
        )

    def watch_queue(self, routing_key: str) -> RabbitQueue:
        """A private, exclusive queue for one watcher of events (the CLI's `watch`)."""
        return RabbitQueue(
            "",
            exclusive=True,
            auto_delete=True,
            durable=False,
            routing_key=routing_key,
        )
