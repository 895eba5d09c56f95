"""Prometheus metrics shared by every service (services add their own beside these)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

registry: CollectorRegistry = REGISTRY

retries = Counter(
    "ferry_handler_retries_total", "In-process retries of a handler", ["queue"], registry=registry
)
parked = Counter(
    "ferry_messages_parked_total",
    "Messages parked on a delay queue",
    ["queue", "delay"],
    registry=registry,
)
dead_lettered = Counter(
    "ferry_messages_dead_lettered_total",
    "Messages sent to a dead-letter queue",
    ["queue", "reason"],
    registry=registry,
)
handled = Histogram(
    "ferry_handler_seconds",
    "Time from delivery to ack, by queue and outcome",
    ["queue", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30),
    registry=registry,
)
