"""The outbox relay: publish outbox rows in order to any transport, then mark them sent.

Each round reads the oldest unsent rows (up to ``batch_size``), publishes them as one batch
(``Transport.publish`` returns only once the broker confirmed every message), then marks
them sent. A relay killed between the publish and the mark publishes those rows again when
it restarts: delivery is at least once, never lost. Each message's id and idempotency key
are the event id, so consumers running ``mqkit.Idempotency`` absorb the duplicates.

Run one relay per outbox: two relays would each publish the same rows (still no loss, but
more duplicates and interleaved order). A failed publish is retried after a backoff with
full jitter; rows stay in order because nothing after them is sent first.
"""

from __future__ import annotations

import asyncio
import logging

from mqkit.backoff import full_jitter
from mqkit.errors import ConfigurationError, MqkitError
from mqkit.eventsourcing.store import OutboxStore
from mqkit.transport import Transport

log = logging.getLogger("mqkit.eventsourcing.relay")


class OutboxRelay:
    """Moves ``store``'s outbox to ``transport``. ``run`` until ``stop``; ``relay_once`` for
    one round. Not safe to run two rounds of one relay at once."""

    def __init__(
        self,
        store: OutboxStore,
        transport: Transport,
        *,
        batch_size: int = 100,
        poll_interval: float = 0.05,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
    ) -> None:
        if batch_size < 1 or poll_interval <= 0:
            raise ConfigurationError("batch_size must be >= 1 and poll_interval > 0")
        self.store = store
        self.transport = transport
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.published = 0
        self._stop = asyncio.Event()

    async def relay_once(self) -> int:
        """Publish and mark one batch; the number of messages it held (0: outbox empty)."""
        rows = await self.store.pending(self.batch_size)
        if not rows:
            return 0
        await self.transport.publish([r.message for r in rows])
        await self.store.mark_sent([r.id for r in rows])
        self.published += len(rows)
        return len(rows)

    async def drain(self) -> int:
        """Relay until the outbox is empty; the number of messages published."""
        total = 0
        while n := await self.relay_once():
            total += n
        return total

    async def run(self) -> None:
        """Relay until ``stop()``; publish failures are retried with backoff and jitter."""
        self._stop.clear()
        failures = 0
        while not self._stop.is_set():
            try:
                sent = await self.relay_once()
                failures = 0
            except MqkitError as exc:
                failures += 1
                delay = full_jitter(failures, self.backoff_base, self.backoff_cap)
                log.warning("outbox relay failed (attempt %d), retrying in %.2fs: %s",
                            failures, delay, exc)
                await self._sleep(delay)
                continue
            if not sent:
                await self._sleep(self.poll_interval)

    def stop(self) -> None:
        self._stop.set()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass
