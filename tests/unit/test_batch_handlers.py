"""Batch handlers: one call per batch, settlement per message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mqkit import Client, ConfigurationError, PermanentError
from mqkit import headers as h
from mqkit.batching import BatchConsumer
from mqkit.memory import MemoryBroker
from mqkit.message import Message, new_id
from mqkit.middleware import RetryPolicy
from mqkit.testing import wait_until


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    name = f"batch-{new_id()}"
    async with Client(f"memory://{name}") as c:
        yield c
    MemoryBroker.forget(name)


async def test_handler_gets_lists_and_every_message_is_acked(client: Client) -> None:
    # Given a batch handler of up to 100
    batches: list[list[int]] = []

    @client.subscribe("nums", group="g", batch_size=100, batch_timeout=0.05)
    async def handle(numbers: list[int]) -> None:
        batches.append(numbers)

    await client.start()
    # When 250 messages arrive
    await client.publish_batch("nums", range(250))
    # Then they come in batches of at most 100, in order, all of them, all acked
    await wait_until(lambda: sum(map(len, batches)) >= 250, 5)
    assert [n for batch in batches for n in batch] == list(range(250))
    assert max(map(len, batches)) <= 100 and len(batches) >= 3
    group = MemoryBroker.named(client.url.host or "").group("nums", "g")
    await wait_until(lambda: group.depth() == 0, 5)


async def test_undecodable_message_is_dead_lettered_alone(client: Client) -> None:
    got: list[list[int]] = []

    @client.subscribe("nums", group="g", batch_size=10, batch_timeout=0.05)
    async def handle(numbers: list[int]) -> None:
        got.append(numbers)

    await client.start()
    await client.publish_messages([
        client.message("nums", 1),
        Message("nums", b"{oops", headers={h.CONTENT_TYPE: "application/json"}),
        client.message("nums", 2),
    ])
    letter = await anext(client.consume("nums.dlq", group="mqkit.dlq"))
    await wait_until(lambda: sum(map(len, got)) >= 2, 5)
    assert [n for b in got for n in b] == [1, 2]
    assert letter.message.headers[h.DLQ_ERROR_TYPE] == "DecodeError"


async def test_failing_batch_is_retried_then_dead_lettered_per_message(client: Client) -> None:
    calls: list[list[int]] = []

    @client.subscribe(
        "nums", group="g", batch_size=10, batch_timeout=0.05,
        retry=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02),
    )
    async def handle(numbers: list[int]) -> None:
        calls.append(numbers)
        raise ConnectionError("db down")

    await client.start()
    await client.publish_batch("nums", [1, 2])
    dlq = client.consume("nums.dlq", group="mqkit.dlq")
    letters = [await anext(dlq), await anext(dlq)]
    assert sorted(d.message.body for d in letters) == [b"1", b"2"]
    assert {d.message.headers[h.DLQ_REASON] for d in letters} == {"retries-exhausted"}
    assert sum(map(len, calls)) == 4  # two messages, two attempts each


async def test_permanent_failure_dead_letters_the_batch_at_once(client: Client) -> None:
    calls = 0

    @client.subscribe("nums", group="g", batch_size=10, batch_timeout=0.05)
    async def handle(numbers: list[int]) -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("schema retired")

    await client.start()
    await client.publish_batch("nums", [7])
    letter = await anext(client.consume("nums.dlq", group="mqkit.dlq"))
    assert letter.message.headers[h.DLQ_REASON] == "permanent-error" and calls == 1


async def test_batch_handler_must_take_a_list(client: Client) -> None:
    async def handle(number: int) -> None: ...

    with pytest.raises(ConfigurationError, match="must take list"):
        client.subscribe("nums", batch_size=10)(handle)


class _ClosedSource:
    """A source whose takes come back empty at once, as a closed subscription's do."""

    def __init__(self) -> None:
        self.takes = 0
        self.closed = False

    def __aiter__(self) -> _ClosedSource:
        return self

    async def __anext__(self) -> Any:
        raise StopAsyncIteration

    async def take(self, max_items: int, timeout: float) -> list[Any]:
        self.takes += 1
        return []

    async def aclose(self) -> None:
        self.closed = True


async def test_a_source_that_answers_empty_at_once_is_not_spun_on() -> None:
    # Given a batch consumer on a source that returns nothing without waiting
    source = _ClosedSource()

    async def handle(items: list[bytes]) -> None: ...

    consumer = BatchConsumer("t", "g", source, handle, bytes, batch_size=10,
                             batch_timeout=0.05, retry=RetryPolicy())
    consumer.start()
    # When it runs for half a second, then the event loop stays free (this sleep returns)
    # and the source is asked a handful of times, not in a tight loop
    await asyncio.sleep(0.5)
    assert 1 <= source.takes <= 20
    # And stopping it is prompt and closes the source
    async with asyncio.timeout(2):
        await consumer.stop()
    assert source.closed
