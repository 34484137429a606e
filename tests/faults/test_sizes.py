"""Sizes at each broker's limit: limit - 1, limit and limit + 1 bytes, in multi-byte UTF-8.

The limit is ``capabilities.max_message_bytes`` (memory 1 MiB, Kafka 1,000,000 - 8 KiB,
RabbitMQ 16 MiB, JetStream the server's ``max_payload``, SQS 256 KiB). What counts is what
mqkit documents for each: ``Message.size`` (body plus header names and values) in the client
for every broker, and, stricter, the bytes as sent where the adapter says so: NATS counts
the body plus its header block (``mqkit_nats.publisher``), SQS the body plus its message
attributes (``mqkit_sqs.headers.wire_size``). Each body is text of 2-, 3- and 4-byte
characters padded to the exact byte count, and a header holds multi-byte text too, so the
oversize one has far fewer characters than the limit: refused by bytes, not characters.

"Before any network call": the oversize message never reaches ``Transport.publish`` where
the client refuses it (memory, Kafka, RabbitMQ); where the adapter refuses it (JetStream,
SQS) no byte left the NATS connection (``nc.stats``) and botocore sent no request. And the
broker saw nothing: only the two others are delivered.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from mqkit import headers as h
from mqkit.client import Client
from mqkit.errors import MessageTooLarge
from mqkit.message import Delivery, Message, new_id
from mqkit.testing.waiting import wait_until
from tests.brokers import broker_url
from tests.faults.ledger import DeliveryLog, Ledger, report

TEXT = "text/plain; charset=utf-8"
UNIT = "é東🚀"  # 2 + 3 + 4 bytes
NOTE = {"x-note": "naïve 東京 🚀"}  # a header counts in bytes too: 18 of them, 11 characters
BROKERS = ["memory", "kafka", "rabbitmq", "jetstream", "sqs"]
TIMEOUT = 60.0


def url_for(name: str) -> str:
    return f"memory://sizes-{new_id()[:8]}" if name == "memory" else broker_url(name)


def text_of(size: int) -> str:
    """Text whose UTF-8 encoding is exactly ``size`` bytes, mostly multi-byte."""
    unit_bytes = len(UNIT.encode())
    text = UNIT * (size // unit_bytes)
    return text + "a" * (size - len(text.encode()))


def counted_size(client: Client, message: Message) -> int:
    """The size mqkit holds against the limit for this broker (see the module docstring)."""
    transport: Any = client.transport
    # Message.size's rule (body plus header names and values), in bytes
    size = len(message.body) + sum(len(k.encode()) + len(v.encode())
                                   for k, v in message.headers.items())
    if client.url.scheme == "jetstream":
        from mqkit_nats.headers import header_block, msg_id_for

        block = header_block(message, msg_id_for(message, transport.config.msg_id))
        size = max(size, len(message.body) + len(block.encode()))
    elif client.url.scheme == "sqs":
        from mqkit_sqs.headers import encode, wire_size

        size = max(size, wire_size(*encode(message)))
    return size


def sized(client: Client, topic: str, target: int, message_id: str) -> Message:
    """A text message whose counted size is exactly ``target`` bytes."""
    def build(body: bytes) -> Message:
        return Message(topic=topic, body=body, headers={h.CONTENT_TYPE: TEXT, **NOTE},
                       id=message_id, timestamp=1_700_000_000.25)

    probe = build(b"a")  # not empty: SQS sends an empty body differently
    message = build(text_of(target - counted_size(client, probe) + 1).encode())
    assert counted_size(client, message) == target
    return message


class WireSpy:
    """Counts what went towards the broker: transport calls, NATS bytes, AWS requests."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport_calls = 0
        self.aws_requests = 0
        transport: Any = client.transport
        real = transport.publish

        async def publish(messages: Any) -> None:
            self.transport_calls += 1
            await real(messages)

        transport.publish = publish
        if client.url.scheme == "sqs":
            for aws in (transport._conn.sns, transport._conn.sqs):
                aws.meta.events.register("before-send", self._count_request)

    def _count_request(self, **_: Any) -> None:
        self.aws_requests += 1

    def nats_out(self) -> int:
        if self.client.url.scheme != "jetstream":
            return 0
        stats = self.client.transport.nc.stats  # type: ignore[attr-defined]
        return int(stats["out_msgs"]) + int(stats["out_bytes"])


@pytest.mark.parametrize("broker", BROKERS)
async def test_limit_minus_one_and_limit_pass_limit_plus_one_is_refused_unsent(
    broker: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    client = Client(url_for(broker))
    await client.connect()
    log = DeliveryLog(tmp_path / "deliveries.log")
    ledger = Ledger()
    got: dict[str, bytes] = {}
    try:
        limit = client.capabilities.max_message_bytes
        topic = f"faults.sizes.{new_id()[:12]}"

        @client.subscribe(topic, group=f"sizes-{topic.rsplit('.', 1)[-1]}", concurrency=2)
        async def handle(text: str, delivery: Delivery) -> None:
            log.record(delivery.message.id)
            got[delivery.message.id] = text.encode()

        await client.start()
        fits = [sized(client, topic, limit - 1, "below"), sized(client, topic, limit, "at")]
        over = sized(client, topic, limit + 1, "over")
        assert len(over.body.decode()) < limit  # fewer characters than the limit: bytes count
        spy = WireSpy(client)
        # When the messages at limit - 1 and at the limit are published
        for message in fits:
            ledger.attempt(message.id)
            await client.publish_messages([message])
            ledger.ack(message.id)
        await wait_until(lambda: len(got) == 2, TIMEOUT, what="the two messages that fit")
        # And the one byte over is published
        calls, aws, nats = spy.transport_calls, spy.aws_requests, spy.nats_out()
        ledger.attempt(over.id)
        with pytest.raises(MessageTooLarge) as refused:
            await client.publish_messages([over])
        # Then it is refused with a clear error, before anything was sent
        sent = (spy.transport_calls - calls, spy.aws_requests - aws, spy.nats_out() - nats)
        await asyncio.sleep(1.0)  # the broker had time to deliver it, were it there
    finally:
        await client.close()
    verdict = ledger.verdict(log.counts())
    error = str(refused.value)
    report(
        "sizes", broker, **verdict.row(), limit=limit, below=limit - 1, at_limit=limit,
        over=limit + 1, over_chars=len(over.body.decode()), refused=True,
        transport_calls=sent[0], aws_requests=sent[1], nats_bytes=sent[2],
        seconds=round(time.monotonic() - started, 2),
    )
    log.close()
    assert verdict.ok, verdict
    assert got == {m.id: m.body for m in fits}  # delivered intact, byte for byte
    assert "over" not in got
    assert f"{limit + 1} bytes" in error and f"at most {limit}" in error, error
    if broker in ("jetstream", "sqs"):
        assert sent[1:] == (0, 0)  # the adapter refused it: no request, no byte out
    else:
        assert sent == (0, 0, 0)  # the client refused it: the transport never saw it
