"""The AsyncAPI 3.0 document of one service, written for whoever publishes to its queues.

Everything in it is derived from the code's declarations, never written per service:

- the service's description is its app module's docstring;
- its work queues are the `WorkQueue`s it registered with the runtime (`Service.queues`),
  each with the contract its handler decodes, the arguments `Topology` gives the queue,
  and, for requests, the reply contract of `shared.contracts.REPLIES`;
- the events it publishes are the contracts no service consumes as a command or a request,
  in the domain (first routing-key word) of the commands it consumes; a service that takes
  a `DrivingCommand` publishes commands whose keys come from the messages themselves;
- the exchanges, dead-letter, parking and delay queues come from `Topology`, and the
  headers Ferry puts on held messages are the runtime's `*_HEADER` constants.

Names are shown without the namespace prefix (`FERRY_NAMESPACE`), which is described once.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import msgspec
from faststream.rabbit import RabbitExchange, RabbitQueue

import shared.delivery
import shared.service
import shared.topology
from shared.contracts import BY_ROUTING_KEY, REPLIES, Contract, DrivingCommand, TaskUpdate
from shared.contracts.base import ItemCommand
from shared.service import Service
from shared.topology import LATER_CLASSES, Topology, WorkQueue

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING = "0.3.0"
SCHEMAS = "#/components/schemas/"
MESSAGES = "#/components/messages/"
SERVER = "rabbitmq"
REPLY_KEY = "x-ferry-reply"  # the reply schema of a request channel, for quick lookups
DYNAMIC_COMMANDS = "driving-commands"

NAMESPACE_NOTE = (
    "Names in this document carry no namespace. A deployment may set `FERRY_NAMESPACE`; "
    "then every exchange and queue name starts with `<namespace>.` (exchange "
    "`<namespace>.ferry`, queue `<namespace>.ferry.<service>.<purpose>`), and so do the "
    "queue names inside queue arguments and in the `x-ferry-queue` header. Routing keys "
    "never carry it."
)

PUBLISHING_RULES = """\
How to publish to Ferry:

- publish to the `ferry` exchange (topic) with the routing key of the channel; publish
  *persistent* (delivery mode 2), *mandatory* and with publisher confirms: an unroutable
  message (nobody consumes that key) comes back, and that is an error to report, not to
  ignore;
- the body is JSON (`application/json`), snake_case, one object; unknown fields are
  ignored (so a newer producer can add some), missing required fields and wrong types are
  not: such a message is dead-lettered with kind `malformed` and never retried. The
  timestamps that order changes (`observed_at`, `submitted_at`, ...) are required: set
  them from your clock when you produce the message, not when you (re)send it;
- `version` (default 1) is the contract version; a consumer refuses versions newer than it
  knows;
- requests carry `reply_to` (RabbitMQ direct reply-to: `amq.rabbitmq.reply-to`) and a
  `correlation_id`; the answer comes back with the same `correlation_id`. A reply with
  `error` set means the request could not be served; the text says why;
- commands are acked only after their effect is done: redelivery happens, so every
  handler is idempotent. A failure is retried in the worker, then parked on a
  `ferry.retry.<delay>` queue and returned later, and in the end dead-lettered to
  `ferry.<service>.dlq` with the reason in its headers (see the dead-letter channel)."""

# What each header Ferry sets on a held message means, for whoever reads a held message.
HEADER_MEANINGS: dict[str, tuple[str, dict[str, Any]]] = {
    shared.service.QUEUE_HEADER: (
        "The work queue the message belongs to (full name, with the namespace prefix if "
        "any): where a parked message returns and where `ferry dlq replay` sends a dead "
        "letter back.",
        {"type": "string"},
    ),
    shared.service.ROUTING_KEY_HEADER: (
        "The routing key the message was first published with.",
        {"type": "string"},
    ),
    shared.service.ERROR_HEADER: (
        "Why it failed, last: the error as the handler saw it (at most 2,000 characters).",
        {"type": "string"},
    ),
    shared.service.ERROR_KIND_HEADER: (
        "How it failed: `malformed` (the body did not decode or validate against the "
        "contract, or was too large; never retried), `permanent` (the handler failed in a "
        "way retrying cannot fix, e.g. a 4xx from a peer), `exhausted` (transient "
        "failures outlasted every retry and every parking).",
        {"type": "string", "enum": ["malformed", "permanent", "exhausted"]},
    ),
    shared.service.FAILED_AT_HEADER: (
        "When it was dead-lettered (ISO 8601, UTC).",
        {"type": "string", "format": "date-time"},
    ),
    shared.service.PARKED_HEADER: (
        "How many times it has been parked (1 = once). After as many parkings as there "
        "are delay classes, the next failure dead-letters it.",
        {"type": "integer", "minimum": 1},
    ),
    shared.topology.DELAY_HEADER: (
        "The parking delay class (e.g. `30s`, `5m`); the `ferry.retry` headers exchange "
        "routes on it to the parking queue of that class.",
        {"type": "string"},
    ),
    shared.topology.LATER_HEADER: (
        "The delay class of a scheduled message (e.g. `30s`); the `ferry.later` headers "
        "exchange routes on it to the delay queue of that class.",
        {"type": "string"},
    ),
    shared.delivery.DUE_HEADER: (
        "When a scheduled message is due (epoch seconds). One that comes back early is "
        "sent round the delay queues again by the consuming service.",
        {"type": "number"},
    ),
    shared.service.REPORT_FAILED_HEADER: (
        "Set when the item-failed report (`tasks.update`) for this dead letter could not "
        "be sent, saying why: its task does not know the item failed.",
        {"type": "string"},
    ),
}
X_DEATH = (
    "x-death",
    (
        "Set by RabbitMQ (not Ferry) when the broker itself dead-lettered the message: "
        "`reason` `delivery_limit` means it was delivered `x-delivery-limit` times without "
        "an ack (e.g. it crashed the consumer each time); `queue` names its work queue.",
        {"type": "array", "items": {"type": "object"}},
    ),
)
UNDESCRIBED = "Set by the Ferry runtime (see the `*_HEADER` constants of shared/service.py)."

# Who carries which header: the runtime's `*_HEADER` constants not listed here are put on
# dead letters (they are what a failure adds).
PARKED_HEADERS = (
    shared.topology.DELAY_HEADER,
    shared.service.PARKED_HEADER,
    shared.service.ERROR_HEADER,
    shared.service.QUEUE_HEADER,
    shared.service.ROUTING_KEY_HEADER,
)
NOT_ON_DEAD_LETTERS = (
    shared.topology.DELAY_HEADER,
    shared.topology.LATER_HEADER,
    shared.delivery.DUE_HEADER,
)
SCHEDULED_HEADERS = (shared.topology.LATER_HEADER, shared.delivery.DUE_HEADER)
# Where the runtime's `*_HEADER` constants live.
HEADER_MODULES = (shared.service, shared.topology, shared.delivery)

EXCHANGE_PURPOSES = {
    "ferry": "Commands, requests and events: publish here with the routing key of a channel.",
    "ferry.dlx": "Dead letters: routes a failed message (routing key = the full name of its "
    "work queue) to its service's `ferry.<service>.dlq`.",
    "ferry.retry": "The parking lot: routes a parked message on its `ferry-delay` header to "
    "the parking queue of that delay class.",
    "ferry.later": "Scheduled messages: routes on the `ferry-later` header to the delay queue "
    "of that class; on expiry the message goes to `ferry` with its own routing key.",
}
QUEUE_KINDS = {
    "command": "a command: retried in the worker, parked, and in the end dead-lettered to "
    "this service's dead-letter queue; acked only after its effect is done",
    "request": "a request: answered on `reply_to`; a failure is an error reply, nothing is "
    "parked or dead-lettered, and a request nobody took within the queue's TTL expires",
    "broadcast": "a broadcast: every running instance has its own private queue bound to "
    "this key (`ferry.<service>.<purpose>.<instance>`, exclusive, gone with the instance), "
    "so every instance hears every message; a failure is logged and the message dropped",
}


@dataclass(frozen=True)
class Consumed:
    """One work queue of a service, with the contracts it takes and answers."""

    spec: WorkQueue
    kind: str
    contract: type[Contract] | None
    reply: type[Contract] | None
    summary: str | None


# -- reading the declarations ------------------------------------------------------------


def app_module(service: str) -> ModuleType:
    return importlib.import_module(f"services.{service}.app")


def consumed_by(service: Service) -> list[Consumed]:
    handlers = _handlers_by_queue(service)
    consumed: list[Consumed] = []
    for spec in service.queues:
        handler = handlers.get(service.topology.work_queue(spec, service.instance).name)
        contract = _body_contract(handler) or BY_ROUTING_KEY.get(spec.routing_key)
        reply = REPLIES.get(spec.routing_key)
        kind = spec.kind
        if kind == "command" and reply is not None:
            kind = "request"  # declared before `WorkQueue.kind` existed
        consumed.append(Consumed(spec, kind, contract, reply, inspect.getdoc(handler)))
    return consumed


def _handlers_by_queue(service: Service) -> dict[str, Any]:
    """Queue name -> the handler function the service registered for it."""
    found: dict[str, Any] = {}
    for subscriber in service.broker.subscribers:
        for call in subscriber.calls:
            # FastStream keeps the decorated function as `_original_call`; the runtime gives
            # it the handler's docstring and `body: <Contract>` annotation.
            function = getattr(call.handler, "_original_call", None)
            queue = getattr(subscriber, "queue", None)
            if function is not None and queue is not None:
                found.setdefault(queue.name, function)
    return found


def _body_contract(handler: Any) -> type[Contract] | None:
    annotation = getattr(handler, "__annotations__", {}).get("body")
    if inspect.isclass(annotation) and issubclass(annotation, Contract):
        return annotation
    return None


def events_of(consumed: Sequence[Consumed], all_consumed: Iterable[str]) -> list[type[Contract]]:
    """Contracts no service takes as a command or request, in this service's domains."""
    domains = {c.spec.routing_key.split(".", 1)[0] for c in consumed if c.kind != "broadcast"}
    taken = set(all_consumed)
    return [
        contract
        for key, contract in sorted(BY_ROUTING_KEY.items())
        if key not in taken and key.split(".", 1)[0] in domains
    ]


def takes_driving_commands(contract: type[Contract]) -> bool:
    """Whether a message of `contract` can carry a `DrivingCommand` for its receiver to send."""
    info = msgspec.inspect.type_info(contract)
    assert isinstance(info, msgspec.inspect.StructType)
    return any(_mentions(field.type, DrivingCommand) for field in info.fields)


def _mentions(info: msgspec.inspect.Type, struct: type[msgspec.Struct]) -> bool:
    if isinstance(info, msgspec.inspect.StructType):
        return info.cls is struct
    if isinstance(info, msgspec.inspect.UnionType):
        return any(_mentions(t, struct) for t in info.types)
    return False


def runtime_headers() -> dict[str, tuple[str, dict[str, Any]]]:
    """Every header Ferry's runtime sets on held messages, each with its meaning."""
    names = [
        value
        for module in HEADER_MODULES
        for name, value in vars(module).items()
        if name.endswith("_HEADER") and isinstance(value, str)
    ]
    return {
        name: HEADER_MEANINGS.get(name, (UNDESCRIBED, {"type": "string"}))
        for name in dict.fromkeys(names)
    }


# -- the document ------------------------------------------------------------------------


class DocumentBuilder:
    """Builds one service's document; `all_consumed` is every routing key any service of
    the repository takes as a command or request (to tell events from commands)."""

    def __init__(self, service: Service, description: str, all_consumed: Iterable[str]) -> None:
        self.service = service
        self.description = description
        self.all_consumed = set(all_consumed)
        settings = service.settings
        # The document is namespace-free: the names come from a topology without one.
        self.topology = Topology("", delivery_limit=settings.delivery_limit)
        self.names = self.topology.names
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        self.structs: set[type[msgspec.Struct]] = set()
        self.extra_schemas: dict[str, Any] = {}

    def build(self) -> dict[str, Any]:
        consumed = consumed_by(self.service)
        for item in consumed:
            self._work_queue(item)
        for event in events_of(consumed, self.all_consumed):
            self._event(event)
        if any(c.contract is not None and takes_driving_commands(c.contract) for c in consumed):
            self._driving_commands()
        if any(c.contract is not None and issubclass(c.contract, ItemCommand) for c in consumed):
            self._item_failures()
        if any(c.kind == "command" for c in consumed):
            self._dead_letter_queue(consumed)
            for seconds in self.service.settings.park_delays:
                self._parking_queue(seconds)
        for seconds in LATER_CLASSES:
            self._delay_queue(seconds)
        return {
            "asyncapi": ASYNCAPI_VERSION,
            "info": {
                "title": f"Ferry {self.service.name}",
                "version": "1",
                "description": "\n\n".join(
                    filter(None, [self.description, NAMESPACE_NOTE, PUBLISHING_RULES])
                ),
            },
            "defaultContentType": "application/json",
            "servers": {SERVER: self._server()},
            "channels": self.channels,
            "operations": self.operations,
            "components": {"messages": self.messages, "schemas": self._schemas()},
            "x-ferry-namespace": {
                "setting": "FERRY_NAMESPACE",
                "prefix": "<namespace>.",
                "appliesTo": "every exchange and queue name, never routing keys",
            },
            "x-ferry-exchanges": self._exchanges(),
        }

    # -- parts ----------------------------------------------------------------------------

    def _server(self) -> dict[str, Any]:
        parts = urlsplit(self.service.settings.amqp_url)
        # Host and vhost only: the URL's credentials never go into a document.
        return {
            "host": f"{parts.hostname or '127.0.0.1'}:{parts.port or 5672}",
            "pathname": parts.path or "/",
            "protocol": "amqp",
            "protocolVersion": "0.9.1",
            "description": "The RabbitMQ broker of this deployment (FERRY_AMQP_URL).",
        }

    def _exchanges(self) -> list[dict[str, Any]]:
        topology = self.topology
        return [
            {
                **_exchange_binding(exchange),
                "description": EXCHANGE_PURPOSES.get(exchange.name, ""),
            }
            for exchange in (
                topology.exchange,
                topology.dead_letter_exchange,
                topology.retry_exchange,
                topology.later_exchange,
            )
        ]

    def _work_queue(self, item: Consumed) -> None:
        spec = item.spec
        queue = self.topology.work_queue(spec, instance="<instance>")
        channel_id = self.names.queue(spec.service, spec.purpose)
        lines = [
            item.summary or "",
            f"Publish to exchange `ferry` with routing key `{spec.routing_key}`; it is "
            f"{QUEUE_KINDS.get(item.kind, item.kind)}.",
        ]
        if item.kind == "command":
            lines.append(
                f"Failures end in `{self.names.dead_letter_queue(spec.service)}` "
                f"(see that channel)."
            )
        if item.reply is not None:
            lines.append(
                f"The answer, to `reply_to`, is a `{item.reply.__name__}`; its `error` is "
                "set when the request could not be served."
            )
        channel: dict[str, Any] = {
            "address": spec.routing_key,
            "title": f"{spec.routing_key} -> {queue.name}",
            "description": "\n\n".join(filter(None, lines)),
            "servers": [{"$ref": f"#/servers/{SERVER}"}],
            "messages": {},
            "bindings": {"amqp": self._routing_key_binding(self.topology.exchange)},
            "x-ferry-queue": {**_queue_facts(queue), "kind": item.kind},
        }
        if item.contract is not None:
            name = self._message(item.contract)
            channel["messages"][name] = {"$ref": MESSAGES + name}
        self.channels[channel_id] = channel
        operation: dict[str, Any] = {
            "action": "receive",
            "title": f"{self.service.name} takes {spec.routing_key}",
            "channel": {"$ref": f"#/channels/{_escape(channel_id)}"},
            "messages": [
                {"$ref": f"#/channels/{_escape(channel_id)}/messages/{name}"}
                for name in channel["messages"]
            ],
            "bindings": {
                "amqp": {
                    "cc": [spec.routing_key],
                    "deliveryMode": 2,
                    "mandatory": True,
                    "ack": True,
                    "bindingVersion": AMQP_BINDING,
                }
            },
        }
        if item.reply is not None:
            reply_channel = f"{channel_id}.reply"
            reply_name = self._message(item.reply)
            self.channels[reply_channel] = {
                "address": None,
                "title": f"the reply to {spec.routing_key}",
                "description": "Sent to the request's `reply_to` (direct reply-to) with its "
                "`correlation_id`.",
                "messages": {reply_name: {"$ref": MESSAGES + reply_name}},
            }
            operation["reply"] = {
                "address": {
                    "location": "$message.header#/reply_to",
                    "description": "The requester's `reply_to` property.",
                },
                "channel": {"$ref": f"#/channels/{_escape(reply_channel)}"},
                "messages": [
                    {"$ref": f"#/channels/{_escape(reply_channel)}/messages/{reply_name}"}
                ],
            }
            pointer = {"$ref": SCHEMAS + item.reply.__name__}
            channel[REPLY_KEY] = pointer
            operation[REPLY_KEY] = pointer
        self.operations[f"{channel_id}.receive"] = operation

    def _event(self, contract: type[Contract]) -> None:
        key = contract.ROUTING_KEY
        name = self._message(contract)
        self.channels[key] = {
            "address": key,
            "title": f"event {key}",
            "description": "\n\n".join(
                filter(
                    None,
                    [
                        inspect.getdoc(contract),
                        f"Published by {self.service.name} to exchange `ferry` with routing "
                        f"key `{key}`, not mandatory (it may have no listener). To receive "
                        "it, bind a queue of your own to `ferry` with this key.",
                    ],
                )
            ),
            "servers": [{"$ref": f"#/servers/{SERVER}"}],
            "messages": {name: {"$ref": MESSAGES + name}},
            "bindings": {"amqp": self._routing_key_binding(self.topology.exchange)},
        }
        self._send(key, name, f"{self.service.name} publishes {key}", mandatory=False)

    def _driving_commands(self) -> None:
        name = "DrivenCommand"
        self.extra_schemas[name] = {
            "type": "object",
            "title": name,
            "description": "The submitted `command.body`, with `task_id` added.",
            "properties": {"task_id": {"type": "string"}},
            "required": ["task_id"],
            "additionalProperties": True,
        }
        self.messages[name] = {
            "name": name,
            "title": "a task's driving command",
            "contentType": "application/json",
            "payload": {"$ref": SCHEMAS + name},
        }
        self.structs.add(DrivingCommand)
        self.channels[DYNAMIC_COMMANDS] = {
            "address": None,
            "title": "driving commands (dynamic routing keys)",
            "description": "\n\n".join(
                filter(
                    None,
                    [
                        inspect.getdoc(DrivingCommand),
                        f"{self.service.name} publishes these to exchange `ferry`; the routing "
                        "key is the submitted `command.routing_key`, so it is not known "
                        "here: it is whatever the submitter asked for. Published mandatory: "
                        "while no queue takes the key, the task stays QUEUED and the "
                        "command is tried again on each sweep.",
                    ],
                )
            ),
            "servers": [{"$ref": f"#/servers/{SERVER}"}],
            "messages": {name: {"$ref": MESSAGES + name}},
            "bindings": {"amqp": self._routing_key_binding(self.topology.exchange)},
        }
        self._send(DYNAMIC_COMMANDS, name, f"{self.service.name} drives tasks", mandatory=True)

    def _item_failures(self) -> None:
        key = TaskUpdate.ROUTING_KEY
        name = self._message(TaskUpdate)
        self.channels[key] = {
            "address": key,
            "title": f"{key} (failed items)",
            "description": "When a command naming a task item (`task_id`, `item_key`) fails "
            "for good, the runtime records that item as ERRORED on its task before "
            "dead-lettering the command.",
            "servers": [{"$ref": f"#/servers/{SERVER}"}],
            "messages": {name: {"$ref": MESSAGES + name}},
            "bindings": {"amqp": self._routing_key_binding(self.topology.exchange)},
        }
        self._send(key, name, f"{self.service.name} reports failed items", mandatory=True)

    def _dead_letter_queue(self, consumed: Sequence[Consumed]) -> None:
        queue = self.topology.dead_letter_queue(self.service.name)
        sources = [
            self.names.queue(c.spec.service, c.spec.purpose)
            for c in consumed
            if c.kind == "command"
        ]
        headers = {
            name: meaning
            for name, meaning in runtime_headers().items()
            if name not in NOT_ON_DEAD_LETTERS
        }
        headers[X_DEATH[0]] = X_DEATH[1]
        name = self._held_message(
            "DeadLetter",
            "a dead letter",
            "The original message, body and properties unchanged, with the failure "
            "described in its headers.",
            headers,
        )
        self.channels[queue.name] = {
            "address": queue.name,
            "title": f"dead letters of {self.service.name}",
            "description": f"What {self.service.name} could not process, kept until an "
            "operator acts: `ferry dlq list|replay|drop|purge "
            f"{self.service.name}`. A message lands here when it is malformed, fails "
            "permanently, or keeps failing after every retry and parking (the runtime "
            "publishes it to `ferry.dlx` with routing key = the full name of its work "
            "queue), or when the broker dead-letters it past the work queue's "
            "`x-delivery-limit` (then only RabbitMQ's `x-death` header says why). On "
            "RabbitMQ 4 the queue gets `x-delivery-limit: -1` (looking at dead letters "
            "must not drop them); RabbitMQ 3.x needs no such argument.",
            "servers": [{"$ref": f"#/servers/{SERVER}"}],
            "messages": {name: {"$ref": MESSAGES + name}},
            "bindings": {"amqp": _queue_binding(queue)},
            "x-ferry-queue": {
                **_queue_facts(queue),
                "boundTo": {
                    "exchange": self.names.dead_letter_exchange,
                    "routingKeys": sources,
                },
            },
        }
        self._send(
            queue.name, name, f"{self.service.name} dead-letters", mandatory=True, via="ferry.dlx"
        )

    def _parking_queue(self, seconds: float) -> None:
        queue = self.topology.parking_queue(seconds)
        headers = {name: runtime_headers()[name] for name in PARKED_HEADERS}
        name = self._held_message(
            "ParkedMessage",
            "a parked message",
            "A message whose handler spent its retry budget on transient failures; the "
            "body is unchanged and the routing key is the full name of the queue it "
            "returns to.",
            headers,
        )
        self.channels[queue.name] = {
            "address": queue.name,
            "title": f"parking, {shared.topology.delay_label(seconds)}",
            "description": "Shared by every service. A parked message waits here for the "
            "queue's TTL (`x-message-ttl`), then is dead-lettered through the default "
            'exchange (`x-dead-letter-exchange: ""`) with its routing key, the name of '
            "its work queue: it returns to that queue alone and is tried again.",
            "servers": [{"$ref": f"#/servers/{SERVER}"}],
            "messages": {name: {"$ref": MESSAGES + name}},
            "bindings": {"amqp": _queue_binding(queue)},
            "x-ferry-queue": {
                **_queue_facts(queue),
                "boundTo": {
                    "exchange": self.names.retry_exchange,
                    "arguments": queue.bind_arguments,
                },
            },
        }
        self._send(queue.name, name, "parking", mandatory=True, via="ferry.retry")

    def _delay_queue(self, seconds: float) -> None:
        queue = self.topology.delay_queue(seconds)
        headers = {name: runtime_headers()[name] for name in SCHEDULED_HEADERS}
        name = self._held_message(
            "ScheduledMessage",
            "a scheduled message",
            "A message published for later: to exchange `ferry.later` with the routing key "
            "it should finally have and the `ferry-later` header naming a delay class.",
            headers,
        )
        self.channels[queue.name] = {
            "address": queue.name,
            "title": f"scheduled, {shared.topology.delay_label(seconds)}",
            "description": "Shared by every service. A scheduled message waits here for "
            "the queue's TTL, then is dead-lettered into the `ferry` exchange with its own "
            "routing key, as if it had just been published. Longer delays hop through "
            "several classes.",
            "servers": [{"$ref": f"#/servers/{SERVER}"}],
            "messages": {name: {"$ref": MESSAGES + name}},
            "bindings": {"amqp": _queue_binding(queue)},
            "x-ferry-queue": {
                **_queue_facts(queue),
                "boundTo": {
                    "exchange": self.names.later_exchange,
                    "arguments": queue.bind_arguments,
                },
            },
        }

    # -- helpers --------------------------------------------------------------------------

    def _send(
        self, channel_id: str, message: str, title: str, *, mandatory: bool, via: str = "ferry"
    ) -> None:
        self.operations[f"{channel_id}.send"] = {
            "action": "send",
            "title": title,
            "channel": {"$ref": f"#/channels/{_escape(channel_id)}"},
            "messages": [{"$ref": f"#/channels/{_escape(channel_id)}/messages/{message}"}],
            "bindings": {
                "amqp": {
                    "deliveryMode": 2,
                    "mandatory": mandatory,
                    "bindingVersion": AMQP_BINDING,
                }
            },
            "description": f"Published to exchange `{via}`.",
        }

    def _message(self, contract: type[Contract]) -> str:
        name = contract.__name__
        doc = inspect.getdoc(contract)
        message: dict[str, Any] = {
            "name": name,
            "title": name,
            "contentType": "application/json",
            "payload": {"$ref": SCHEMAS + name},
        }
        if contract.ROUTING_KEY:
            message["bindings"] = {
                "amqp": {"messageType": contract.ROUTING_KEY, "bindingVersion": AMQP_BINDING}
            }
        if doc and contract.__doc__ is not None and "__doc__" in vars(contract):
            message["description"] = doc
        self.messages[name] = message
        self.structs.add(contract)
        return name

    def _held_message(
        self,
        name: str,
        title: str,
        description: str,
        headers: dict[str, tuple[str, dict[str, Any]]],
    ) -> str:
        self.messages[name] = {
            "name": name,
            "title": title,
            "description": description,
            "headers": {
                "type": "object",
                "properties": {
                    header: {**schema, "description": meaning}
                    for header, (meaning, schema) in headers.items()
                },
                "additionalProperties": True,
            },
            "payload": {"description": "The original body, byte for byte."},
        }
        return name

    def _routing_key_binding(self, exchange: RabbitExchange) -> dict[str, Any]:
        return {
            "is": "routingKey",
            "exchange": {**_exchange_binding(exchange), "vhost": "/"},
            "bindingVersion": AMQP_BINDING,
        }

    def _schemas(self) -> dict[str, Any]:
        _, schemas = msgspec.json.schema_components(
            sorted(self.structs, key=lambda s: s.__name__), ref_template=SCHEMAS + "{name}"
        )
        return {**schemas, **self.extra_schemas}


def _exchange_binding(exchange: RabbitExchange) -> dict[str, Any]:
    return {
        "name": exchange.name,
        "type": str(exchange.type.value),
        "durable": exchange.durable,
        "autoDelete": exchange.auto_delete,
    }


def _queue_binding(queue: RabbitQueue) -> dict[str, Any]:
    return {
        "is": "queue",
        "queue": {
            "name": queue.name,
            "durable": queue.durable,
            "exclusive": queue.exclusive,
            "autoDelete": queue.auto_delete,
            "vhost": "/",
        },
        "bindingVersion": AMQP_BINDING,
    }


def _queue_facts(queue: RabbitQueue) -> dict[str, Any]:
    arguments = dict(queue.arguments or {})
    return {
        "name": queue.name,
        "type": arguments.pop("x-queue-type", "classic"),
        "durable": queue.durable,
        "exclusive": queue.exclusive,
        "autoDelete": queue.auto_delete,
        "routingKey": queue.routing_key or None,
        "arguments": arguments,
    }


def _escape(channel_id: str) -> str:
    """A JSON pointer segment (RFC 6901)."""
    return channel_id.replace("~", "~0").replace("/", "~1")


def document(service: Service, description: str, all_consumed: Iterable[str]) -> dict[str, Any]:
    return DocumentBuilder(service, description, all_consumed).build()
