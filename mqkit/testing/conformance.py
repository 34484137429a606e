"""The conformance suite: one set of tests every transport must pass on its real broker.

Use it from an adapter's tests by providing a ``conformance_url`` fixture (parametrize it
with ids naming the transport, so ``-k kafka`` selects) and importing the tests::

    @pytest.fixture(params=["memory://conf"], ids=["memory"])
    def conformance_url(request): return request.param

    from mqkit.testing.conformance import *  # noqa: F403

Each test declares the capabilities it needs with ``requires(...)`` and skips itself where
the transport's ``Capabilities`` do not promise them: by capability, never by hand. Topic
names are unique per test, so a persistent broker can be shared between runs.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pydantic import BaseModel

from mqkit import headers as h
from mqkit.client import DLQ_GROUP, Client
from mqkit.errors import MessageTooLarge, PermanentError, TransientError
from mqkit.message import Delivery, Message, new_id
from mqkit.middleware import DeadLetter, Idempotency, Retry, RetryPolicy
from mqkit.stores.memory import MemoryIdempotencyStore
from mqkit.testing.waiting import wait_until

__all__ = [
    "ClientFactory",
    "client_factory",
    "test_attempts_are_counted",
    "test_competing_consumers_split_a_groups_work",
    "test_dead_letter_after_max_attempts_carries_error_headers",
    "test_delay_is_not_shortened",
    "test_graceful_shutdown_loses_nothing",
    "test_idempotency_absorbs_duplicates",
    "test_malformed_json_is_dead_lettered_and_consumer_keeps_running",
    "test_many_messages_none_lost_none_duplicated",
    "test_nack_redelivers",
    "test_order_per_key",
    "test_oversize_message_is_a_clear_error",
    "test_permanent_error_goes_straight_to_dead_letter",
    "test_replay_from_an_offset",
    "test_request_reply",
    "test_round_trip_with_unicode_headers_and_keys",
    "test_two_groups_each_see_every_message",
    "test_wildcard_subscription",
]

TIMEOUT = float(os.environ.get("MQKIT_CONFORMANCE_TIMEOUT", "60"))
MANY = int(os.environ.get("MQKIT_CONFORMANCE_COUNT", "10000"))
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2)


class Order(BaseModel):
    order_id: str
    amount: float


def requires(**capabilities: bool) -> pytest.MarkDecorator:
    """Mark a test as needing these capability flags (checked by ``client_factory``)."""
    return pytest.mark.mqkit_requires(**capabilities)


class ClientFactory:
    """Makes connected clients on the URL under test; closes them all at the end."""

    def __init__(self, url: str, required: dict[str, bool]) -> None:
        self.url = url
        self.required = required
        self.clients: list[Client] = []

    async def __call__(self, **options: Any) -> Client:
        client = Client(self.url, **options)
        await client.connect()
        self.clients.append(client)
        missing = client.capabilities.missing(**self.required)
        if missing:
            pytest.skip(f"{client.url.scheme}:// does not offer {', '.join(missing)}")
        return client

    async def close(self) -> None:
        for client in reversed(self.clients):
            await client.close()


@pytest.fixture
async def client_factory(
    conformance_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[ClientFactory]:
    required: dict[str, bool] = {}
    for mark in request.node.iter_markers("mqkit_requires"):
        required.update(mark.kwargs)
    factory = ClientFactory(conformance_url, required)
    try:
        yield factory
    finally:
        await factory.close()


def topic_name(what: str) -> str:
    return f"conf.{what}.{new_id()[:12]}"


def group_name(topic: str, name: str) -> str:
    """A group name unique to the test: on Kafka group ids are cluster-wide, and a shared
    one would rebalance between concurrent runs of the suite."""
    return f"{name}-{topic.rsplit('.', 1)[-1]}"


async def drain_dlq(client: Client, topic: str, count: int) -> list[Message]:
    """Read (and ack) ``count`` dead letters of ``topic``."""
    letters: list[Message] = []
    async with asyncio.timeout(TIMEOUT):
        async for delivery in client.consume(f"{topic}.dlq", group=DLQ_GROUP):
            letters.append(delivery.message)
            await delivery.ack()
            if len(letters) >= count:
                break
    return letters


def recorder() -> tuple[list[Delivery], Callable[[Delivery], Awaitable[None]]]:
    seen: list[Delivery] = []

    async def record(delivery: Delivery) -> None:
        seen.append(delivery)

    return seen, record


# --- the tests -----------------------------------------------------------------------------


async def test_round_trip_with_unicode_headers_and_keys(client_factory: ClientFactory) -> None:
    # Given a subscriber
    client = await client_factory()
    topic = topic_name("roundtrip")
    got: list[tuple[dict[str, Any], Delivery]] = []

    @client.subscribe(topic, group=group_name(topic, "g"))
    async def handle(payload: dict[str, Any], delivery: Delivery) -> None:
        got.append((payload, delivery))

    await client.start()
    # When a message with unicode in its key, headers and body is published
    sent = await client.publish(
        topic,
        {"name": "Zoë — 東京 🚀"},
        key="clé-🔑",
        headers={"x-note": "ünïcødé ✓", "x-empty": ""},
        idempotency_key="idem-1",
        correlation_id="corr-1",
    )
    # Then it arrives intact, with its id and conventional headers
    await wait_until(lambda: len(got) == 1, TIMEOUT, what="the message")
    payload, delivery = got[0]
    assert payload == {"name": "Zoë — 東京 🚀"}
    m = delivery.message
    assert (m.id, m.key, m.topic) == (sent.id, "clé-🔑", topic)
    assert m.headers["x-note"] == "ünïcødé ✓"
    assert m.headers["x-empty"] == ""
    assert (m.idempotency_key, m.correlation_id) == ("idem-1", "corr-1")
    assert m.content_type == "application/json"
    assert delivery.attempt == 1


async def test_many_messages_none_lost_none_duplicated(client_factory: ClientFactory) -> None:
    # Given a subscriber with some concurrency
    client = await client_factory()
    topic = topic_name("many")
    counts: Counter[int] = Counter()

    @client.subscribe(topic, group=group_name(topic, "g"), concurrency=16)
    async def handle(n: int) -> None:
        counts[n] += 1

    await client.start()
    # When many messages are published in batches
    many = min(MANY, client.capabilities.bulk_test_size)
    for start in range(0, many, 500):
        await client.publish_batch(topic, range(start, min(start + 500, many)))
    # Then each arrives exactly once
    await wait_until(lambda: sum(counts.values()) >= many, TIMEOUT, what=f"{many} messages")
    await asyncio.sleep(0.2)  # give a stray duplicate time to show up
    assert set(counts) == set(range(many))
    assert max(counts.values()) == 1


async def test_two_groups_each_see_every_message(client_factory: ClientFactory) -> None:
    client = await client_factory()
    topic = topic_name("groups")
    seen: dict[str, list[int]] = defaultdict(list)

    for group in ("billing", "analytics"):

        @client.subscribe(topic, group=group_name(topic, group))
        async def handle(n: int, delivery: Delivery, group: str = group) -> None:
            seen[group].append(n)

    await client.start()
    await client.publish_batch(topic, range(50))
    await wait_until(lambda: all(len(seen[g]) >= 50 for g in ("billing", "analytics")), TIMEOUT)
    assert sorted(seen["billing"]) == list(range(50))
    assert sorted(seen["analytics"]) == list(range(50))


@requires(consumer_groups=True)
async def test_competing_consumers_split_a_groups_work(client_factory: ClientFactory) -> None:
    # Given two consumers (two clients) in one group
    first, second = await client_factory(), await client_factory()
    topic = topic_name("compete")
    by_client: dict[int, list[int]] = {1: [], 2: []}
    for index, client in ((1, first), (2, second)):

        @client.subscribe(topic, group=group_name(topic, "workers"), concurrency=2)
        async def handle(n: int, delivery: Delivery, index: int = index) -> None:
            by_client[index].append(n)
            await asyncio.sleep(0.02)  # hold the slot so the other consumer gets work

        await client.start()
    # When messages without keys are published
    await first.publish_batch(topic, range(200))
    # Then together they see each message once, and both got a share
    await wait_until(lambda: len(by_client[1]) + len(by_client[2]) >= 200, TIMEOUT)
    assert sorted(by_client[1] + by_client[2]) == list(range(200))
    assert by_client[1] and by_client[2]


@requires(ordered_by_key=True)
async def test_order_per_key(client_factory: ClientFactory) -> None:
    client = await client_factory()
    topic = topic_name("order")
    seen: dict[str, list[int]] = defaultdict(list)
    active: set[str] = set()
    overlaps: list[str] = []

    @client.subscribe(topic, group=group_name(topic, "g"), concurrency=8)
    async def handle(item: dict[str, Any]) -> None:
        key = item["key"]
        if key in active:
            overlaps.append(key)
        active.add(key)
        await asyncio.sleep(0)
        seen[key].append(item["n"])
        active.discard(key)

    await client.start()
    items = [{"key": f"k{i % 5}", "n": i} for i in range(500)]
    await client.publish_batch(topic, items, key=lambda item: item["key"])
    await wait_until(lambda: sum(map(len, seen.values())) >= 500, TIMEOUT)
    for key, ns in seen.items():
        assert ns == sorted(ns), f"key {key} out of order"
    assert overlaps == [], "two messages of one key ran at once"


@requires(at_least_once=True)
async def test_nack_redelivers(client_factory: ClientFactory) -> None:
    client = await client_factory()
    topic = topic_name("nack")
    attempts: list[int] = []
    await client.ensure_topic(topic, groups=[group_name(topic, "g")])
    await client.publish(topic, "hello")
    async with asyncio.timeout(TIMEOUT):
        consumer = client.consume(topic, group=group_name(topic, "g"))
        delivery = await anext(consumer)
        attempts.append(delivery.attempt)
        await delivery.nack()
        delivery = await anext(consumer)
        attempts.append(delivery.attempt)
        assert delivery.message.body == b"hello"
        await delivery.ack()
        await consumer.aclose()
    assert attempts == [1, 2]


@requires(at_least_once=True, native_delay=True)
async def test_delay_is_not_shortened(client_factory: ClientFactory) -> None:
    client = await client_factory()
    topic = topic_name("delay")
    await client.ensure_topic(topic, groups=[group_name(topic, "g")])
    await client.publish(topic, "later")
    consumer = client.consume(topic, group=group_name(topic, "g"))
    async with asyncio.timeout(TIMEOUT):
        delivery = await anext(consumer)
        nacked_at = time.monotonic()
        await delivery.nack(delay=1.0)
        again = await anext(consumer)
        waited = time.monotonic() - nacked_at
        await again.ack()
        await consumer.aclose()
    # A lower bound, not a speed check: redelivery must not come before the delay.
    assert waited >= 0.95, f"redelivered after {waited:.3f}s, asked for 1.0s"
    assert again.message.id == delivery.message.id


@requires(at_least_once=True)
async def test_attempts_are_counted(client_factory: ClientFactory) -> None:
    client = await client_factory()
    topic = topic_name("attempts")
    attempts: list[int] = []

    policy = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)

    @client.subscribe(topic, group=group_name(topic, "g"), retry=policy)
    async def handle(payload: str, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if delivery.attempt < 3:
            raise TransientError("not yet")

    await client.start()
    await client.publish(topic, "count me")
    await wait_until(lambda: len(attempts) >= 3, TIMEOUT)
    await asyncio.sleep(0.2)
    assert attempts == [1, 2, 3]


@requires(at_least_once=True)
async def test_dead_letter_after_max_attempts_carries_error_headers(
    client_factory: ClientFactory,
) -> None:
    client = await client_factory()
    topic = topic_name("exhaust")
    calls: list[int] = []

    @client.subscribe(topic, group=group_name(topic, "g"), retry=FAST_RETRY)
    async def handle(payload: str, delivery: Delivery) -> None:
        calls.append(delivery.attempt)
        raise ConnectionError("gateway down")

    await client.start()
    sent = await client.publish(topic, "doomed")
    [letter] = await drain_dlq(client, topic, 1)
    assert calls == [1, 2, 3]
    assert letter.id == sent.id and letter.body == sent.body
    assert letter.headers[h.DLQ_REASON] == "retries-exhausted"
    assert letter.headers[h.DLQ_ERROR_TYPE] == "ConnectionError"
    assert letter.headers[h.DLQ_ERROR_MESSAGE] == "gateway down"
    assert letter.headers[h.DLQ_ATTEMPTS] == "3"
    assert letter.headers[h.DLQ_ORIGINAL_TOPIC] == topic
    assert "Traceback" in letter.headers[h.DLQ_TRACEBACK]
    assert float(letter.headers[h.DLQ_FAILED_AT]) > 0


@requires(retains_unconsumed=True)
async def test_permanent_error_goes_straight_to_dead_letter(
    client_factory: ClientFactory,
) -> None:
    client = await client_factory()
    topic = topic_name("permanent")
    calls: list[int] = []

    @client.subscribe(topic, group=group_name(topic, "g"), retry=FAST_RETRY)
    async def handle(payload: str, delivery: Delivery) -> None:
        calls.append(delivery.attempt)
        raise PermanentError("card declined for good")

    await client.start()
    await client.publish(topic, "no retry")
    [letter] = await drain_dlq(client, topic, 1)
    assert calls == [1]
    assert letter.headers[h.DLQ_REASON] == "permanent-error"
    assert letter.headers[h.DLQ_ERROR_TYPE] == "PermanentError"


async def test_idempotency_absorbs_duplicates(client_factory: ClientFactory) -> None:
    client = await client_factory()
    topic = topic_name("idem")
    store = MemoryIdempotencyStore()
    charges: Counter[str] = Counter()
    handled: list[str] = []

    @client.subscribe(
        topic,
        group=group_name(topic, "payments"),
        middleware=[DeadLetter(), Retry(FAST_RETRY), Idempotency(store)],
    )
    async def charge(payment: dict[str, Any], delivery: Delivery) -> None:
        charges[payment["payment_id"]] += 1

    @client.subscribe(topic, group=group_name(topic, "audit"))
    async def audit(payment: dict[str, Any]) -> None:
        handled.append(payment["payment_id"])

    await client.start()
    # When each payment is published three times with the same idempotency key
    for payment_id in ("p1", "p2", "p3"):
        for _ in range(3):
            await client.publish(
                topic, {"payment_id": payment_id}, idempotency_key=f"pay-{payment_id}"
            )
    # A broker that de-duplicates by idempotency key (JetStream, SQS FIFO) stores 3 of the 9
    expected_audit = 3 if client.capabilities.deduplicates else 9
    await wait_until(lambda: len(handled) >= expected_audit, TIMEOUT)
    await wait_until(lambda: sum(charges.values()) >= 3, TIMEOUT)
    await asyncio.sleep(0.2)
    # Then each payment is charged exactly once
    assert charges == {"p1": 1, "p2": 1, "p3": 1}
    assert sorted(handled) == sorted(["p1", "p2", "p3"] * (expected_audit // 3))


@requires(at_least_once=True)
async def test_graceful_shutdown_loses_nothing(client_factory: ClientFactory) -> None:
    # Given a slow consumer in the middle of a backlog
    topic = topic_name("shutdown")
    first = await client_factory()
    handled: list[int] = []
    started: list[int] = []

    async def slow(n: int) -> None:
        started.append(n)
        await asyncio.sleep(0.01)
        handled.append(n)

    first.subscribe(topic, group=group_name(topic, "g"), concurrency=4)(slow)
    await first.start()
    await first.publish_batch(topic, range(300))
    await wait_until(lambda: len(handled) >= 20, TIMEOUT)
    # When it is stopped gracefully
    await first.stop()
    # Then every handler it started has finished
    assert sorted(started) == sorted(handled)
    # And a new consumer in the same group gets everything the first did not handle
    second = await client_factory()
    second.subscribe(topic, group=group_name(topic, "g"), concurrency=4)(slow)
    await second.start()
    await wait_until(lambda: set(handled) >= set(range(300)), TIMEOUT, what="the rest")
    assert set(handled) == set(range(300))


async def test_oversize_message_is_a_clear_error(client_factory: ClientFactory) -> None:
    client = await client_factory()
    limit = client.capabilities.max_message_bytes
    with pytest.raises(MessageTooLarge, match="at most"):
        await client.publish(topic_name("big"), b"x" * (limit + 1))


@requires(retains_unconsumed=True)
async def test_malformed_json_is_dead_lettered_and_consumer_keeps_running(
    client_factory: ClientFactory,
) -> None:
    client = await client_factory()
    topic = topic_name("malformed")
    good: list[str] = []

    @client.subscribe(topic, group=group_name(topic, "g"), retry=FAST_RETRY)
    async def handle(order: Order) -> None:
        good.append(order.order_id)

    await client.start()
    await client.publish_messages(
        [
            client.message(topic, {"order_id": "o1", "amount": 1}),
            Message(topic=topic, body=b"{not json", headers={h.CONTENT_TYPE: "application/json"}),
            client.message(topic, {"order_id": 42}),  # valid JSON, invalid order
            client.message(topic, {"order_id": "o2", "amount": 2}),
        ]
    )
    letters = await drain_dlq(client, topic, 2)
    await wait_until(lambda: len(good) >= 2, TIMEOUT)
    assert sorted(good) == ["o1", "o2"]
    assert {m.headers[h.DLQ_ERROR_TYPE] for m in letters} == {"DecodeError"}
    assert {m.headers[h.DLQ_ATTEMPTS] for m in letters} == {"1"}


@requires(wildcards=True)
async def test_wildcard_subscription(client_factory: ClientFactory) -> None:
    client = await client_factory()
    base = topic_name("wild")
    one: list[str] = []
    many: list[str] = []

    @client.subscribe(f"{base}.*", group=group_name(base, "one"))
    async def star(delivery: Delivery) -> None:
        one.append(delivery.message.topic)

    @client.subscribe(f"{base}.#", group=group_name(base, "many"))
    async def hash_(delivery: Delivery) -> None:
        many.append(delivery.message.topic)

    await client.start()
    for suffix in ("created", "paid", "eu.shipped"):
        await client.publish(f"{base}.{suffix}", "e")
    await wait_until(lambda: len(many) >= 3 and len(one) >= 2, TIMEOUT)
    await asyncio.sleep(0.1)
    assert sorted(one) == [f"{base}.created", f"{base}.paid"]
    assert sorted(many) == [f"{base}.created", f"{base}.eu.shipped", f"{base}.paid"]


@requires(request_reply=True)
async def test_request_reply(client_factory: ClientFactory) -> None:
    client = await client_factory()
    topic = topic_name("rpc")

    @client.subscribe(topic, group=group_name(topic, "responders"))
    async def price(query: dict[str, Any]) -> dict[str, Any]:
        return {"sku": query["sku"], "price": 9.5}

    await client.start()
    answer = await client.request(topic, {"sku": "A-1"}, timeout=TIMEOUT)
    assert answer == {"sku": "A-1", "price": 9.5}


@requires(replay=True)
async def test_replay_from_an_offset(client_factory: ClientFactory) -> None:
    client = await client_factory()
    topic = topic_name("replay")
    seen: list[int] = []

    @client.subscribe(topic, group=group_name(topic, "g"))
    async def handle(n: int) -> None:
        seen.append(n)

    await client.start()
    await client.publish_batch(topic, range(10))
    await wait_until(lambda: len(seen) >= 10, TIMEOUT)
    seek = getattr(client.transport, "seek")  # noqa: B009 - the Replayable protocol
    await seek(topic, group_name(topic, "g"), offset=0)
    await wait_until(lambda: len(seen) >= 20, TIMEOUT)
    assert sorted(seen) == sorted(list(range(10)) * 2)
