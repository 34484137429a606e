"""How mqkit's topics and groups map onto exchanges, queues and bindings.

- ``exchange_type=topic`` (default) and ``direct``: one shared exchange (option ``exchange``,
  default ``mqkit``); a topic is a routing key; a group is the durable queue
  ``<topic>:<group>`` bound with the topic (a wildcard pattern with ``topic``).
- ``fanout`` and ``headers``: each topic is its own exchange ``<exchange>.<topic>``; a
  group's queue is bound to it without a key. On a headers exchange the binding takes the
  ``match.<header>=<value>`` (and ``x-match=all|any``) options of ``ensure_topic``; without
  them it matches every message. Declare with the same options in every process.
- Dead letters (``<topic>.dlq``) live on the topic exchange ``<exchange>.dlx``, apart from the
  topics so ``#`` subscriptions never receive them; every group queue of a concrete topic
  dead-letters natively there (expired TTL, ``max_length`` overflow).
- Delayed nacks go through the headers exchange ``<exchange>.retry`` to a TTL queue per delay
  (``<exchange>.retry.<ms>ms``) whose expired messages dead-letter back, through the default
  exchange, to the queue they came from. No plugin needed.

Declarations are remembered and replayed after a reconnect, in their order.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from mqkit.errors import ConfigurationError
from mqkit.message import DLQ_SUFFIX
from mqkit_rabbitmq import wire
from mqkit_rabbitmq.config import QueueOptions, RabbitConfig
from mqkit_rabbitmq.connection import Chan
from mqkit_rabbitmq.errors import channel_error
from mqkit_rabbitmq.headers import DELAY

REPLY_TO = "amq.rabbitmq.reply-to"
"""RabbitMQ's direct reply-to pseudo-queue; replies are published to its per-channel names."""
PER_TOPIC_EXCHANGES = ("fanout", "headers")
ROUTES_REMEMBERED = 10_000
"""Routes kept per topic (each holds its encoded ``Basic.Publish``); past that, forgotten."""
RETRY_LEASE = 3_600.0
"""Seconds an unused retry queue lives (``x-expires`` past its delay); it is redeclared,
which renews the lease, whenever it is used after half of it."""


def is_pattern(topic: str) -> bool:
    return any(word in ("*", "#") for word in topic.split("."))


@dataclass(frozen=True, slots=True)
class Route:
    """Where a publish goes, and its ``Basic.Publish`` method encoded once."""

    exchange: str
    routing_key: str
    mandatory: bool
    method: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", wire.publish_method(
            self.exchange, self.routing_key, self.mandatory))


class Topology:
    """Names, routes and declarations for one transport. Loop thread only."""

    def __init__(self, config: RabbitConfig) -> None:
        self.config = config
        self._replay: dict[tuple[Any, ...], tuple[str, dict[str, Any]]] = {}
        self._retry_declared: dict[int, float] = {}
        self._exchanges_seen: set[str] = set()
        self.queue_options: dict[str, QueueOptions] = {}
        self.header_matches: dict[str, dict[str, str]] = {}
        """queue -> binding arguments on a headers exchange (from ``match.*`` options)."""
        self._retry_lock = asyncio.Lock()
        self._routes: dict[str, Route] = {}

    # --- names ------------------------------------------------------------------------
    def exchange_for(self, topic: str) -> str:
        if topic.endswith(DLQ_SUFFIX):
            return self.config.dead_letter_exchange
        if self.config.exchange_type in PER_TOPIC_EXCHANGES:
            return f"{self.config.exchange}.{topic}"
        return self.config.exchange

    def exchange_type_for(self, topic: str) -> str:
        return "topic" if topic.endswith(DLQ_SUFFIX) else self.config.exchange_type

    @staticmethod
    def queue_name(topic: str, group: str) -> str:
        name = f"{topic}:{group}"
        if len(name.encode()) > 255:
            raise ConfigurationError(f"queue name {name[:40]}... is longer than 255 bytes")
        return name

    def route(self, topic: str) -> Route:
        route = self._routes.get(topic)
        if route is not None:
            return route
        if topic.startswith(REPLY_TO):
            # Nobody may wait for a reply any more: that is not an error for the responder.
            # Reply addresses are one-off: not remembered.
            return Route("", topic, False)
        if len(self._routes) >= ROUTES_REMEMBERED:
            self._routes.clear()
        route = self._routes[topic] = Route(self.exchange_for(topic), topic,
                                            self.config.mandatory)
        return route

    def retry_route(self, queue: str) -> Route:
        return Route(self.config.retry_exchange, queue, True)

    @staticmethod
    def requeue_route(queue: str) -> Route:
        return Route("", queue, True)

    def needs_exchange_check(self, exchange: str) -> bool:
        """True for a per-topic exchange not yet known to exist (publishing to a missing
        exchange would close the channel, failing every publish in flight on it)."""
        return exchange not in self._exchanges_seen and exchange != ""

    # --- declarations -----------------------------------------------------------------
    async def _do(self, chan: Chan, what: str, method: str, key: tuple[Any, ...],
                  kwargs: dict[str, Any], remember: bool = True) -> None:
        try:
            await chan.rpc(getattr(chan.raw, method), **kwargs)
        except Exception as exc:
            raise channel_error(exc, what) from exc
        if remember:
            self._replay[key] = (method, kwargs)

    async def declare_base(self, chan: Chan) -> None:
        """The shared, dead-letter and retry exchanges."""
        config = self.config
        if config.exchange_type not in PER_TOPIC_EXCHANGES:
            await self.declare_exchange(chan, config.exchange, config.exchange_type)
        await self.declare_exchange(chan, config.dead_letter_exchange, "topic")
        await self.declare_exchange(chan, config.retry_exchange, "headers")

    async def declare_exchange(self, chan: Chan, name: str, kind: str) -> None:
        await self._do(
            chan, f"declare exchange {name!r}", "exchange_declare", ("exchange", name),
            {"exchange": name, "exchange_type": kind, "durable": True},
        )
        self._exchanges_seen.add(name)

    async def check_exchange(self, chan: Chan, name: str) -> None:
        """Raise ``PublishError`` unless exchange ``name`` exists (passive declare)."""
        await self._do(
            chan, f"publish to exchange {name!r} (declare the topic with a group first)",
            "exchange_declare", ("check", name), {"exchange": name, "passive": True},
            remember=False,
        )
        self._exchanges_seen.add(name)

    def group_arguments(self, topic: str, options: QueueOptions) -> dict[str, Any]:
        args = options.arguments()
        if not topic.endswith(DLQ_SUFFIX) and not is_pattern(topic):
            args["x-dead-letter-exchange"] = self.config.dead_letter_exchange
            args["x-dead-letter-routing-key"] = topic + DLQ_SUFFIX
        return args

    async def declare_group(
        self, chan: Chan, topic: str, group: str, options: QueueOptions | None = None,
        *, passive: bool = False,
    ) -> str:
        """Declare the topic's exchange and the group's queue bound to it; the queue name.

        ``passive`` only checks that the queue exists (it may have other arguments) and
        binds it.
        """
        if is_pattern(topic) and self.exchange_type_for(topic) != "topic":
            raise ConfigurationError(
                f"wildcard subscription {topic!r} needs exchange_type=topic "
                f"(this transport uses {self.config.exchange_type})"
            )
        queue = self.queue_name(topic, group)
        exchange = self.exchange_for(topic)
        kind = self.exchange_type_for(topic)
        if exchange not in self._exchanges_seen or kind in PER_TOPIC_EXCHANGES:
            await self.declare_exchange(chan, exchange, kind)
        if options is None:
            options = self.queue_options.get(queue, self.config.queue)
        if passive:
            await self._do(chan, f"find queue {queue!r}", "queue_declare", ("queue", queue),
                           {"queue": queue, "passive": True}, remember=False)
        else:
            await self._do(
                chan, f"declare queue {queue!r}", "queue_declare", ("queue", queue),
                {"queue": queue, "durable": True,
                 "arguments": self.group_arguments(topic, options)},
            )
            self.queue_options[queue] = options
        routing_key = "" if kind in PER_TOPIC_EXCHANGES else topic
        matches = self.header_matches.get(queue) if kind == "headers" else None
        await self.bind(chan, queue, exchange, routing_key, dict(matches) if matches else None)
        return queue

    async def bind(self, chan: Chan, queue: str, exchange: str, routing_key: str,
                   arguments: dict[str, Any] | None) -> None:
        key = ("bind", queue, exchange, routing_key, repr(sorted((arguments or {}).items())))
        await self._do(
            chan, f"bind queue {queue!r} to {exchange!r}", "queue_bind", key,
            {"queue": queue, "exchange": exchange, "routing_key": routing_key,
             "arguments": arguments},
        )

    async def ensure_retry_queue(self, chan: Chan, delay_ms: int) -> None:
        """Declare (or renew) the TTL queue for ``delay_ms`` and its binding."""
        now = time.monotonic()
        if now - self._retry_declared.get(delay_ms, -RETRY_LEASE) < RETRY_LEASE / 2:
            return
        async with self._retry_lock:
            if now - self._retry_declared.get(delay_ms, -RETRY_LEASE) < RETRY_LEASE / 2:
                return
            queue = f"{self.config.retry_exchange}.{delay_ms}ms"
            await self._do(
                chan, f"declare retry queue {queue!r}", "queue_declare", ("queue", queue),
                {"queue": queue, "durable": True, "arguments": {
                    "x-queue-type": "classic",
                    "x-message-ttl": delay_ms,
                    "x-dead-letter-exchange": "",  # back to the queue named by the routing key
                    "x-expires": delay_ms + int(RETRY_LEASE * 1000),
                }},
                remember=False,
            )
            await self._do(
                chan, f"bind retry queue {queue!r}", "queue_bind", ("retry", queue),
                {"queue": queue, "exchange": self.config.retry_exchange, "routing_key": "",
                 "arguments": {"x-match": "all", DELAY: str(delay_ms)}},
                remember=False,
            )
            self._retry_declared[delay_ms] = now

    def declared(self) -> tuple[list[str], list[str]]:
        """Queues and exchanges this topology declared (retry queues included), for cleanup."""
        queues = [key[1] for key in self._replay if key[0] == "queue"]
        queues += [f"{self.config.retry_exchange}.{ms}ms" for ms in self._retry_declared]
        exchanges = [key[1] for key in self._replay if key[0] == "exchange"]
        return queues, exchanges

    async def replay(self, chan: Chan) -> None:
        """Declare again everything declared so far (after a reconnect)."""
        self._retry_declared.clear()
        for method, kwargs in list(self._replay.values()):
            await chan.rpc(getattr(chan.raw, method), **kwargs)
