"""On the real RabbitMQ: an attempt count is trusted only on mqkit's own requeue and retry
copies, never on a message a publisher sent to a topic's exchange."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pika

from mqkit import Client
from mqkit.message import Delivery, Message
from mqkit.middleware import RetryPolicy
from mqkit.testing import wait_until


async def test_forged_attempt_on_a_topic_exchange_is_ignored(
    url: str, raw_channel: Any, exchange: str
) -> None:
    # Given a handler that fails transiently once, with three attempts allowed
    topic = f"forged.{uuid.uuid4().hex[:8]}"
    seen: list[tuple[int, str | None]] = []
    handled: list[bytes] = []
    async with Client(url) as client:

        @client.subscribe(
            topic, group="g", retry=RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2)
        )
        async def handle(message: Message, delivery: Delivery) -> None:
            seen.append((delivery.attempt, message.headers.get("x-mqkit-attempt")))
            if len(seen) == 1:
                raise ConnectionError("a blip")
            handled.append(message.body)

        await client.start()
        # When a plain pika app publishes a message claiming attempt 99
        raw_channel.confirm_delivery()
        raw_channel.basic_publish(
            exchange, topic, b"forged",
            pika.BasicProperties(message_id="forged-1", headers={"x-mqkit-attempt": "99"},
                                 delivery_mode=2),
            mandatory=True,
        )
        # Then it is retried and handled, not dead-lettered at its first failure
        await wait_until(lambda: bool(handled), 30)
        await asyncio.sleep(0.1)
        assert handled == [b"forged"]
        # And the attempts count from 1, the internal header never reaching the handler
        assert seen == [(1, None), (2, None)]
        assert len(client.failures) == 1
