"""JetStream (jetstream://): streams, de-duplication, AckWait, in-progress, replay, interop."""

from __future__ import annotations

import asyncio
import time

import nats
import pytest
from nats.js import api

from mqkit import headers as h
from mqkit.errors import ConfigurationError, PublishError
from mqkit.message import Message
from mqkit.transport import TopicSpec
from mqkit_nats import JetStreamDelivery
from tests.nats.conftest import Factory


async def test_ensure_topic_creates_the_stream_as_asked(jetstream: Factory, topic: str) -> None:
    transport = await jetstream()
    await transport.ensure_topic(
        TopicSpec(topic, retention_seconds=3600, retention_messages=500, groups=("billing",))
    )
    await transport.ensure_topic(TopicSpec(topic, groups=("billing",)))  # twice is fine
    stream = transport._streams[topic]
    info = await transport.js.stream_info(stream)
    assert info.config.subjects == [topic]
    assert info.config.storage == api.StorageType.FILE
    assert (info.config.max_age, info.config.max_msgs) == (3600, 500)
    assert info.config.duplicate_window == 120
    consumer = await transport.js.consumer_info(stream, "billing")
    assert consumer.config.ack_policy == api.AckPolicy.EXPLICIT
    assert consumer.config.ack_wait == 30


async def test_repeated_idempotency_key_is_stored_once(jetstream: Factory, topic: str) -> None:
    # Given a stream and the default msg_id (the idempotency key becomes Nats-Msg-Id)
    transport = await jetstream()
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    # When the same payment is published three times inside the duplicate window
    for _ in range(3):
        await transport.publish(
            [Message(topic=topic, body=b"charge", headers={h.IDEMPOTENCY_KEY: "pay-1"})]
        )
    await transport.publish([Message(topic=topic, body=b"other")])
    # Then the stream holds it once and the group receives it once
    info = await transport.js.stream_info(transport._streams[topic])
    assert info.state.messages == 2
    sub = transport.subscribe(topic, "g")
    bodies = []
    for _ in range(2):
        delivery = await asyncio.wait_for(anext(sub), 5)
        bodies.append(delivery.message.body)
        await delivery.ack()
    assert bodies == [b"charge", b"other"]


async def test_publish_without_a_stream_is_a_clear_error(jetstream: Factory, topic: str) -> None:
    transport = await jetstream()
    with pytest.raises(PublishError, match="ensure_topic"):
        await transport.publish([Message(topic=topic, body=b"nowhere")])


async def test_unacked_message_of_a_killed_consumer_returns_after_ack_wait(
    jetstream: Factory, topic: str
) -> None:
    # Given a consumer with a 1 s AckWait that took a message and then died mid-handler
    doomed = await jetstream(ack_wait=1)
    await doomed.ensure_topic(TopicSpec(topic, groups=("g",)))
    await doomed.publish([Message(topic=topic, body=b"work")])
    first = await asyncio.wait_for(anext(doomed.subscribe(topic, "g")), 5)
    taken_at = time.monotonic()
    await doomed.nc.close()  # a crash: no ack, no nak
    # When another member of the group pulls
    survivor = await jetstream(ack_wait=1)
    again = await asyncio.wait_for(anext(survivor.subscribe(topic, "g")), 10)
    # Then it gets the message, once AckWait ran out, as its second attempt
    assert again.message.id == first.message.id
    assert again.attempt == 2
    assert time.monotonic() - taken_at >= 0.9
    await again.ack()


async def test_long_handler_sending_in_progress_is_not_redelivered(
    jetstream: Factory, topic: str
) -> None:
    # Given AckWait 1 s and in-progress heartbeats every 0.25 s
    worker = await jetstream(ack_wait=1, heartbeat=0.25)
    rival = await jetstream(ack_wait=1)
    await worker.ensure_topic(TopicSpec(topic, groups=("g",)))
    await worker.publish([Message(topic=topic, body=b"slow")])
    delivery = await asyncio.wait_for(anext(worker.subscribe(topic, "g")), 5)
    # When the handler takes 3 AckWaits while a rival member of the group keeps pulling
    rival_got: list[JetStreamDelivery] = []

    async def pull() -> None:
        async for d in rival.subscribe(topic, "g"):
            rival_got.append(d)

    puller = asyncio.ensure_future(pull())
    await asyncio.sleep(3)  # the long handler (the behaviour under test is the time passing)
    # Then the message was never redelivered, and the ack completes it
    assert rival_got == []
    await delivery.ack()
    puller.cancel()
    info = await worker.js.consumer_info(worker._streams[topic], "g")
    assert info.num_redelivered == 0


async def test_nack_with_delay_and_attempts_from_num_delivered(
    jetstream: Factory, topic: str
) -> None:
    transport = await jetstream()
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    await transport.publish([Message(topic=topic, body=b"again")])
    sub = transport.subscribe(topic, "g")
    attempts = []
    for _ in range(3):
        delivery = await asyncio.wait_for(anext(sub), 5)
        attempts.append(delivery.attempt)
        await delivery.nack(delay=0.1)
    last = await asyncio.wait_for(anext(sub), 5)
    await last.ack()
    assert [*attempts, last.attempt] == [1, 2, 3, 4]


async def test_dead_letter_terminates_the_original(jetstream: Factory, topic: str) -> None:
    transport = await jetstream()
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    await transport.ensure_topic(TopicSpec(topic + ".dlq", groups=("dlq",)))
    await transport.publish([Message(topic=topic, body=b"poison")])
    delivery = await asyncio.wait_for(anext(transport.subscribe(topic, "g")), 5)
    await delivery.dead_letter("permanent-error", error=ValueError("bad"))
    letter = await asyncio.wait_for(anext(transport.subscribe(topic + ".dlq", "dlq")), 5)
    assert letter.message.headers[h.DLQ_ERROR_TYPE] == "ValueError"
    await letter.ack()
    info = await transport.js.consumer_info(transport._streams[topic], "g")
    assert (info.num_ack_pending, info.num_pending, info.num_redelivered) == (0, 0, 0)


async def test_max_deliver_dead_letters_instead_of_dropping(
    jetstream: Factory, topic: str
) -> None:
    # Given a group whose consumer gives up after 2 deliveries
    transport = await jetstream(max_deliver=2)
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    await transport.ensure_topic(TopicSpec(topic + ".dlq", groups=("dlq",)))
    await transport.publish([Message(topic=topic, body=b"flaky")])
    sub = transport.subscribe(topic, "g")
    # When both deliveries are nacked
    for _ in range(2):
        await (await asyncio.wait_for(anext(sub), 5)).nack()
    # Then the message lands in the dead-letter topic rather than vanishing
    letter = await asyncio.wait_for(anext(transport.subscribe(topic + ".dlq", "dlq")), 5)
    assert letter.message.headers[h.DLQ_REASON] == "max-deliver"
    assert letter.message.headers[h.DLQ_ATTEMPTS] == "2"
    await letter.ack()


async def test_replay_from_a_sequence_and_from_a_time(jetstream: Factory, topic: str) -> None:
    transport = await jetstream()
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    await transport.publish([Message(topic=topic, body=b"0"), Message(topic=topic, body=b"1")])
    await asyncio.sleep(0.05)  # the two batches need distinct server timestamps
    middle = time.time()
    await asyncio.sleep(0.05)
    await transport.publish([Message(topic=topic, body=b"2"), Message(topic=topic, body=b"3")])

    async def read(n: int) -> list[bytes]:
        sub = transport.subscribe(topic, "g")
        out = []
        for _ in range(n):
            d = await asyncio.wait_for(anext(sub), 5)
            out.append(d.message.body)
            await d.ack()
        await sub.aclose()
        return out

    assert await read(4) == [b"0", b"1", b"2", b"3"]
    await transport.seek(topic, "g", offset=1)
    assert await read(3) == [b"1", b"2", b"3"]
    await transport.seek(topic, "g", timestamp=middle)
    assert await read(2) == [b"2", b"3"]


async def test_wildcard_subscription_over_a_stream_made_for_the_pattern(
    jetstream: Factory, topic: str
) -> None:
    transport = await jetstream()
    await transport.ensure_topic(TopicSpec(f"{topic}.#"))
    await transport.ensure_topic(TopicSpec(f"{topic}.*", groups=("one",)))
    await transport.publish(
        [Message(topic=f"{topic}{s}", body=b"e") for s in ("", ".a", ".a.b")]
    )
    sub = transport.subscribe(f"{topic}.*", "one")
    delivery = await asyncio.wait_for(anext(sub), 5)
    assert delivery.message.topic == f"{topic}.a"
    await delivery.ack()
    info = await transport.js.consumer_info(transport._streams[f"{topic}.*"], "one")
    assert info.num_pending == 0


async def test_compacted_topics_are_refused(jetstream: Factory, topic: str) -> None:
    transport = await jetstream()
    with pytest.raises(ConfigurationError, match="compaction"):
        await transport.ensure_topic(TopicSpec(topic, compacted=True))


async def test_interop_with_raw_nats_py_both_ways(jetstream: Factory, topic: str) -> None:
    transport = await jetstream()
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    raw = await nats.connect(transport.config.servers)
    try:
        js = raw.jetstream()
        # raw -> mqkit
        ack = await js.publish(topic, b"from raw", headers={"x-a": "1"})
        delivery = await asyncio.wait_for(anext(transport.subscribe(topic, "g")), 5)
        assert delivery.message.body == b"from raw"
        assert delivery.message.id == f"{ack.stream}:{ack.seq}"
        assert delivery.message.headers == {"x-a": "1"}
        await delivery.ack()
        # mqkit -> raw
        sent = Message(topic=topic, body=b"from mqkit", key="k", headers={"x-b": "2"})
        await transport.publish([sent])
        psub = await js.pull_subscribe(topic, durable="raw", stream=ack.stream)
        msgs = await psub.fetch(2, timeout=5)
        got = msgs[-1]
        assert got.data == b"from mqkit"
        assert got.headers is not None
        assert (got.headers["x-b"], got.headers["Mqkit-Key"], got.headers["Nats-Msg-Id"]) == (
            "2", "k", sent.id,
        )
        for m in msgs:
            await m.ack()
    finally:
        await raw.close()
