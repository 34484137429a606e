"""Core NATS (nats://): request/reply, wildcards, queue groups, errors, interop with nats-py."""

from __future__ import annotations

import asyncio
import time

import nats
import nats.aio.msg
import pytest

from mqkit import headers as h
from mqkit.client import Client
from mqkit.errors import ConfigurationError, ConnectionFailed, RequestTimeout
from mqkit.message import Delivery, Message
from mqkit.testing import wait_until
from mqkit_nats import NatsTransport
from mqkit_nats.subscriber import flush_after_pending
from tests.nats.conftest import Factory


async def test_request_reply_between_mqkit_clients(nats_url: str, topic: str) -> None:
    async with Client(nats_url) as client:

        @client.subscribe(topic, group="pricing")
        async def price(query: dict[str, str]) -> dict[str, object]:
            return {"sku": query["sku"], "price": 9.5}

        await client.start()
        answer = await client.request(topic, {"sku": "A-1"}, timeout=5)
    assert answer == {"sku": "A-1", "price": 9.5}


async def test_request_without_responder_fails_fast_and_clearly(core: Factory, topic: str) -> None:
    transport = await core()
    started = time.monotonic()
    with pytest.raises(RequestTimeout, match="no responder"):
        await transport.request(Message(topic=topic, body=b"?"), timeout=10)
    assert time.monotonic() - started < 5  # the server said so; we did not wait out 10 s


async def test_request_with_a_silent_responder_times_out(core: Factory, topic: str) -> None:
    transport = await core()
    raw = await nats.connect(transport.config.servers)
    try:
        async def ignore(msg: nats.aio.msg.Msg) -> None:
            pass  # never answers

        await raw.subscribe(topic, cb=ignore)
        await flush_after_pending(raw)  # raw.flush() can overtake the SUB
        with pytest.raises(RequestTimeout, match=r"within 0\.3s"):
            await transport.request(Message(topic=topic, body=b"?"), timeout=0.3)
    finally:
        await raw.close()


async def test_raw_nats_request_is_answered_by_an_mqkit_handler(
    nats_url: str, topic: str
) -> None:
    async with Client(nats_url) as client:

        @client.subscribe(topic, group="echo")
        async def echo(payload: bytes) -> bytes:
            return payload.upper()

        await client.start()
        await client.publish("warmup." + topic, b"")  # waits until the subscription is live
        raw = await nats.connect(client.transport.config.servers)  # type: ignore[attr-defined]
        try:
            reply = await raw.request(topic, b"hello", timeout=5)
        finally:
            await raw.close()
    assert reply.data == b"HELLO"


async def test_mqkit_request_is_answered_by_a_raw_nats_responder(
    core: Factory, topic: str
) -> None:
    transport = await core()
    raw = await nats.connect(transport.config.servers)
    try:

        async def respond(msg: nats.aio.msg.Msg) -> None:
            await msg.respond(msg.data[::-1])

        await raw.subscribe(topic, cb=respond)
        await flush_after_pending(raw)  # raw.flush() can overtake the SUB
        reply = await transport.request(Message(topic=topic, body=b"abc"), timeout=5)
    finally:
        await raw.close()
    assert reply.body == b"cba"


async def test_raw_publisher_to_mqkit_subscriber_and_back(core: Factory, topic: str) -> None:
    transport = await core()
    raw = await nats.connect(transport.config.servers)
    try:
        # mqkit -> raw: body and headers are readable without mqkit
        raw_sub = await raw.subscribe(topic + ".out")
        await flush_after_pending(raw)  # raw.flush() can overtake the SUB
        sent = Message(topic=topic + ".out", body=b"to raw", key="k1", headers={"x-a": "b"})
        await transport.publish([sent])
        got = await raw_sub.next_msg(timeout=5)
        assert got.data == b"to raw"
        assert got.headers is not None
        assert (got.headers["x-a"], got.headers["Mqkit-Key"], got.headers["Mqkit-Id"]) == (
            "b", "k1", sent.id,
        )
        # raw -> mqkit: a plain message decodes with a fresh id and its headers
        sub = transport.subscribe(topic + ".in", "g")
        delivery_task = asyncio.ensure_future(anext(sub))
        await transport.publish([])  # waits until the subscription is live
        await raw.publish(topic + ".in", b"from raw", headers={"x-b": "c"})
        delivery = await asyncio.wait_for(delivery_task, 5)
        assert delivery.message.body == b"from raw"
        assert delivery.message.headers == {"x-b": "c"}
        assert delivery.message.id and delivery.attempt == 1
        await delivery.ack()
    finally:
        await raw.close()


async def test_wildcards_star_and_trailing_hash(nats_url: str, topic: str) -> None:
    seen: dict[str, list[str]] = {"star": [], "hash": []}
    async with Client(nats_url) as client:
        for group, pattern in (("star", f"{topic}.*"), ("hash", f"{topic}.#")):

            @client.subscribe(pattern, group=group)
            async def handle(delivery: Delivery, group: str = group) -> None:
                seen[group].append(delivery.message.topic)

        await client.start()
        for suffix in ("", ".a", ".a.b"):
            await client.publish(topic + suffix, "e")
        await wait_until(lambda: len(seen["hash"]) >= 3 and len(seen["star"]) >= 1, 10)
    # mqkit's '#' matches zero words too: the bare topic reaches the '#' subscriber
    assert sorted(seen["hash"]) == [topic, f"{topic}.a", f"{topic}.a.b"]
    assert seen["star"] == [f"{topic}.a"]


async def test_pattern_with_hash_in_the_middle_is_refused(core: Factory) -> None:
    transport = await core()
    with pytest.raises(ConfigurationError, match="middle"):
        transport.subscribe("a.#.b", "g")


async def test_queue_group_members_split_and_groups_each_see_all(
    core: Factory, topic: str
) -> None:
    a, b, other = await core(), await core(), await core()
    got: dict[str, list[bytes]] = {"a": [], "b": [], "other": []}

    async def pump(name: str, transport: NatsTransport, group: str) -> None:
        async for delivery in transport.subscribe(topic, group):
            got[name].append(delivery.message.body)
            await delivery.ack()

    tasks = [
        asyncio.ensure_future(pump("a", a, "workers")),
        asyncio.ensure_future(pump("b", b, "workers")),
        asyncio.ensure_future(pump("other", other, "audit")),
    ]
    for t in (a, b, other):
        await t.publish([])  # each subscription is live before anything is sent
    await a.publish([Message(topic=topic, body=str(i).encode()) for i in range(200)])
    await wait_until(lambda: len(got["a"]) + len(got["b"]) >= 200 and len(got["other"]) >= 200)
    for task in tasks:
        task.cancel()
    assert sorted(got["a"] + got["b"]) == sorted(got["other"])
    assert got["a"] and got["b"]


async def test_nack_redelivers_inside_the_process_with_a_growing_attempt(
    core: Factory, topic: str
) -> None:
    transport = await core()
    sub = transport.subscribe(topic, "g")
    first = asyncio.ensure_future(anext(sub))
    await transport.publish([Message(topic=topic, body=b"retry me")])
    delivery = await asyncio.wait_for(first, 5)
    await delivery.nack(delay=0.2)
    again = await asyncio.wait_for(anext(sub), 5)
    assert (again.message.id, again.attempt) == (delivery.message.id, 2)
    await again.ack()


async def test_unreachable_server_fails_fast_without_leaking_the_token() -> None:
    transport = NatsTransport("nats://s3cr3t-token@127.0.0.1:1", connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as caught:
        await transport.connect()
    assert time.monotonic() - started < 3
    assert "s3cr3t" not in str(caught.value) and "s3cr3t" not in repr(transport)
    assert "127.0.0.1:1" in str(caught.value)


async def test_reply_to_header_is_set_for_raw_requests(core: Factory, topic: str) -> None:
    transport = await core()
    sub = transport.subscribe(topic, "g")
    pending = asyncio.ensure_future(anext(sub))
    await transport.publish([])
    raw = await nats.connect(transport.config.servers)
    try:
        request = asyncio.ensure_future(raw.request(topic, b"q", timeout=5))
        delivery = await asyncio.wait_for(pending, 5)
        reply_to = delivery.message.headers[h.REPLY_TO]
        await transport.publish([Message(topic=reply_to, body=b"a")])
        assert (await request).data == b"a"
        await delivery.ack()
    finally:
        await raw.close()
