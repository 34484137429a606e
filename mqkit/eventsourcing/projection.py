"""Projections: read models built from the global stream, each with its own checkpoint.

A ``Projection`` has a ``name`` (its checkpoint's key), ``setup``/``reset`` to create and
empty its read model, and ``handle`` for one event. ``ProjectionRunner`` feeds it the
events after its checkpoint in batches; each batch's read-model writes and the new
checkpoint go through one store transaction, so on SQLite and PostgreSQL (read model in the
event store's database) they commit together: a crash replays no event twice and skips none.

Several projections run from one stream, each at its own pace. ``rebuild(name)`` empties a
read model and replays it from zero. ``wait_for(position)`` is read-your-own-writes: after
``append`` returned position ``p``, wait until the projections reached ``p``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from mqkit.errors import ConfigurationError
from mqkit.eventsourcing.events import RecordedEvent
from mqkit.eventsourcing.store import EventStore, ProjectionStore, StoreTransaction
from mqkit.eventsourcing.upcasting import Upcasters

log = logging.getLogger("mqkit.eventsourcing.projection")


@runtime_checkable
class Projection(Protocol):
    """A read model. ``handle`` must write only through ``tx`` (or be idempotent)."""

    name: str

    async def setup(self, tx: StoreTransaction) -> None:
        """Create the read model if missing (safe to run twice)."""
        ...

    async def reset(self, tx: StoreTransaction) -> None:
        """Empty the read model (before a rebuild)."""
        ...

    async def handle(self, event: RecordedEvent, tx: StoreTransaction) -> None: ...


class EventSource(EventStore, ProjectionStore, Protocol):
    """A store that holds the events and the checkpoints (every store of this package)."""


class ProjectionRunner:
    """Runs projections over ``store``'s global stream. One runner per set of projections.

    ``catch_up`` and ``rebuild`` may be called from one task at a time; ``run`` keeps
    catching up until ``stop``; ``wait_for`` may be called from any task.
    """

    def __init__(
        self,
        store: EventSource,
        projections: Iterable[Projection],
        *,
        batch_size: int = 500,
        upcasters: Upcasters | None = None,
        poll_interval: float = 0.05,
    ) -> None:
        self.store = store
        self.projections = {p.name: p for p in projections}
        if not self.projections:
            raise ConfigurationError("ProjectionRunner needs at least one projection")
        if batch_size < 1 or poll_interval <= 0:
            raise ConfigurationError("batch_size must be >= 1 and poll_interval > 0")
        self.batch_size = batch_size
        self.upcasters = upcasters or Upcasters()
        self.poll_interval = poll_interval
        self.positions: dict[str, int] = {}
        self._progress = asyncio.Condition()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    async def setup(self) -> None:
        """Create every read model and load the checkpoints."""
        for projection in self.projections.values():
            async with self.store.transaction() as tx:
                await projection.setup(tx)
            self.positions[projection.name] = await self.store.load_checkpoint(projection.name)

    async def catch_up(self, name: str | None = None) -> int:
        """Apply every available event to ``name`` (or all); the number of events applied."""
        names = [name] if name is not None else list(self.projections)
        total = 0
        for n in names:
            total += await self._catch_up_one(self._projection(n))
        return total

    async def rebuild(self, name: str) -> int:
        """Empty ``name``'s read model, reset its checkpoint to 0, and replay every event."""
        projection = self._projection(name)
        async with self.store.transaction() as tx:
            await projection.reset(tx)
            await self.store.save_checkpoint(tx, name, 0)
        self.positions[name] = 0
        return await self._catch_up_one(projection)

    async def run(self) -> None:
        """Catch up, then keep following new events until ``stop()``."""
        self._stop.clear()
        if not self.positions:
            await self.setup()
        while not self._stop.is_set():
            applied = await self.catch_up()
            if applied:
                continue
            self._wake.clear()
            waiters = [asyncio.ensure_future(self._stop.wait()),
                       asyncio.ensure_future(self._wake.wait())]
            await asyncio.wait(waiters, timeout=self.poll_interval,
                               return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()

    def notify(self) -> None:
        """New events were appended: look now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()

    async def wait_for(self, position: int, *, timeout: float = 10.0,
                       names: Iterable[str] | None = None) -> None:
        """Until every (or each named) projection applied ``position``; ``TimeoutError`` after
        ``timeout`` seconds. Checks the stored checkpoints too, so a runner in another
        process counts."""
        wanted = list(names) if names is not None else list(self.projections)
        deadline = time.monotonic() + timeout
        self.notify()
        while True:
            behind = [n for n in wanted if self.positions.get(n, 0) < position]
            for n in behind:
                # Await first, then read: the runner may advance the position meanwhile,
                # and a value read before the await would move it back (events re-applied).
                stored = await self.store.load_checkpoint(n)
                self.positions[n] = max(self.positions.get(n, 0), stored)
            if all(self.positions.get(n, 0) >= position for n in wanted):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"projections {behind} did not reach position {position} in {timeout:g}s"
                )
            async with self._progress:
                try:
                    await asyncio.wait_for(self._progress.wait(),
                                           min(remaining, self.poll_interval))
                except TimeoutError:
                    pass

    async def _catch_up_one(self, projection: Projection) -> int:
        name, applied = projection.name, 0
        if name not in self.positions:
            self.positions[name] = await self.store.load_checkpoint(name)
        while True:
            batch = await self.store.read_all(self.positions[name], limit=self.batch_size)
            if not batch:
                return applied
            async with self.store.transaction() as tx:
                for event in batch:
                    await projection.handle(self.upcasters.upcast(event), tx)
                await self.store.save_checkpoint(tx, name, batch[-1].position)
            self.positions[name] = batch[-1].position
            applied += len(batch)
            async with self._progress:
                self._progress.notify_all()
            if len(batch) < self.batch_size:
                return applied

    def _projection(self, name: str) -> Projection:
        try:
            return self.projections[name]
        except KeyError:
            raise ConfigurationError(
                f"no projection {name!r}; known: {sorted(self.projections)}"
            ) from None
