"""The virtual clock, ack timeouts and join(): no test here sleeps for a backoff."""

from __future__ import annotations

import asyncio
import time

import pytest

from mqkit import Client, Delivery, Idempotency, PermanentError, RetryPolicy, TransientError
from mqkit.errors import DeliveryExpired
from mqkit.memory import MemoryBroker
from mqkit.message import new_id
from mqkit.stores.memory import MemoryIdempotencyStore
from mqkit.testing import HandlerFailed, VirtualClock, join
from mqkit.testing.clock import settle


async def test_a_five_minute_backoff_runs_in_no_real_time(
    mqkit_virtual_client: Client, mqkit_clock: VirtualClock
) -> None:
    # Given a handler that fails twice, retried with minutes of backoff
    attempts: list[int] = []
    policy = RetryPolicy(max_attempts=5, base_delay=300, max_delay=600)

    @mqkit_virtual_client.subscribe("orders", group="g", retry=policy)
    async def handle(order: str, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if delivery.attempt < 3:
            raise TransientError("gateway busy")

    await mqkit_virtual_client.start()
    await mqkit_virtual_client.publish("orders", "o-1")
    started = time.monotonic()
    # When join drives the clock through the backoff
    await join(mqkit_virtual_client, clock=mqkit_clock, raise_failures=False)
    # Then the third attempt succeeded, virtual minutes passed, real time barely did
    assert attempts == [1, 2, 3]
    assert mqkit_clock.now() > 0
    assert time.monotonic() - started < 5  # a guard against real sleeping, not a benchmark


async def test_a_delayed_redelivery_waits_for_the_clock(
    mqkit_virtual_client: Client, mqkit_clock: VirtualClock
) -> None:
    client = mqkit_virtual_client
    await client.ensure_topic("t", groups=["g"])
    await client.publish("t", "x")
    consumer = client.consume("t", group="g")
    first = await anext(consumer)
    await first.nack(delay=60)
    pending = asyncio.ensure_future(anext(consumer))
    # When 59 virtual seconds pass, nothing is redelivered
    await mqkit_clock.advance(59)
    assert not pending.done()
    # When the 60th passes, it is
    await mqkit_clock.advance(1)
    again = await asyncio.wait_for(pending, 1)
    assert (again.message.id, again.attempt) == (first.message.id, 2)
    await again.ack()


async def test_ack_timeout_redelivers_and_a_late_ack_is_refused() -> None:
    # Given a memory broker with a 30-second ack timeout on a virtual clock
    clock = VirtualClock()
    name = f"acktimeout-{new_id()}"
    async with Client(f"memory://{name}", clock=clock, ack_timeout=30) as client:
        await client.ensure_topic("t", groups=["g"])
        await client.publish("t", "slow")
        consumer = client.consume("t", group="g")
        first = await anext(consumer)
        # When the consumer holds it past the timeout
        await clock.advance(30)
        second = await asyncio.wait_for(anext(consumer), 1)
        # Then it is delivered again, and the first holder's ack is refused
        assert (second.message.id, second.attempt) == (first.message.id, 2)
        with pytest.raises(DeliveryExpired):
            await first.ack()
        await second.ack()
        assert MemoryBroker.named(name).group("t", "g").depth() == 0
    MemoryBroker.forget(name)


async def test_join_re_raises_the_handlers_real_error(mqkit_memory_client: Client) -> None:
    @mqkit_memory_client.subscribe("t", group="g")
    async def handle(payload: str) -> None:
        raise PermanentError(f"cannot handle {payload}")

    await mqkit_memory_client.start()
    await mqkit_memory_client.publish("t", "poison")
    with pytest.raises(HandlerFailed, match="cannot handle poison") as info:
        await join(mqkit_memory_client)
    assert isinstance(info.value.__cause__, PermanentError)


async def test_join_returns_when_drained_and_nothing_failed(mqkit_memory_client: Client) -> None:
    seen: list[int] = []

    @mqkit_memory_client.subscribe("t", group="g")
    async def handle(n: int) -> None:
        seen.append(n)

    await mqkit_memory_client.start()
    await mqkit_memory_client.publish_batch("t", range(100))
    await join(mqkit_memory_client)
    assert sorted(seen) == list(range(100))


async def test_join_times_out_on_work_that_never_ends() -> None:
    client = Client(f"memory://join-{new_id()}")
    client.settings.shutdown_timeout = 0.1  # the handler below never finishes

    @client.subscribe("t", group="g")
    async def handle(payload: str) -> None:
        await asyncio.sleep(3600)

    await client.start()
    await client.publish("t", "forever")
    with pytest.raises(TimeoutError, match="still pending"):
        await join(client, timeout=0.2)
    await client.close()


async def test_advance_fires_timers_in_time_order() -> None:
    clock = VirtualClock()
    fired: list[str] = []
    clock.call_at(5, lambda: fired.append("5"))
    clock.call_at(1, lambda: fired.append("1"))
    clock.call_at(3, lambda: fired.append("3")).cancel()
    await clock.advance(4)
    assert fired == ["1"] and clock.now() == 4
    await clock.advance(1)
    await settle()
    assert fired == ["1", "5"]
    with pytest.raises(ValueError):
        await clock.advance(-1)


async def test_exhausted_retries_reach_the_dead_letter_topic_through_virtual_backoff(
    mqkit_virtual_client: Client, mqkit_clock: VirtualClock
) -> None:
    # Given a handler that always fails transiently, with hours of backoff between attempts
    policy = RetryPolicy(max_attempts=4, base_delay=3600, max_delay=4 * 3600)
    attempts: list[int] = []

    @mqkit_virtual_client.subscribe("orders", group="g", retry=policy)
    async def handle(order: str, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        raise TransientError("payment gateway down")

    await mqkit_virtual_client.start()
    await mqkit_virtual_client.publish("orders", "o-1")
    # When join lets virtual hours pass
    await join(mqkit_virtual_client, clock=mqkit_clock, raise_failures=False)
    # Then every attempt ran and the message is in the dead-letter topic with its headers
    assert attempts == [1, 2, 3, 4]
    letter = await anext(mqkit_virtual_client.consume("orders.dlq", group="mqkit.dlq"))
    assert letter.message.headers["x-dlq-reason"] == "retries-exhausted"
    assert letter.message.headers["x-dlq-attempts"] == "4"


async def test_a_key_held_by_another_worker_is_retried_on_the_virtual_clock(
    mqkit_virtual_client: Client, mqkit_clock: VirtualClock
) -> None:
    # Given another worker holding the idempotency key of the message
    store = MemoryIdempotencyStore()
    await store.claim("g:pay-1", lease=60)
    charged: list[int] = []

    @mqkit_virtual_client.subscribe(
        "payments", group="g", middleware=[Idempotency(store, busy_retry_delay=30)]
    )
    async def charge(payment: str, delivery: Delivery) -> None:
        charged.append(delivery.attempt)

    await mqkit_virtual_client.start()
    await mqkit_virtual_client.publish("payments", "p", idempotency_key="pay-1")
    await settle()
    assert charged == []  # held back, not lost, not charged
    # When the other worker gives up and 30 virtual seconds pass
    await store.release("g:pay-1")
    await join(mqkit_virtual_client, clock=mqkit_clock)
    # Then it is charged once, on its second delivery
    assert charged == [2]
