"""The fast paths: publishing through ``mqkit_nats.wire`` (and its fallback to nats-py's public
``publish``), and the receive side's cheaper bookkeeping.

Both publish paths must put the same bytes on the wire, keep the same guarantees (a core
publish is confirmed by a PING that follows the batch; every JetStream PubAck is awaited) and
interoperate with raw nats-py clients. ``fast_publish=false`` forces the public path. On the
receive side, what mqkit reads itself must equal what nats-py would have told it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from mqkit import headers as h
from mqkit.errors import ConfigurationError, PublishError
from mqkit.message import Message
from mqkit.transport import TopicSpec
from mqkit_nats.headers import encode_headers, header_block, msg_id_for
from mqkit_nats.publisher import _frames
from mqkit_nats.subscriber import _ack_metadata, flush_after_pending
from mqkit_nats.wire import CHUNK_BYTES, FastWire, hpub
from tests.nats.conftest import Factory

MESSAGES = [
    Message(topic="w.plain", body=b"x" * 100),
    Message(topic="w.key", body=b"", key="order-7"),
    Message(topic="w.spaced", body=b"b", key=" spaced ", headers={"x-tb": "l1\r\nl2"}),
    Message(topic="w.uni", body="é".encode(), headers={"x-uni": "Zoë 🚀", "x-empty": ""}),
    Message(topic="w.id", body=b"b", id=" odd\r\nid ", headers={h.CORRELATION_ID: "c-1"}),
]
PATHS = pytest.mark.parametrize("fast", [True, False], ids=["fast", "public"])


async def _sent_by_nats_py(nc: NatsClient, *args: Any, **kwargs: Any) -> bytes:
    """The command nats-py's public ``publish`` queues for these arguments."""
    captured: list[bytes] = []
    original = nc._send_command

    async def capture(cmd: bytes, priority: bool = False) -> None:
        captured.append(bytes(cmd))

    nc._send_command = capture  # type: ignore[method-assign]
    try:
        await nc.publish(*args, **kwargs)
    finally:
        nc._send_command = original  # type: ignore[method-assign]
    [command] = captured
    return command


@pytest.mark.parametrize("message", MESSAGES, ids=[m.topic for m in MESSAGES])
@pytest.mark.parametrize("msg_id", [None, "pay-1", " padded\nid "])
@pytest.mark.parametrize("reply", ["", "_INBOX.abc.7"])
async def test_fast_frames_are_the_bytes_nats_py_sends(
    core: Factory, message: Message, msg_id: str | None, reply: str
) -> None:
    # Given a connected nats-py client
    nc = (await core()).nc
    # When the same message is framed by mqkit and by nats-py's publish
    ours, size = hpub(message.topic, reply, header_block(message, msg_id), message.body)
    theirs = await _sent_by_nats_py(
        nc, message.topic, message.body, reply=reply, headers=encode_headers(message, msg_id)
    )
    # Then the bytes are identical, and the size is what the server counts
    assert ours == theirs
    assert size == int(theirs.split(b"\r\n", 1)[0].split()[-1])


@pytest.mark.parametrize("msg_id_mode", [None, "idempotency-key", "message-id"])
def test_a_batch_is_framed_as_hpub_frames_each(msg_id_mode: str | None) -> None:
    # Given usual messages, odd ones (keys, headers, odd ids, unicode) and a reply inbox
    batch = [Message(topic="w.plain", body=b"p" * i) for i in range(3)]
    batch += [*MESSAGES, Message(topic="_INBOX.x.1", body=b"r"), Message("w.plain", b"q")]
    replies = None if msg_id_mode is None else [
        "" if m.topic.startswith("_INBOX.") else f"_INBOX.acks.{i}" for i, m in enumerate(batch)
    ]
    # When the batch is framed at once
    chunks, payload = _frames(batch, replies, 1 << 20, "nats", msg_id_mode)

    # Then it is hpub's frame of each message, in order, with the bodies counted
    def msg_id(m: Message) -> str | None:
        if msg_id_mode is None or m.topic.startswith("_INBOX."):
            return None
        return msg_id_for(m, msg_id_mode)

    expected = [
        hpub(m.topic, replies[i] if replies else "", header_block(m, msg_id(m)), m.body)[0]
        for i, m in enumerate(batch)
    ]
    assert chunks == [b"".join(expected)]
    assert payload == sum(len(m.body) for m in batch)


def test_a_large_batch_is_framed_in_chunks_of_whole_frames() -> None:
    batch = [Message(topic="w.big", body=bytes([65 + i % 26]) * 50_000) for i in range(30)]
    chunks, _ = _frames(batch, None, 1 << 20, "nats", None)
    expected = [hpub(m.topic, "", header_block(m), m.body)[0] for m in batch]
    assert b"".join(chunks) == b"".join(expected)
    assert len(chunks) > 1 and all(len(c) < CHUNK_BYTES + 60_000 for c in chunks)
    assert all(c.startswith(b"HPUB w.big ") and c.endswith(b"\r\n") for c in chunks)


async def test_the_feature_check_passes_on_this_nats_py_and_server(core: Factory) -> None:
    transport = await core()
    assert transport.fast_publish
    assert FastWire.detect(transport.nc) is not None


async def test_the_feature_check_refuses_unexpected_internals(
    core: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    nc = (await core()).nc

    async def other_send(cmd: bytes, priority: bool = False, extra: int = 0) -> None: ...

    def sync_flush(force_flush: bool = False) -> None: ...

    # A changed signature, a non-coroutine, a missing method, a server without headers
    for name, value in [
        ("_send_command", other_send),
        ("_flush_pending", sync_flush),
        ("_send_command", None),
        ("_server_info", {"headers": False}),
        ("_max_pending_size", None),
    ]:
        with monkeypatch.context() as patch:
            patch.setattr(nc, name, value)
            assert FastWire.detect(nc) is None, name


async def test_fast_publish_false_forces_the_public_path(core: Factory) -> None:
    transport = await core(fast_publish="false")
    assert not transport.fast_publish


async def test_a_bad_fast_publish_value_is_a_configuration_error(core: Factory) -> None:
    with pytest.raises(ConfigurationError, match="fast_publish"):
        await core(fast_publish="maybe")


@PATHS
async def test_core_publish_is_read_by_raw_nats_py(core: Factory, topic: str, fast: bool) -> None:
    # Given an mqkit publisher on either path and a raw nats-py subscriber
    transport = await core(fast_publish=fast)
    assert transport.fast_publish is fast
    raw = await nats.connect(transport.config.servers)
    try:
        sub = await raw.subscribe(topic)
        await flush_after_pending(raw)  # raw.flush() can overtake the SUB
        # When a batch is published
        sent = [Message(topic=topic, body=f"m{i}".encode(), key=f"k{i}") for i in range(50)]
        sent.append(Message(topic=topic, body=b"u", headers={"x-uni": "Zoë 🚀"}))
        await transport.publish(sent)
        # Then the raw client reads every message, in order, with plain headers
        got = [await sub.next_msg(timeout=5) for _ in sent]
        assert [m.data for m in got] == [m.body for m in sent]
        assert [(m.headers or {}).get("Mqkit-Id") for m in got] == [m.id for m in sent]
        assert (got[0].headers or {})["Mqkit-Key"] == "k0"
        assert (got[-1].headers or {})["x-uni"] == "Zoë 🚀"
    finally:
        await raw.close()


async def test_fast_core_publish_sends_its_ping_after_the_batch(core: Factory, topic: str) -> None:
    # Given a transport on the fast path whose socket writes are recorded
    transport = await core()
    assert transport.fast_publish
    written: list[bytes] = []
    socket = transport.nc._transport
    assert socket is not None
    write, writelines = socket.write, socket.writelines

    def record(data: bytes) -> None:
        written.append(bytes(data))
        write(data)

    def record_lines(chunks: list[bytes]) -> None:
        written.extend(bytes(c) for c in chunks)
        writelines(chunks)

    socket.write = record
    socket.writelines = record_lines
    # When a batch is published
    await transport.publish([Message(topic=topic, body=b"x") for _ in range(20)])
    # Then every frame went out before the PING whose PONG confirmed the batch
    stream = b"".join(written)
    assert stream.count(b"HPUB ") == 20
    assert stream.rindex(b"HPUB ") < stream.rindex(b"PING\r\n")


@PATHS
async def test_a_bad_header_name_is_refused_before_anything_is_sent(
    core: Factory, topic: str, fast: bool
) -> None:
    transport = await core(fast_publish=fast)
    raw = await nats.connect(transport.config.servers)
    try:
        sub = await raw.subscribe(topic)
        await flush_after_pending(raw)  # raw.flush() can overtake the SUB
        batch = [
            Message(topic=topic, body=b"ok"),
            Message(topic=topic, body=b"", headers={"a(b)": "1"}),
        ]
        with pytest.raises(ConfigurationError, match="header name"):
            await transport.publish(batch)
        await transport.publish([Message(topic=topic, body=b"after")])
        assert (await sub.next_msg(timeout=5)).data == b"after"
    finally:
        await raw.close()


@PATHS
async def test_jetstream_batch_is_stored_once_each_and_read_by_raw_nats_py(
    jetstream: Factory, topic: str, fast: bool
) -> None:
    # Given a stream, and an mqkit publisher on either path
    transport = await jetstream(fast_publish=fast)
    assert transport.fast_publish is fast
    await transport.ensure_topic(TopicSpec(topic))
    sent = [Message(topic=topic, body=f"m{i}".encode()) for i in range(300)]
    # When the batch is published twice (a retry)
    await transport.publish(sent)
    await transport.publish(sent)
    # Then the stream holds each message once, and a raw consumer reads them in order
    stream = transport._streams[topic]
    assert (await transport.js.stream_info(stream)).state.messages == 300
    raw = await nats.connect(transport.config.servers)
    try:
        psub = await raw.jetstream().pull_subscribe(topic, durable="raw", stream=stream)
        got = await psub.fetch(300, timeout=5)
        while len(got) < 300:
            got += await psub.fetch(300 - len(got), timeout=5)
        assert [m.data for m in got] == [m.body for m in sent]
        assert [(m.headers or {})["Nats-Msg-Id"] for m in got] == [m.id for m in sent]
    finally:
        await raw.close()


@PATHS
async def test_jetstream_publish_without_a_stream_fails_clearly(
    jetstream: Factory, topic: str, fast: bool
) -> None:
    transport = await jetstream(fast_publish=fast)
    with pytest.raises(PublishError, match="no JetStream stream"):
        await transport.publish([Message(topic=topic, body=b"x")])
    assert not transport._publisher._waiting


@PATHS
async def test_missing_pubacks_time_out_and_are_forgotten(
    jetstream: Factory, topic: str, fast: bool
) -> None:
    # Given a subject a raw subscriber takes (so no 503) but no stream stores (so no PubAck)
    transport = await jetstream(fast_publish=fast, request_timeout=0.3)
    raw = await nats.connect(transport.config.servers)
    try:
        await raw.subscribe(topic)
        await flush_after_pending(raw)  # raw.flush() can overtake the SUB
        # When a batch is published there
        with pytest.raises(PublishError, match="3 of 3 PubAck"):
            await transport.publish([Message(topic=topic, body=b"x") for _ in range(3)])
        # Then nothing waits for those PubAcks any more
        assert not transport._publisher._waiting
    finally:
        await raw.close()


@PATHS
async def test_concurrent_jetstream_publishes_each_get_their_own_acks(
    jetstream: Factory, topic: str, fast: bool
) -> None:
    transport = await jetstream(fast_publish=fast)
    await transport.ensure_topic(TopicSpec(topic))
    batches = [[Message(topic=topic, body=b"x") for _ in range(100)] for _ in range(8)]
    await asyncio.gather(*(transport.publish(b) for b in batches))
    stream = transport._streams[topic]
    assert (await transport.js.stream_info(stream)).state.messages == 800
    assert not transport._publisher._waiting


async def test_a_core_subscription_fuller_than_its_buffer_still_gets_every_message(
    core: Factory, topic: str
) -> None:
    # Given a subscription whose local buffer (1024 messages) will overflow
    transport = await core()
    sub = transport.subscribe(topic, "g", prefetch=1)
    await transport.publish([])  # the subscription is live
    # When far more messages arrive than it holds, while the consumer has not started
    sent = [Message(topic=topic, body=str(i).encode()) for i in range(3000)]
    for i in range(0, len(sent), 500):
        await transport.publish(sent[i : i + 500])
    await asyncio.sleep(0.2)
    # Then the consumer still reads every one of them, in order
    got = []
    for _ in sent:
        delivery = await asyncio.wait_for(anext(sub), 5)
        got.append(delivery.message.body)
        await delivery.ack()
    assert got == [m.body for m in sent]
    await sub.aclose()


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.orders.billing.3.1042.977.1732860000123456789.12",
        "$JS.ACK._.ACCHASH.orders.billing.3.1042.977.1732860000123456789.12.rnd",
        "$JS.ACK.hub.ACCHASH.orders.billing.1.7.7.1732860000000000000.0",
    ],
    ids=["v1", "v2-no-domain", "v2-domain"],
)
def test_ack_subject_metadata_matches_nats_py(reply: str) -> None:
    msg = Msg(_client=None, subject="orders", reply=reply)  # type: ignore[arg-type]
    meta = msg.metadata
    stream, sequence, delivered, timestamp = _ack_metadata(msg)
    assert (stream, sequence, delivered) == (meta.stream, meta.sequence.stream, meta.num_delivered)
    assert timestamp == pytest.approx(meta.timestamp.timestamp(), abs=1e-6)


def test_a_reply_that_is_not_an_ack_subject_is_refused_like_nats_py() -> None:
    msg = Msg(_client=None, subject="orders", reply="_INBOX.abc")  # type: ignore[arg-type]
    with pytest.raises(nats.errors.NotJSMessageError):
        _ack_metadata(msg)
