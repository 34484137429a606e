"""Property-based checks (hypothesis) that a consumer's effects survive redelivery.

At-least-once brokers deliver some messages more than once. ``assert_idempotent`` runs a
scenario once with each message delivered exactly once, then many times with hypothesis
choosing how often each message is delivered (and, with ``reorder``, in which order across
keys), and asserts the effects are always the same as the single-delivery run::

    def build(client: Client) -> Callable[[], object]:
        charges: list[str] = []

        @client.subscribe("payments", group="billing", middleware=[Idempotency(store())])
        async def charge(p: dict) -> None:
            charges.append(p["id"])

        return lambda: sorted(charges)        # the effects to compare

    assert_idempotent(build, [("payments", {"id": "p1"}, {"idempotency_key": "p1"})])

Call it from a plain (sync) test; it runs its own event loops.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqkit.client import Client
from mqkit.memory import Chaos, MemoryBroker
from mqkit.message import new_id
from mqkit.testing.join import join

Scenario = Sequence[tuple[str, Any, dict[str, Any]]]
Build = Callable[[Client], Callable[[], Any]]


async def _run(build: Build, scenario: Scenario, chaos: Chaos | None) -> Any:
    name = f"property-{new_id()}"
    options: dict[str, Any] = {"chaos": chaos} if chaos else {}
    client = Client(f"memory://{name}", **options)
    try:
        effects = build(client)
        await client.start()
        for topic, payload, fields in scenario:
            await client.publish(topic, payload, **fields)
        await join(client, raise_failures=False)
        return effects()
    finally:
        await client.close()
        MemoryBroker.forget(name)


def _in_fresh_loop(coro_factory: Callable[[], Any]) -> Any:
    # Runs in a thread of its own, so it works from sync tests and inside a running loop.
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro_factory())
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


def assert_idempotent(
    build: Build,
    scenario: Scenario,
    *,
    max_copies: int = 3,
    reorder: bool = True,
    max_examples: int = 25,
) -> None:
    """Fail (with hypothesis' smallest counterexample) if duplicates change the effects."""
    expected = _in_fresh_loop(lambda: _run(build, scenario, None))

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        copies=st.integers(min_value=2, max_value=max_copies),
        seed=st.integers(min_value=0, max_value=2**32 - 1),
        redeliver_rate=st.sampled_from([0.0, 0.3]),
    )
    def check(copies: int, seed: int, redeliver_rate: float) -> None:
        chaos = Chaos(
            seed=seed, duplicate=copies, reorder=reorder, redeliver_rate=redeliver_rate
        )
        got = _in_fresh_loop(lambda: _run(build, scenario, chaos))
        assert got == expected, (
            f"effects differ under duplication (copies={copies}, seed={seed}, "
            f"redeliver_rate={redeliver_rate}): {got!r} != {expected!r}"
        )

    check()
