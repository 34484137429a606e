"""How a team tests its own consumer with mqkit.testing (run: pytest examples/testing).

The payment consumer must charge each payment once although the broker may deliver it
several times. The property helper delivers every payment 2-3 times, in shuffled order
across accounts, with lost acks, and compares the charges with a clean run.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mqkit import Client, Delivery, Idempotency, RetryPolicy, TransientError
from mqkit.stores.memory import MemoryIdempotencyStore
from mqkit.testing import VirtualClock, assert_idempotent, join

PAYMENTS = [
    ("payments", {"payment_id": f"pay-{n}", "account": f"acct-{n % 2}", "cents": 500 * n},
     {"idempotency_key": f"pay-{n}", "key": f"acct-{n % 2}"})
    for n in range(1, 5)
]


def payment_consumer(idempotent: bool) -> Callable[[Client], Callable[[], object]]:
    def build(client: Client) -> Callable[[], object]:
        ledger: dict[str, int] = {}
        stack = [Idempotency(MemoryIdempotencyStore())] if idempotent else []

        @client.subscribe("payments", group="billing", middleware=stack)
        async def charge(payment: dict[str, str | int]) -> None:
            account = str(payment["account"])
            ledger[account] = ledger.get(account, 0) + int(payment["cents"])

        return lambda: dict(sorted(ledger.items()))

    return build


def test_the_idempotent_consumer_charges_once_under_duplication() -> None:
    assert_idempotent(payment_consumer(idempotent=True), PAYMENTS, max_examples=15)


def test_the_property_catches_a_consumer_that_double_charges() -> None:
    with pytest.raises(AssertionError, match="effects differ"):
        assert_idempotent(payment_consumer(idempotent=False), PAYMENTS, max_examples=15)


async def test_a_flaky_gateway_is_retried_with_backoff_without_waiting(
    mqkit_virtual_client: Client, mqkit_clock: VirtualClock
) -> None:
    # Given a gateway that times out twice, and a retry policy with minutes of backoff
    calls: list[int] = []

    @mqkit_virtual_client.subscribe(
        "payments", group="billing", retry=RetryPolicy(base_delay=120, max_delay=600)
    )
    async def charge(payment: dict[str, str], delivery: Delivery) -> None:
        calls.append(delivery.attempt)
        if delivery.attempt <= 2:
            raise TransientError("gateway timeout")

    await mqkit_virtual_client.start()
    await mqkit_virtual_client.publish("payments", {"payment_id": "pay-1"})
    # When the test lets virtual time run
    await join(mqkit_virtual_client, clock=mqkit_clock, raise_failures=False)
    # Then the charge went through on the third attempt
    assert calls == [1, 2, 3]
