"""Client and consumer behaviour on the memory transport: the parts the conformance suite
does not reach (configuration errors, shutdown timeouts, request timeouts, sync facade)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from mqkit import Client, Delivery, SyncPublisher
from mqkit.errors import AlreadySettledError, ConfigurationError, RequestTimeout
from mqkit.memory import MemoryBroker
from mqkit.message import new_id
from mqkit.middleware import Idempotency, Retry, RetryPolicy, Timeout
from mqkit.stores.memory import MemoryIdempotencyStore
from mqkit.testing import wait_until


@pytest.fixture
async def client() -> Any:
    name = f"unit-{new_id()}"
    async with Client(f"memory://{name}") as c:
        yield c
    MemoryBroker.forget(name)


async def test_headers_must_be_strings(client: Client) -> None:
    with pytest.raises(ConfigurationError, match="must map str to str"):
        await client.publish("t", "x", headers={"n": 1})  # type: ignore[dict-item]


async def test_sync_handler_is_rejected_at_registration(client: Client) -> None:
    with pytest.raises(ConfigurationError, match="must be an async function"):
        client.subscribe("t")(lambda payload: None)


async def test_two_payload_parameters_are_rejected(client: Client) -> None:
    async def handler(a: int, b: int) -> None: ...

    with pytest.raises(ConfigurationError, match="two payload parameters"):
        client.subscribe("t")(handler)


async def test_settling_twice_raises(client: Client) -> None:
    await client.ensure_topic("t", groups=["g"])
    await client.publish("t", "x")
    delivery = await anext(client.consume("t", group="g"))
    await delivery.ack()
    with pytest.raises(AlreadySettledError):
        await delivery.nack()


async def test_request_without_responder_times_out_clearly(client: Client) -> None:
    with pytest.raises(RequestTimeout, match=r"no reply to 'prices' within 0\.1s"):
        await client.request("prices", {"sku": "x"}, timeout=0.1)


async def test_shutdown_gives_up_on_a_hung_handler_without_acking_it(caplog: Any) -> None:
    # Given a handler that never finishes and a short shutdown timeout
    name = f"unit-{new_id()}"
    client = Client(f"memory://{name}", middleware=[])
    client.settings.shutdown_timeout = 0.2
    started = asyncio.Event()

    @client.subscribe("t", group="g")
    async def hang(payload: str) -> None:
        started.set()
        await asyncio.sleep(3600)

    await client.start()
    await client.publish("t", "stuck")
    await asyncio.wait_for(started.wait(), 5)
    # When the client stops
    with caplog.at_level(logging.WARNING):
        await client.stop()
    # Then it warns and the message was not acked: it is still in flight for its group
    assert "did not finish" in caplog.text
    group = MemoryBroker.named(name).group("t", "g")
    assert group.depth() == 1
    await client.close()
    MemoryBroker.forget(name)


async def test_timeout_middleware_makes_a_slow_handler_a_retried_failure(client: Client) -> None:
    attempts: list[int] = []

    @client.subscribe(
        "slow",
        group="g",
        middleware=[Retry(RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.02)),
                    Timeout(0.05)],
    )
    async def handler(payload: str, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if delivery.attempt == 1:
            await asyncio.sleep(1)

    await client.start()
    await client.publish("slow", "x")
    await wait_until(lambda: attempts == [1, 2], 5)


async def test_idempotency_redelivers_while_another_worker_holds_the_key(client: Client) -> None:
    # Given a store where another worker holds a live claim on the key
    store = MemoryIdempotencyStore()
    await store.claim("g:k1", lease=60)
    seen: list[int] = []

    @client.subscribe("pay", group="g", middleware=[Idempotency(store, busy_retry_delay=0.05)])
    async def handler(payload: str, delivery: Delivery) -> None:
        seen.append(delivery.attempt)

    await client.start()
    await client.publish("pay", "x", idempotency_key="k1")
    await asyncio.sleep(0.1)
    # Then the message is not handled yet but not lost either
    assert seen == []
    # When the other worker gives up its claim
    await store.release("g:k1")
    # Then the redelivery is handled
    await wait_until(lambda: len(seen) == 1, 5)
    assert seen[0] >= 2


async def test_bad_middleware_configuration_fails_when_built() -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigurationError):
        RetryPolicy(base_delay=5, max_delay=1)
    with pytest.raises(ConfigurationError):
        Timeout(0)
    with pytest.raises(ConfigurationError, match="cannot record keys"):
        Idempotency(MemoryIdempotencyStore(), transactional=True)


async def test_handler_returning_a_value_without_reply_to_just_acks(client: Client) -> None:
    done: list[str] = []

    @client.subscribe("calc", group="g")
    async def handler(payload: int) -> int:
        done.append("x")
        return payload * 2

    await client.start()
    await client.publish("calc", 21)
    await wait_until(lambda: done == ["x"], 5)


def test_sync_publisher_publishes_from_sync_code() -> None:
    # Given a consumer on a shared memory broker, reachable from another thread's loop
    name = f"sync-{new_id()}"
    with SyncPublisher(f"memory://{name}") as publisher:
        sent = publisher.publish("orders", {"id": 1}, key="o-1")
        batch = publisher.publish_batch("orders", [{"id": 2}, {"id": 3}])
    topic = MemoryBroker.named(name).topics["orders"]
    assert [m.id for m in topic.log] == [sent.id, *(m.id for m in batch)]
    MemoryBroker.forget(name)


async def test_unsettled_deliveries_come_back_when_their_consumer_closes() -> None:
    # Given a delivery taken and never settled
    name = f"unit-{new_id()}"
    first = Client(f"memory://{name}")
    await first.ensure_topic("t", groups=["g"])
    await first.publish("t", "orphan")
    taken = await anext(first.consume("t", group="g"))
    # When its client closes without settling it
    await first.close()
    # Then another consumer of the group receives it again, as a second attempt
    async with Client(f"memory://{name}") as second:
        again = await anext(second.consume("t", group="g"))
        assert (again.message.id, again.attempt) == (taken.message.id, 2)
        await again.ack()
    MemoryBroker.forget(name)


async def test_a_failing_wildcard_handler_does_not_eat_its_own_dead_letters(
    client: Client,
) -> None:
    # Given a wildcard subscription whose handler always fails permanently
    calls: list[str] = []

    @client.subscribe("orders.#", group="g")
    async def handle(delivery: Delivery) -> None:
        calls.append(delivery.message.topic)
        raise ValueError("always")

    await client.start()
    await client.publish("orders.created", "x")
    # Then the message is dead-lettered once and the pattern does not receive the dead letter
    letter = await anext(client.consume("orders.created.dlq", group="mqkit.dlq"))
    await asyncio.sleep(0.05)
    assert calls == ["orders.created"]
    assert letter.message.headers["x-dlq-reason"] == "permanent-error"


async def test_wait_ready_on_memory_returns_once_started(client: Client) -> None:
    # Given a started subscription on the in-memory broker
    seen: list[bytes] = []

    @client.subscribe("ready.memory", group="g")
    async def handle(body: bytes, delivery: Delivery) -> None:
        seen.append(body)

    await client.start()
    # When waiting for readiness, then it returns at once, and the subscription is live
    await client.wait_ready(timeout=1)
    await client.publish("ready.memory", b"x")
    await wait_until(lambda: seen == [b"x"], 5)
