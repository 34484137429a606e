"""Seeded chaos on the memory transport, and capability requirements checked at start."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from mqkit import Client, ConfigurationError, ConnectionFailed, Delivery, Idempotency
from mqkit.memory import Chaos, MemoryBroker, MemoryTransport
from mqkit.message import new_id
from mqkit.stores.memory import MemoryIdempotencyStore
from mqkit.testing import join
from mqkit.transport import Requirements


def memory_url() -> str:
    return f"memory://chaos-{new_id()}"


async def run_keyed_scenario(chaos: Chaos) -> list[tuple[str, int]]:
    """The order a single worker sees 30 keyed messages in, under ``chaos``."""
    url = memory_url()
    seen: list[tuple[str, int]] = []
    async with Client(url, chaos=chaos) as client:

        @client.subscribe("t", group="g", concurrency=1, middleware=[])
        async def handle(item: dict[str, int | str]) -> None:
            seen.append((str(item["key"]), int(item["n"])))

        await client.start()
        items = [{"key": f"k{i % 3}", "n": i} for i in range(30)]
        await client.publish_batch("t", items, key=lambda item: str(item["key"]))
        await join(client)
    MemoryBroker.forget(url[len("memory://") :])
    return seen


async def test_same_seed_same_run_and_order_kept_within_each_key() -> None:
    first = await run_keyed_scenario(Chaos(seed=7, reorder=True))
    second = await run_keyed_scenario(Chaos(seed=7, reorder=True))
    other = await run_keyed_scenario(Chaos(seed=8, reorder=True))
    assert first == second
    assert first != [(f"k{i % 3}", i) for i in range(30)]  # it did reorder across keys
    assert other != first
    for key in ("k0", "k1", "k2"):
        ns = [n for k, n in first if k == key]
        assert ns == sorted(ns)


async def test_duplicates_reach_a_naive_handler_and_idempotency_absorbs_them() -> None:
    url = memory_url()
    naive: Counter[int] = Counter()
    guarded: Counter[int] = Counter()
    async with Client(url, chaos=Chaos(seed=1, duplicate=3)) as client:

        @client.subscribe("t", group="naive")
        async def count(n: int) -> None:
            naive[n] += 1

        @client.subscribe(
            "t", group="guarded", middleware=[Idempotency(MemoryIdempotencyStore())]
        )
        async def count_once(n: int) -> None:
            guarded[n] += 1

        await client.start()
        await client.publish_batch("t", range(10))
        await join(client)
    assert naive == {n: 3 for n in range(10)}
    assert guarded == {n: 1 for n in range(10)}


async def test_transient_publish_failures_store_nothing_of_their_batch() -> None:
    url = memory_url()
    async with Client(url, chaos=Chaos(seed=3, publish_failure_rate=0.5)) as client:
        results = []
        for n in range(20):
            try:
                await client.publish("t", n)
                results.append(True)
            except ConnectionFailed:
                results.append(False)
        stored = MemoryBroker.named(url[len("memory://") :]).topics["t"].log
    assert 0 < results.count(False) < 20
    assert len(stored) == results.count(True)


async def test_a_crash_between_effect_and_ack_redelivers_and_repeats_the_effect() -> None:
    url = memory_url()
    effects: Counter[int] = Counter()
    async with Client(url, chaos=Chaos(seed=5, crash_before_ack_rate=0.3)) as client:

        @client.subscribe("t", group="g", middleware=[])
        async def handle(n: int, delivery: Delivery) -> None:
            effects[n] += 1

        await client.start()
        await client.publish_batch("t", range(20))
        await join(client)
    assert set(effects) == set(range(20))  # nothing lost
    assert sum(effects.values()) > 20  # some effects happened twice: the crash is real


def test_chaos_rejects_nonsense() -> None:
    with pytest.raises(ConfigurationError):
        Chaos(duplicate=0)
    with pytest.raises(ConfigurationError):
        Chaos(redeliver_rate=1.5)


async def test_requirements_the_transport_cannot_meet_fail_at_start() -> None:
    # Given a transport that promises no key order and delays of at most 15 minutes
    transport = MemoryTransport(memory_url())
    transport.capabilities = dataclasses.replace(
        transport.capabilities, ordered_by_key=False, max_delay=900.0
    )
    client = Client(transport=transport)

    @client.subscribe(
        "ledger", group="g", requires=Requirements(ordered_by_key=True, max_delay=3600)
    )
    async def handle(entry: dict[str, int]) -> None: ...

    # When the client starts, then it refuses with every reason named
    with pytest.raises(ConfigurationError) as info:
        await client.start()
    text = str(info.value)
    assert "ordered_by_key is not offered" in text
    assert "delays up to 3600s" in text and "900s" in text
    await client.close()


async def test_requirements_that_are_met_start_normally(mqkit_memory_client: Client) -> None:
    @mqkit_memory_client.subscribe(
        "t", group="g", requires=Requirements(ordered_by_key=True, at_least_once=True,
                                              max_delay=86400)
    )
    async def handle(n: int) -> None: ...

    await mqkit_memory_client.start()
