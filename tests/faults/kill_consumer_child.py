"""A consumer process for test_consumer_kill: it SIGKILLs itself at a chosen hook.

    python -m tests.faults.kill_consumer_child URL TOPIC GROUP HOOK WORKDIR
    (transport options as JSON in $MQKIT_KILL_OPTIONS; then "KILL_AFTER TOTAL" on stdin)

It starts as a warm standby: code loaded, nothing connected, until the parent writes
its line on stdin (so a restart costs the connection and the group join, not the
interpreter's start-up).

The handler records every delivery in WORKDIR/deliveries, applies the side effect in
WORKDIR/effects.db (once per message id) and returns, which acks. When this process has seen
KILL_AFTER deliveries it kills itself at HOOK:

- ``before``: the delivery is recorded, its side effect not applied;
- ``between``: the side effect is applied, the handler has not returned (not acked);
- ``after``: ``ack()`` returned (an outer middleware acks, then kills).

With KILL_AFTER 0 it never kills itself: it runs until every one of the TOTAL messages has
its side effect, stops gracefully and prints its counters as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mqkit import Client, registry
from mqkit.client import default_middleware
from mqkit.message import Delivery
from mqkit.middleware.base import Handler, Middleware
from mqkit.url import BrokerURL
from tests.faults.ledger import DeliveryLog, SideEffects

HOOKS = ("before", "between", "after")


class CrashSafeSideEffects(SideEffects):
    """``SideEffects`` committing with ``synchronous=NORMAL``: in WAL mode a commit then
    survives the death of the process (SIGKILL), and only a power cut could undo the last
    ones; it skips the fsync per message that FULL costs (about 1 ms here)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._db.execute("PRAGMA synchronous=NORMAL")


def sigkill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillingConsumer:
    """The handler and middleware of a consumer that dies at ``hook`` on its
    ``kill_after``-th delivery (never when 0) by calling ``kill``, which must not return."""

    def __init__(
        self,
        deliveries: DeliveryLog,
        effects: SideEffects,
        hook: str,
        kill_after: int,
        total: int,
        kill: Callable[[], None] = sigkill_self,
    ) -> None:
        if hook not in HOOKS:
            raise ValueError(f"hook must be one of {HOOKS}, got {hook!r}")
        self.deliveries = deliveries
        self.effects = effects
        self.hook = hook
        self.kill_after = kill_after
        self.total = total
        self.kill = kill
        self.seen = 0
        self.applied = effects.count()
        self.complete = asyncio.Event()
        self._check_complete()

    def _fatal(self, delivery: Delivery, hook: str) -> bool:
        return self.hook == hook and delivery.state.get("seen") == self.kill_after

    def _check_complete(self) -> None:
        if self.kill_after == 0 and self.applied >= self.total:
            self.complete.set()

    async def handle(self, delivery: Delivery) -> None:
        message_id = delivery.message.id
        self.deliveries.record(message_id)
        self.seen += 1
        delivery.state["seen"] = self.seen
        if self._fatal(delivery, "before"):
            self.kill()
        if self.effects.apply(message_id):
            self.applied += 1
        if self._fatal(delivery, "between"):
            self.kill()
        self._check_complete()

    def middleware(self) -> list[Middleware]:
        """mqkit's default stack, under an outer layer that acks then kills (hook ``after``)."""
        stack = default_middleware()
        if self.hook == "after" and self.kill_after:
            stack = [self._kill_after_ack, *stack]
        return stack

    def _kill_after_ack(self, inner: Handler) -> Handler:
        async def acked_then_killed(delivery: Delivery) -> Any:
            result = await inner(delivery)
            if delivery.settled is None:
                await delivery.ack()
            if self._fatal(delivery, "after"):
                self.kill()
            return result

        return acked_then_killed


async def main(
    url: str, topic: str, group: str, hook: str, kill_after: int, total: int, workdir: Path
) -> None:
    options = json.loads(os.environ.get("MQKIT_KILL_OPTIONS", "{}"))
    deliveries = DeliveryLog(workdir / "deliveries")
    effects = CrashSafeSideEffects(workdir / "effects.db")
    consumer = KillingConsumer(deliveries, effects, hook, kill_after, total)
    async with Client(url, middleware=consumer.middleware(), **options) as client:
        client.subscribe(topic, group=group)(consumer.handle)
        await client.start()
        await consumer.complete.wait()
        await client.stop()
    deliveries.close()
    effects.close()
    print(json.dumps({"seen": consumer.seen, "applied": consumer.applied}), flush=True)


if __name__ == "__main__":
    url, topic, group, hook, workdir = sys.argv[1:6]
    registry.transport_class(BrokerURL.parse(url).scheme)  # load the adapter while waiting
    line = sys.stdin.readline().split()
    if not line:  # the parent went away before releasing this standby
        raise SystemExit(1)
    kill_after, total = map(int, line)
    asyncio.run(main(url, topic, group, hook, kill_after, total, Path(workdir)))
