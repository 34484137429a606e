"""The idempotency property helper catches a handler that is not idempotent."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mqkit import Client, Idempotency
from mqkit.stores.memory import MemoryIdempotencyStore
from mqkit.testing import assert_idempotent

SCENARIO = [
    ("payments", {"id": f"p{i}", "amount": 10 * i}, {"idempotency_key": f"p{i}", "key": "acct"})
    for i in range(1, 4)
]


def idempotent_consumer(client: Client) -> Callable[[], object]:
    charges: list[str] = []

    @client.subscribe(
        "payments", group="billing", middleware=[Idempotency(MemoryIdempotencyStore())]
    )
    async def charge(payment: dict[str, object]) -> None:
        charges.append(str(payment["id"]))

    return lambda: sorted(charges)


def naive_consumer(client: Client) -> Callable[[], object]:
    charges: list[str] = []

    @client.subscribe("payments", group="billing", middleware=[])
    async def charge(payment: dict[str, object]) -> None:
        charges.append(str(payment["id"]))

    return lambda: sorted(charges)


def test_an_idempotent_consumer_passes() -> None:
    assert_idempotent(idempotent_consumer, SCENARIO, max_examples=10)


def test_a_naive_consumer_is_caught() -> None:
    with pytest.raises(AssertionError, match="effects differ under duplication"):
        assert_idempotent(naive_consumer, SCENARIO, max_examples=10)
