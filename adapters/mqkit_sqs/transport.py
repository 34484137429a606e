"""``SqsTransport``: the mqkit ``Transport`` on SNS and SQS (see the package docstring)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from mqkit.errors import ConfigurationError, ConnectionFailed, PublishError
from mqkit.message import Delivery, Message
from mqkit.transport import Capabilities, TopicSpec
from mqkit.url import BrokerURL
from mqkit_sqs.config import MAX_MESSAGE_BYTES, MAX_VISIBILITY_TIMEOUT, SqsConfig
from mqkit_sqs.connection import Connection
from mqkit_sqs.errors import convert
from mqkit_sqs.publisher import Publisher
from mqkit_sqs.subscriber import Subscription
from mqkit_sqs.topology import Topology

BULK_TEST_SIZE = 500
"""moto's server costs O(queue depth) per message (see the package docstring)."""


class SqsTransport:
    """SNS topics fanned out to one SQS queue per group (or plain queues). Thread-safe? No:
    use one transport from one event loop; ``publish`` and ``subscribe`` from many tasks."""

    def __init__(self, url: BrokerURL | str = "sqs://", **options: Any) -> None:
        parsed = url if isinstance(url, BrokerURL) else BrokerURL.parse(url)
        self.url = parsed
        self.config = SqsConfig.from_url(parsed, **options)
        fifo = self.config.fifo
        self.capabilities = Capabilities(
            at_least_once=True,
            persistent=True,
            retains_unconsumed=True,
            ordered_by_key=fifo,
            consumer_groups=True,
            native_delay=True,
            max_delay=float(MAX_VISIBILITY_TIMEOUT),
            native_dead_letter=self.config.max_receive_count > 0,
            replay=False,
            transactions=False,
            request_reply=False,
            wildcards=False,
            max_message_bytes=MAX_MESSAGE_BYTES,
            bulk_test_size=BULK_TEST_SIZE if self.config.endpoint_url else 10_000,
        )
        self._conn = Connection(self.config)
        self.topology = Topology(self._conn, self.config)
        self._publisher = Publisher(self._conn, self.topology, self.config)
        self._subscriptions: list[Subscription] = []
        self._connected = False

    def __repr__(self) -> str:
        return f"<SqsTransport {self.url.safe()} mode={self.config.mode}>"

    async def connect(self) -> None:
        """Create the clients and check the endpoint and credentials (STS GetCallerIdentity).

        Raises ``ConnectionFailed`` (unreachable, no credentials) or ``AuthorizationError``
        within a few seconds. Safe to call twice.
        """
        if self._connected:
            return
        try:
            await asyncio.to_thread(self._conn.open)
            identity = await self._conn.call(self._conn.sts.get_caller_identity)
        except Exception as exc:
            self._conn.close()
            error = convert(exc, f"connecting to {self.url.safe()}")
            if not isinstance(error, ConnectionFailed | ConfigurationError):
                error = ConnectionFailed(str(error))
            raise error from exc
        partition = str(identity.get("Arn", "arn:aws:")).split(":")[1] or "aws"
        self.topology.set_identity(partition, str(identity["Account"]))
        self._connected = True

    async def close(self) -> None:
        """Stop every subscription (handing back what it had not handed out). Safe twice."""
        if not self._connected:
            return
        self._connected = False
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            await subscription.aclose()
        self._conn.close()

    async def publish(self, messages: Sequence[Message]) -> None:
        """Return once SNS (or SQS) accepted every message; see ``publisher``."""
        if not self._connected:
            raise PublishError("the sqs:// transport is not connected")
        await self._publisher.publish(messages)

    async def _publish_one(self, message: Message) -> None:
        await self.publish((message,))

    def subscribe(self, topic: str, group: str, *, prefetch: int = 10) -> AsyncIterator[Delivery]:
        """Deliveries of ``group``'s queue on ``topic`` (``ensure_topic`` must have made it)."""
        if prefetch < 1:
            raise ConfigurationError("prefetch must be >= 1")
        if "*" in topic.split(".") or "#" in topic.split("."):
            raise ConfigurationError("sqs:// has no wildcard subscriptions")
        subscription = Subscription(
            self._conn, self.topology, self.config, topic, group, prefetch, self._publish_one
        )
        self._subscriptions.append(subscription)
        return subscription

    async def ensure_topic(self, spec: TopicSpec) -> None:
        """Create the topic, its groups' queues, subscriptions, policies and redrive."""
        if not self._connected:
            raise PublishError("the sqs:// transport is not connected")
        await self.topology.ensure(spec)
