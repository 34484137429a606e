"""Remote steps: commands over a transport, answered by participants, idempotent by key.

Runs on memory:// and on each real broker in ``BROKERS`` (a broker whose adapter is not
ready is left out of the list: a one-line change).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mqkit.client import Client
from mqkit.middleware import Idempotency, RetryPolicy
from mqkit.saga import Orchestrator, Saga, SagaState, Step, StepFailed, participant, remote
from mqkit.saga.store_memory import MemorySagaStore
from mqkit.stores import MemoryIdempotencyStore
from tests.brokers import broker_url

BROKERS = ["sqs", "jetstream", "rabbitmq", "kafka"]  # adapters whose conformance suite passes
FAST = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2)


@pytest.fixture(params=["memory", *BROKERS])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://saga-{uuid.uuid4().hex[:8]}"
    return broker_url(request.param)


class Services:
    """Inventory and payments as participants; ``effects`` counts what each really did."""

    def __init__(self, client: Client, prefix: str) -> None:
        self.effects: Counter[str] = Counter()
        self.prefix = prefix
        keys = MemoryIdempotencyStore()
        for name in ("reserve", "release", "charge", "refund"):
            self._serve(client, name, keys)

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def _serve(self, client: Client, name: str, keys: MemoryIdempotencyStore) -> None:
        @participant(client, self.topic(name), group=name, middleware=[Idempotency(keys)],
                     retry=FAST)
        async def handle(command: dict[str, Any]) -> dict[str, Any]:
            if name == "charge" and command["data"]["card"] == "declined":
                raise StepFailed("card declined")
            self.effects[f"{name}:{command['saga_id']}"] += 1
            return {"by": name}


@pytest.fixture
async def setup(url: str) -> AsyncIterator[tuple[Orchestrator, Services, Saga]]:
    prefix = f"saga-{uuid.uuid4().hex[:8]}"
    async with Client(url) as workers, Client(url) as api:
        services = Services(workers, prefix)
        await workers.start()
        saga = Saga("remote-order", [
            Step("reserve-inventory", remote(services.topic("reserve")),
                 remote(services.topic("release")), timeout=30),
            Step("charge-payment", remote(services.topic("charge")),
                 remote(services.topic("refund")), timeout=30),
        ])
        orchestrator = Orchestrator(MemorySagaStore(), [saga], client=api,
                                    reply_topic=f"{prefix}.replies")
        yield orchestrator, services, saga
        await orchestrator.close()


async def test_remote_steps_complete_a_saga(
    setup: tuple[Orchestrator, Services, Saga],
) -> None:
    # Given inventory and payment services answering commands
    orchestrator, services, saga = setup

    # When an order with a good card runs
    outcome = await orchestrator.start(saga, {"card": "ok"})

    # Then each service acted once and replied with its result
    assert outcome.state is SagaState.COMPLETED
    assert outcome.results == {"reserve-inventory": {"by": "reserve"},
                               "charge-payment": {"by": "charge"}}
    assert services.effects == Counter({f"reserve:{outcome.id}": 1, f"charge:{outcome.id}": 1})


async def test_a_remote_refusal_compensates_remotely(
    setup: tuple[Orchestrator, Services, Saga],
) -> None:
    # Given the payment service declines the card
    orchestrator, services, saga = setup

    # When the order runs
    outcome = await orchestrator.start(saga, {"card": "declined"})

    # Then the reservation was released over the transport, and nothing was charged
    assert outcome.state is SagaState.COMPENSATED
    assert outcome.error is not None and "card declined" in outcome.error
    assert services.effects == Counter({f"reserve:{outcome.id}": 1,
                                        f"release:{outcome.id}": 1})


async def test_a_repeated_command_has_no_second_effect(
    setup: tuple[Orchestrator, Services, Saga],
) -> None:
    # Given a saga that completed
    orchestrator, services, saga = setup
    outcome = await orchestrator.start(saga, {"card": "ok"})

    # When its first command is sent again with its key (as recovery does after a crash)
    caller = orchestrator._caller
    assert caller is not None
    again = await caller.request(services.topic("reserve"), {"saga_id": outcome.id,
                                                             "data": {"card": "ok"}},
                                 idempotency_key=f"{outcome.id}:reserve-inventory:action",
                                 saga_id=outcome.id)

    # Then the participant answered success without acting twice
    assert again is None  # a duplicate's reply carries no result
    assert services.effects[f"reserve:{outcome.id}"] == 1
