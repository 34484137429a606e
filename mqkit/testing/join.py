"""Run a memory:// client until its subscriptions have nothing left to do.

``await join(client)`` returns once every group the client subscribed has no message waiting,
delayed, blocked or in flight, then re-raises the first exception a handler raised, so a
test fails on the handler's real error instead of a timeout. With a ``VirtualClock``, delayed
redeliveries (retry backoff) are brought forward by advancing the clock, so a test of a
five-minute backoff finishes in milliseconds.
"""

from __future__ import annotations

import asyncio
import time

from mqkit.client import Client
from mqkit.errors import ConfigurationError
from mqkit.memory import MemoryTransport
from mqkit.memory._broker import Group
from mqkit.testing.clock import VirtualClock, settle


class HandlerFailed(AssertionError):
    """A handler raised while ``join`` waited; the original is ``__cause__``."""


def _groups(client: Client) -> list[Group]:
    transport = client.transport
    if not isinstance(transport, MemoryTransport):
        raise ConfigurationError("join() works on memory:// clients only")
    broker = transport.broker
    groups: list[Group] = []
    for spec, _, _ in client._subscriptions:
        groups.append(broker.group(spec.topic, spec.group))
    for batch in client._batch_subscriptions:
        groups.append(broker.group(batch[0].topic, batch[0].group))
    return groups


async def join(
    client: Client,
    *,
    timeout: float = 10.0,
    clock: VirtualClock | None = None,
    raise_failures: bool = True,
) -> None:
    """Wait until the client's groups are drained; then re-raise the first handler failure.

    ``timeout`` is real seconds. Raises ``TimeoutError`` if work remains after it.
    """
    groups = _groups(client)
    deadline = time.monotonic() + timeout
    while True:
        await settle()
        if all(g.depth() == 0 for g in groups):
            break
        waiting_only_on_time = all(
            not g.ready and not g.inflight and not g.blocked for g in groups
        )
        if clock is not None and waiting_only_on_time:
            due = clock.next_due()
            if due is not None:
                await clock.advance(max(0.0, due - clock.now()))
                continue
        if time.monotonic() > deadline:
            left = sum(g.depth() for g in groups)
            raise TimeoutError(f"join(): {left} message(s) still pending after {timeout:g}s")
        await asyncio.sleep(0.001)
    if raise_failures and client.failures:
        delivery, exc = client.failures[0]
        raise HandlerFailed(
            f"handler for {delivery.message.topic!r} raised {type(exc).__name__}: {exc} "
            f"({len(client.failures)} failure(s) in all)"
        ) from exc
