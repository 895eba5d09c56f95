"""The messaging topology of DESIGN.md, in one place.

- `ferry` (topic) carries commands and events, `ferry.dlx` (topic) dead letters,
  `ferry.retry` (headers) the parking lot, `ferry.later` (headers) scheduled messages;
- every command queue is a quorum queue `ferry.<service>.<purpose>` that dead-letters
  (at-least-once) to `ferry.dlx` with its own name as routing key, into the service's
  `ferry.<service>.dlq`;
- request queues are quorum queues that never dead-letter: a stale request expires, a bad
  one gets an error reply;
- broadcast queues are one private queue per running instance (every instance hears it);
- a parking queue per delay class (`ferry.retry.30s`) holds a message for its TTL, then
  dead-letters it through the default exchange back to the queue named by its routing key;
- a delay queue per class (`ferry.later.30s`) holds a scheduled message, then dead-letters
  it into `ferry` with its own routing key.

Parking and delay queues are quorum queues (they survive the loss of a node) with
at-least-once dead-lettering, which RabbitMQ 3.10 and 4.x both have. Only features of both
are used; where their semantics differ (the delivery limit), the broker's version decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from faststream.rabbit import ExchangeType, QueueType, RabbitExchange, RabbitQueue

# The header that names a parked message's delay class; the retry exchange routes on it.
# (Headers exchanges ignore headers whose names begin with "x-" when matching.)
DELAY_HEADER = "ferry-delay"
# The same for a scheduled message's delay class on the `ferry.later` exchange.
LATER_HEADER = "ferry-later"

# Delay classes of `publish_later`: a delay is served by hops through the largest class
# that fits what remains, so any delay costs a few hops at most.
LATER_CLASSES: tuple[float, ...] = (1.0, 5.0, 30.0, 300.0, 1800.0)

# How a queue's failures are handled (see shared.service):
# command   - retried, parked, dead-lettered; the dead-letter queue keeps it for an operator
# request   - answered: a failure becomes an error reply, nothing is parked or dead-lettered
# broadcast - every instance has its own queue; a failure is logged, the event dropped
QueueKind = Literal["command", "request", "broadcast"]

# At-least-once dead-lettering: the broker keeps a message in the source queue until the
# dead-letter target confirms it (at-most-once, the default, loses it on a hiccup).
# It requires the reject-publish overflow mode.
AT_LEAST_ONCE = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


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

    @property
    def later_exchange(self) -> str:
        return self("ferry.later")

    @property
    def exchanges(self) -> list[str]:
        """Every exchange of the namespace."""
        return [self.exchange, self.dead_letter_exchange, self.retry_exchange, self.later_exchange]

    def delay_queue(self, seconds: float) -> str:
        return self(f"ferry.later.{delay_label(seconds)}")

    def broadcast_queue(self, service: str, purpose: str, instance: str) -> str:
        return self(f"ferry.{service}.{purpose}.{instance}")


REQUEST_TTL_MS = 60_000  # longer than any asker waits (FERRY_REQUEST_TIMEOUT, RPC deadlines)


@dataclass(frozen=True)
class WorkQueue:
    """One consumer group of a service, bound to one routing key: a quorum queue for
    commands and requests, one private queue per instance for broadcasts."""

    service: str
    purpose: str
    routing_key: str
    kind: QueueKind = "command"
    # Unacked messages in flight on this queue; None: the service's FERRY_PREFETCH.
    prefetch: int | None = None
    # Request/reply queues drop stale requests: nobody waits for their answers any more.
    message_ttl_ms: int | None = None
    extra_arguments: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def request(
        cls, service: str, purpose: str, routing_key: str, *, prefetch: int | None = None
    ) -> WorkQueue:
        """A request/reply queue: a request older than `REQUEST_TTL_MS` is dropped, as its
        asker has given up waiting for the answer."""
        return cls(
            service,
            purpose,
            routing_key,
            kind="request",
            prefetch=prefetch,
            message_ttl_ms=REQUEST_TTL_MS,
        )


def dead_letter_queue_arguments(broker_major: int) -> dict[str, Any]:
    """A dead-letter queue keeps what it holds until an operator acts, however often it
    is looked at (`ferry dlq list` returns what it peeks, which counts as a delivery).

    RabbitMQ 4 gives every quorum queue a delivery limit of 20 unless told `-1`; RabbitMQ
    3.x has no limit unless one is set, and reads `-1` as "drop after the first return".
    So the argument depends on the broker's major version.
    """
    return {"x-delivery-limit": -1} if broker_major >= 4 else {}


class Topology:
    """Builds FastStream queue and exchange objects for one namespace."""

    def __init__(
        self, namespace: str = "", *, delivery_limit: int = 10, broker_major: int = 4
    ) -> None:
        self.names = Names(namespace)
        self.delivery_limit = delivery_limit
        # Learnt from the broker once connected (see `dead_letter_queue_arguments`).
        self.broker_major = broker_major

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

    @property
    def later_exchange(self) -> RabbitExchange:
        return RabbitExchange(self.names.later_exchange, type=ExchangeType.HEADERS, durable=True)

    def work_queue(self, spec: WorkQueue, instance: str = "") -> RabbitQueue:
        """The queue of `spec`; a broadcast queue is private to `instance`."""
        if spec.kind == "broadcast":
            # Exclusive: gone with its connection, so a stopped instance leaves nothing
            # behind. Not auto-delete: pausing cancels the consumer, and the queue must stay.
            return RabbitQueue(
                self.names.broadcast_queue(spec.service, spec.purpose, instance),
                queue_type=QueueType.CLASSIC,
                durable=False,
                exclusive=True,
                auto_delete=False,
                routing_key=spec.routing_key,
            )
        name = self.names.queue(spec.service, spec.purpose)
        arguments: dict[str, Any] = {"x-delivery-limit": self.delivery_limit}
        if spec.kind == "command":
            arguments.update(
                {
                    "x-dead-letter-exchange": self.names.dead_letter_exchange,
                    "x-dead-letter-routing-key": name,
                    **AT_LEAST_ONCE,
                }
            )
        if spec.message_ttl_ms is not None:
            arguments["x-message-ttl"] = spec.message_ttl_ms
        arguments.update(spec.extra_arguments)
        queue: RabbitQueue = RabbitQueue(  # type: ignore[call-overload]
            name,
            queue_type=QueueType.QUORUM,
            durable=True,
            routing_key=spec.routing_key,
            arguments=arguments,
        )
        return queue

    def dead_letter_queue(self, service: str) -> RabbitQueue:
        queue: RabbitQueue = RabbitQueue(  # type: ignore[call-overload]
            self.names.dead_letter_queue(service),
            queue_type=QueueType.QUORUM,
            durable=True,
            arguments=dead_letter_queue_arguments(self.broker_major),
        )
        return queue

    def parking_queue(self, seconds: float) -> RabbitQueue:
        # Every message of one queue has the same TTL, so expiry from the head is exact;
        # dead-lettering by the default exchange keeps the routing key, which is the name
        # of the queue the message returns to.
        return self._holding_queue(
            self.names.parking_queue(seconds), seconds, "", {DELAY_HEADER: delay_label(seconds)}
        )

    def delay_queue(self, seconds: float) -> RabbitQueue:
        # A scheduled message keeps the routing key it was published with, so on expiry
        # `ferry` routes it as if it had just been published.
        return self._holding_queue(
            self.names.delay_queue(seconds),
            seconds,
            self.names.exchange,
            {LATER_HEADER: delay_label(seconds)},
        )

    @staticmethod
    def _holding_queue(
        name: str, seconds: float, release_to: str, match: dict[str, str]
    ) -> RabbitQueue:
        queue: RabbitQueue = RabbitQueue(  # type: ignore[call-overload]
            name,
            queue_type=QueueType.QUORUM,
            durable=True,
            arguments={
                "x-message-ttl": int(seconds * 1000),
                "x-dead-letter-exchange": release_to,
                **AT_LEAST_ONCE,
            },
            bind_arguments={"x-match": "all", **match},
        )
        return queue
