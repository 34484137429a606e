"""Dead-letter tooling: inspect leaves dead letters in place; replay moves them back."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mqkit import dlq
from mqkit import headers as h
from mqkit.client import Client
from mqkit.memory import MemoryBroker
from mqkit.message import Message
from mqkit.testing.waiting import wait_until


class BadAmount(ValueError):
    """A permanent error: the order's amount does not parse."""


class UnknownCustomer(LookupError):
    """Another permanent error type."""


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    name = f"dlq-{uuid.uuid4().hex[:8]}"
    async with Client(f"memory://{name}") as c:
        yield c
    MemoryBroker.forget(name)


async def dead_letter(client: Client, orders: list[dict[str, Any]]) -> list[Message]:
    """Run a consumer that rejects every order, and return the dead letters it produced."""
    letters: list[Message] = []

    @client.subscribe("orders", group="billing")
    async def bill(order: dict[str, Any]) -> None:
        if order["problem"] == "amount":
            raise BadAmount(f"amount {order['amount']!r} is not a number")
        raise UnknownCustomer(order["customer"])

    @client.subscribe("orders.dlq", group="watcher")
    async def watch(message: Message) -> None:
        letters.append(message)

    await client.start()
    for order in orders:
        await client.publish("orders", order, key=order["id"], idempotency_key=order["id"])
    await wait_until(lambda: len(letters) == len(orders), timeout=5, what="dead letters")
    await client.stop()
    return letters


ORDERS = [
    {"id": "o-1", "problem": "amount", "amount": "twelve", "customer": "c-1"},
    {"id": "o-2", "problem": "customer", "amount": 5, "customer": "c-404"},
    {"id": "o-3", "problem": "amount", "amount": "lots", "customer": "c-3"},
]


async def test_inspect_returns_dead_letters_and_leaves_them_in_place(client: Client) -> None:
    # Given three orders that were dead-lettered
    letters = await dead_letter(client, ORDERS)

    # When the dead-letter topic is inspected twice
    first = await dlq.inspect(client, "orders", idle=0.2)
    second = await dlq.inspect(client, "orders.dlq", idle=0.2)

    # Then both reads see the same three dead letters: nothing was removed
    assert sorted(m.id for m in first) == sorted(m.id for m in letters)
    assert sorted(m.id for m in second) == sorted(m.id for m in first)
    assert {m.headers[h.DLQ_ORIGINAL_TOPIC] for m in first} == {"orders"}


async def test_inspect_stops_at_limit(client: Client) -> None:
    # Given three dead letters
    await dead_letter(client, ORDERS)

    # When at most two are asked for
    some = await dlq.inspect(client, "orders", limit=2, idle=0.2)

    # Then two come back, and all three are still there afterwards
    assert len(some) == 2
    assert len(await dlq.inspect(client, "orders", idle=0.2)) == 3


async def test_inspect_of_an_empty_dead_letter_topic_is_empty(client: Client) -> None:
    # Given a topic that never failed; when it is inspected; then there is nothing
    assert await dlq.inspect(client, "quiet", idle=0.1) == []


async def test_summarize_counts_by_error_type(client: Client) -> None:
    # Given dead letters of two error types
    letters = await dead_letter(client, ORDERS)

    # When they are summarised
    counts = dlq.summarize(letters)

    # Then each type is counted, most frequent first
    assert counts == {"BadAmount": 2, "UnknownCustomer": 1}
    assert list(counts) == ["BadAmount", "UnknownCustomer"]


async def test_replay_publishes_a_fresh_copy_and_removes_the_dead_letter(client: Client) -> None:
    # Given one dead-lettered order and a fixed consumer listening on the original topic
    [letter] = await dead_letter(client, ORDERS[:1])
    received: list[Message] = []
    progress: list[tuple[str, str]] = []
    fixed = Client(client.url.raw)

    @fixed.subscribe("orders", group="audit")
    async def audit(message: Message) -> None:
        received.append(message)

    await fixed.start()

    # When the dead letter is replayed
    result = await dlq.replay(
        client, "orders", idle=0.2, on_progress=lambda old, new: progress.append((old.id, new.id))
    )

    # Then one copy went back to "orders" with a new id naming the dead letter as its cause
    assert (result.replayed, result.skipped) == (1, 0)
    await wait_until(lambda: len(received) == 1, timeout=5, what="replayed copy")
    copy = received[0]
    assert copy.topic == "orders"
    assert copy.id != letter.id
    assert copy.causation_id == letter.id
    assert copy.idempotency_key == "o-1"
    assert copy.body == letter.body
    assert h.DLQ_REPLAYED_AT in copy.headers
    # and the dead-letter headers are gone, so the copy starts fresh
    assert not set(h.DLQ_HEADERS) & set(copy.headers)
    assert progress == [(letter.id, copy.id)]
    # and the dead letter itself was acked: the dead-letter topic is empty
    assert await dlq.inspect(client, "orders", idle=0.2) == []
    await fixed.close()


async def test_replay_leaves_dead_letters_its_own_copies_produced(client: Client) -> None:
    # Given a dead letter whose consumer is still broken
    await dead_letter(client, ORDERS[:1])
    await client.start()  # the failing billing consumer runs again

    # When it is replayed (the copy fails at once and is dead-lettered again)
    result = await dlq.replay(client, "orders", idle=0.3)

    # Then the replay ends, having replayed the old letter once and left the new one alone
    assert result.replayed == 1
    [left] = await dlq.inspect(client, "orders", idle=0.2)
    assert left.causation_id == result.copies[0].causation_id
    assert left.id == result.copies[0].id


async def test_replay_filters_by_error_type_and_leaves_the_rest(client: Client) -> None:
    # Given two BadAmount and one UnknownCustomer dead letters
    await dead_letter(client, ORDERS)

    # When only BadAmount is replayed
    result = await dlq.replay(client, "orders.dlq", error_type="BadAmount", idle=0.2)

    # Then two were replayed, one skipped, and only the UnknownCustomer one remains
    assert (result.replayed, result.skipped) == (2, 1)
    assert {c.idempotency_key for c in result.copies} == {"o-1", "o-3"}
    left = await dlq.inspect(client, "orders", idle=0.2)
    assert [dlq.error_type_of(m) for m in left] == ["UnknownCustomer"]


async def test_replay_stops_at_limit(client: Client) -> None:
    # Given three dead letters
    await dead_letter(client, ORDERS)

    # When at most one is replayed
    result = await dlq.replay(client, "orders", limit=1, idle=0.2)

    # Then one was replayed and two are left
    assert result.replayed == 1
    assert len(await dlq.inspect(client, "orders", idle=0.2)) == 2


def test_replay_copy_falls_back_to_the_topic_name_without_suffix() -> None:
    # Given a dead letter without an original-topic header
    letter = Message(topic="payments.dlq", body=b"{}", headers={h.DLQ_REASON: "x"})

    # When its replay copy is built
    copy = dlq.replay_copy(letter, "payments.dlq", replayed_at=1.5)

    # Then it goes to "payments", stamped with the replay time
    assert copy.topic == "payments"
    assert copy.headers[h.DLQ_REPLAYED_AT] == "1.500000"
    assert dlq.error_type_of(letter) == "x"
