"""mqkit's own AMQP encoding of a publish is byte for byte what pika would send."""

from __future__ import annotations

import asyncio
from typing import Any

import pika
import pytest
from pika import frame, spec

from mqkit.errors import PublishError
from mqkit.message import Delivery, Message
from mqkit.testing import wait_until
from mqkit.transport import TopicSpec
from mqkit.url import BrokerURL
from mqkit_rabbitmq import wire
from mqkit_rabbitmq.config import RabbitConfig
from mqkit_rabbitmq.headers import encode_pika_properties, encode_properties, from_delivery
from mqkit_rabbitmq.publisher import WRITE_RUN, Publisher, _Batch
from tests.rabbitmq.conftest import TransportFactory, queue_depth

CHANNEL = 7
DELIVER = spec.Basic.Deliver(delivery_tag=1, exchange="mqkit", routing_key="t")


def pika_properties(message: Message) -> pika.BasicProperties:
    """What mqkit documents for a message's properties, built with pika's own class."""
    src = message.headers
    table: dict[str, Any] = {
        k: v for k, v in src.items()
        if k not in ("content-type", "correlation-id", "reply-to", "priority", "expiration")
    }
    if message.key is not None:
        table["x-mqkit-key"] = message.key
    seconds = int(message.timestamp)
    nanos = round((message.timestamp - seconds) * 1e9)
    if seconds + nanos / 1e9 == message.timestamp:
        table["x-mqkit-ns"] = nanos
    else:
        table["x-mqkit-timestamp"] = repr(message.timestamp)
    priority = src.get("priority")
    return pika.BasicProperties(
        message_id=message.id, timestamp=int(message.timestamp),
        content_type=src.get("content-type"), correlation_id=src.get("correlation-id"),
        reply_to=src.get("reply-to"), priority=int(priority) if priority else None,
        expiration=src.get("expiration"), delivery_mode=2, headers=table,
    )


MESSAGES = [
    Message(topic="t", body=b"x"),
    Message(topic="t", body=b"x", key="k-1"),
    Message(topic="t", body=b"", id="given-id", timestamp=12.5),
    Message(topic="t", body=b"x", key="ключ", headers={
        "content-type": "application/json", "correlation-id": "c-1", "reply-to": "r",
        "priority": "9", "expiration": "60000", "x-note": "naïve 東京 🚀", "tenant": "",
    }),
]


@pytest.mark.parametrize("message", MESSAGES)
def test_properties_are_pikas_encoding(message: Message) -> None:
    expected = b"".join(pika_properties(message).encode())
    assert encode_properties(message) == expected
    back = spec.BasicProperties()
    back.decode(encode_properties(message))
    assert back.message_id == message.id and back.delivery_mode == 2
    assert back.timestamp == int(message.timestamp)
    received, _attempt = from_delivery(DELIVER, back, message.body)
    assert (received.id, received.key, received.timestamp) == (
        message.id, message.key, message.timestamp
    )
    assert {k: v for k, v in received.headers.items()} == dict(message.headers)


def test_the_usual_message_has_64_bytes_of_properties() -> None:
    # RabbitMQ spends markedly less CPU on a message whose properties fit in 64 bytes.
    assert len(encode_properties(Message(topic="t", body=b"x"))) == 64


@pytest.mark.parametrize("stamp", [
    0.0, 0.1, 12.5, 1.0e9 + 0.999999999, 1_795_951_213.4057968, 0.12345678912345,
    1_795_951_213.0, 4.0e12 + 0.5,
])
def test_timestamps_come_back_exactly(stamp: float) -> None:
    for message in (Message(topic="t", body=b"", timestamp=stamp),
                    Message(topic="t", body=b"", timestamp=stamp, key="k")):
        back = spec.BasicProperties()
        back.decode(encode_properties(message))
        assert from_delivery(DELIVER, back, b"")[0].timestamp == stamp


def test_a_timestamp_amqp_cannot_carry_is_a_publish_error() -> None:
    with pytest.raises(PublishError, match="timestamp"):
        encode_properties(Message(topic="t", body=b"", timestamp=-1.5))


def test_properties_that_amqp_cannot_carry_are_publish_errors() -> None:
    with pytest.raises(PublishError, match="message id"):
        encode_properties(Message(topic="t", body=b"", id="i" * 256))
    with pytest.raises(PublishError, match="0-255"):
        encode_properties(Message(topic="t", body=b"", headers={"priority": "300"}))
    with pytest.raises(PublishError, match="ShortStringTooLong"):
        encode_pika_properties(pika.BasicProperties(message_id="i" * 256))


@pytest.mark.parametrize("mandatory", [True, False])
def test_publish_method_frame_is_pikas(mandatory: bool) -> None:
    ours = wire.method_frame(CHANNEL, wire.publish_method("ex", "order.créé", mandatory))
    method = spec.Basic.Publish(exchange="ex", routing_key="order.créé", mandatory=mandatory)
    assert ours == frame.Method(CHANNEL, method).marshal()


def decode_all(data: bytes) -> list[Any]:
    frames = []
    while data:
        used, decoded = frame.decode_frame(data)
        assert used > 0, "an incomplete frame"
        frames.append(decoded)
        data = data[used:]
    return frames


@pytest.mark.parametrize("size", [0, 1, 100, 101, 250, 301])
def test_content_frames_split_the_body_at_the_frame_limit(size: int) -> None:
    body = bytes(range(256)) * 2
    body = body[:size]
    props = encode_properties(MESSAGES[1])
    out: list[bytes] = []
    wire.add_content(out, CHANNEL, props, body, body_max=100)
    header, *chunks = decode_all(b"".join(out))
    assert isinstance(header, frame.Header) and header.channel_number == CHANNEL
    assert header.body_size == size and header.properties.message_id == MESSAGES[1].id
    assert all(isinstance(c, frame.Body) and c.channel_number == CHANNEL for c in chunks)
    assert [len(c.fragment) for c in chunks] == [
        min(100, size - start) for start in range(0, size, 100)
    ]
    assert b"".join(c.fragment for c in chunks) == body


async def test_confirms_settle_each_message_once_in_any_order() -> None:
    """Single acks, nacks and multiple acks mixed: every message settles exactly once."""
    config = RabbitConfig.from_url(BrokerURL.parse("amqp://g:g@127.0.0.1/"))
    pub = Publisher(None, config)  # type: ignore[arg-type]  # no link: nothing is sent
    batch = _Batch(6)
    pub._pending = {tag: (batch, tag - 1, f"m{tag}") for tag in range(1, 7)}

    def confirm(method: Any) -> None:
        pub._on_confirm(frame.Method(1, method))

    confirm(spec.Basic.Ack(delivery_tag=3))  # ahead of the multiple ack that covers it
    confirm(spec.Basic.Nack(delivery_tag=2))
    assert batch.remaining == 4 and len(batch.errors) == 1
    confirm(spec.Basic.Ack(delivery_tag=4, multiple=True))  # settles 1 and 4, not 2, 3 again
    assert batch.remaining == 2 and not batch.fut.done()
    confirm(spec.Basic.Ack(delivery_tag=4, multiple=True))  # a repeat changes nothing
    assert batch.remaining == 2
    confirm(spec.Basic.Ack(delivery_tag=6, multiple=True))
    assert batch.remaining == 0 and batch.fut.done() and not pub._pending
    assert [str(e) for e in batch.errors] == ["the broker refused (nacked) a message"]


def test_header_values_amqp_cannot_carry_are_publish_errors() -> None:
    message = Message(topic="t", body=b"", headers={"ratio": 0.5})  # type: ignore[dict-item]
    with pytest.raises(PublishError, match="'ratio'"):
        encode_properties(message)
    with pytest.raises(PublishError, match="header name"):
        encode_properties(Message(topic="t", body=b"", headers={"n" * 256: "v"}))


async def test_a_batch_with_a_message_amqp_cannot_carry_sends_nothing(
    make_transport: TransportFactory, raw_channel: Any
) -> None:
    transport = await make_transport()
    await transport.ensure_topic(TopicSpec("wire.check", groups=("g",)))
    batch = [Message(topic="wire.check", body=b"ok") for _ in range(WRITE_RUN + 6)]
    with pytest.raises(PublishError, match="message id"):
        await transport.publish([*batch, Message(topic="wire.check", body=b"x", id="é" * 128)])
    await transport.publish([Message(topic="wire.check", body=b"after")])
    await wait_until(lambda: queue_depth(raw_channel, "wire.check:g") >= 1, 10)
    assert queue_depth(raw_channel, "wire.check:g") == 1


async def test_bodies_across_frame_boundaries_arrive_whole(
    make_transport: TransportFactory,
) -> None:
    transport = await make_transport()
    await transport.ensure_topic(TopicSpec("wire.sizes", groups=("g",)))
    bodies = [b"", b"a", bytes(range(256)) * 1100, b"z" * 131_064, b"z" * 131_065]
    sent = [Message(topic="wire.sizes", body=body, key=f"k{i}") for i, body in enumerate(bodies)]
    await transport.publish(sent)
    got: list[Delivery] = []
    async with asyncio.timeout(10):
        async for delivery in transport.subscribe("wire.sizes", "g"):
            got.append(delivery)
            await delivery.ack()
            if len(got) == len(sent):
                break
    by_id = {d.message.id: d.message for d in got}
    for message in sent:
        assert by_id[message.id].body == message.body and by_id[message.id].key == message.key
