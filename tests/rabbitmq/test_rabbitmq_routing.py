"""Routing: AMQP topic semantics, other exchange types, mandatory publishing, interop."""

from __future__ import annotations

import asyncio
from typing import Any

import pika
import pytest

from mqkit.errors import ConfigurationError, PublishError
from mqkit.message import Delivery, Message, new_id
from mqkit.testing import wait_until
from mqkit.transport import TopicSpec
from tests.rabbitmq.conftest import TransportFactory, queue_depth

# The seed's routing table: binding -> the keys AMQP topic semantics route to it.
ROUTING_TABLE = {
    "order.*": ["order.created"],
    "order.created": ["order.created"],
    "*.critical": ["payment.critical"],
    "order.#": ["order", "order.created", "order.created.eu"],
}
KEYS = ["order.created", "order.created.eu", "payment.critical", "order"]


async def collect(sub: Any, into: list[Delivery], count: int) -> None:
    async for delivery in sub:
        into.append(delivery)
        await delivery.ack()
        if len(into) >= count:
            return


async def test_seed_routing_table_follows_amqp_topic_semantics(
    make_transport: TransportFactory, raw_channel: Any
) -> None:
    # Given a group bound with each pattern of the routing table
    transport = await make_transport()
    group = f"g-{new_id()[:8]}"
    for binding in ROUTING_TABLE:
        await transport.ensure_topic(TopicSpec(binding, groups=(group,)))
    # When one message per key is published (and confirmed, so routed)
    await transport.publish([Message(topic=key, body=key.encode()) for key in KEYS])
    # Then each queue holds exactly the messages AMQP routes to it...
    for binding, expected in ROUTING_TABLE.items():
        assert queue_depth(raw_channel, f"{binding}:{group}") == len(expected), binding
    # ...and they are the expected keys
    for binding, expected in ROUTING_TABLE.items():
        got: list[Delivery] = []
        async with asyncio.timeout(10):
            await collect(transport.subscribe(binding, group), got, len(expected))
        assert sorted(d.message.topic for d in got) == sorted(expected), binding


async def test_unroutable_publish_raises(make_transport: TransportFactory) -> None:
    # Given a topic nobody declared a group for
    transport = await make_transport()
    # When a message is published to it, Then the publish fails instead of losing it
    with pytest.raises(PublishError, match="unroutable"):
        await transport.publish([Message(topic="nobody.listens", body=b"x")])


async def test_unroutable_is_accepted_when_mandatory_is_off(
    make_transport: TransportFactory,
) -> None:
    transport = await make_transport(mandatory=False)
    await transport.publish([Message(topic="nobody.listens", body=b"x")])


async def test_one_unroutable_message_fails_its_batch_but_the_rest_is_delivered(
    make_transport: TransportFactory, raw_channel: Any
) -> None:
    transport = await make_transport()
    await transport.ensure_topic(TopicSpec("known", groups=("g",)))
    with pytest.raises(PublishError, match="unknown"):
        await transport.publish(
            [Message(topic="known", body=b"1"), Message(topic="unknown", body=b"2")]
        )
    assert queue_depth(raw_channel, "known:g") == 1


async def test_fanout_exchange_per_topic_gives_every_group_each_message(
    make_transport: TransportFactory,
) -> None:
    transport = await make_transport(exchange_type="fanout")
    assert not transport.capabilities.wildcards
    await transport.ensure_topic(TopicSpec("news", groups=("a", "b")))
    await transport.publish([Message(topic="news", body=b"n1")])
    for group in ("a", "b"):
        got: list[Delivery] = []
        async with asyncio.timeout(10):
            await collect(transport.subscribe("news", group), got, 1)
        assert got[0].message.body == b"n1"


async def test_fanout_to_an_undeclared_topic_is_a_clear_error(
    make_transport: TransportFactory,
) -> None:
    transport = await make_transport(exchange_type="fanout")
    with pytest.raises(PublishError, match="declare the topic"):
        await transport.publish([Message(topic="never.declared", body=b"x")])


async def test_headers_exchange_routes_by_header_bindings(
    make_transport: TransportFactory, raw_channel: Any
) -> None:
    # Given a headers topic: group "all" unfiltered, group "eu" matching region=eu
    transport = await make_transport(exchange_type="headers")
    await transport.ensure_topic(TopicSpec("shipments", groups=("all",)))
    await transport.ensure_topic(
        TopicSpec("shipments", groups=("eu",), options={"match.region": "eu"})
    )
    # (the client's own ensure_topic before subscribing must not widen the filter)
    await transport.ensure_topic(TopicSpec("shipments", groups=("eu",)))
    # When one EU and one US shipment are published
    await transport.publish([
        Message(topic="shipments", body=b"eu", headers={"region": "eu"}),
        Message(topic="shipments", body=b"us", headers={"region": "us"}),
    ])
    # Then "all" has both and "eu" (read through a subscription) only the EU one
    assert queue_depth(raw_channel, "shipments:all") == 2
    got: list[Delivery] = []
    async with asyncio.timeout(10):
        await collect(transport.subscribe("shipments", "eu"), got, 1)
    assert [d.message.body for d in got] == [b"eu"]
    assert queue_depth(raw_channel, "shipments:eu") == 0


async def test_direct_exchange_refuses_wildcards(make_transport: TransportFactory) -> None:
    transport = await make_transport(exchange_type="direct")
    with pytest.raises(ConfigurationError, match="exchange_type=topic"):
        await transport.ensure_topic(TopicSpec("order.*", groups=("g",)))


async def test_raw_pika_publisher_to_mqkit_subscriber(
    make_transport: TransportFactory, raw_channel: Any, exchange: str
) -> None:
    # Given an mqkit group on a topic
    transport = await make_transport()
    await transport.ensure_topic(TopicSpec("legacy.events", groups=("g",)))
    # When a plain pika app publishes to the exchange with its own properties
    raw_channel.confirm_delivery()
    raw_channel.basic_publish(
        exchange,
        "legacy.events",
        b'{"n": 1}',
        pika.BasicProperties(
            message_id="raw-1", content_type="application/json", correlation_id="c-9",
            headers={"tenant": "acme", "retries": 2, "blob": b"\xffbin"}, delivery_mode=2,
        ),
        mandatory=True,
    )
    # Then mqkit reads it with its fields mapped
    got: list[Delivery] = []
    async with asyncio.timeout(10):
        await collect(transport.subscribe("legacy.events", "g"), got, 1)
    m = got[0].message
    assert (m.id, m.topic, m.body) == ("raw-1", "legacy.events", b'{"n": 1}')
    assert m.content_type == "application/json" and m.correlation_id == "c-9"
    assert m.headers["tenant"] == "acme" and m.headers["retries"] == "2"
    assert m.headers["blob"] == "\ufffdbin"
    assert got[0].attempt == 1


async def test_mqkit_publisher_to_raw_pika_consumer(
    make_transport: TransportFactory, raw_channel: Any
) -> None:
    transport = await make_transport()
    await transport.ensure_topic(TopicSpec("to.legacy", groups=("g",)))
    sent = Message(topic="to.legacy", body=b"hi", key="k-1",
                   headers={"content-type": "text/plain", "x-note": "ünï"})
    await transport.publish([sent])
    await wait_until(lambda: queue_depth(raw_channel, "to.legacy:g") == 1, 10)
    method, props, body = raw_channel.basic_get("to.legacy:g", auto_ack=True)
    assert body == b"hi" and method.routing_key == "to.legacy"
    assert props.message_id == sent.id and props.content_type == "text/plain"
    assert props.delivery_mode == 2  # persistent
    assert props.headers["x-note"] == "ünï" and props.headers["x-mqkit-key"] == "k-1"
    assert props.timestamp == int(sent.timestamp)
