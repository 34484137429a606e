"""Store protocols. A store is used through these so the same middleware runs on each backend.

Idempotency keys have three states. ``claim`` atomically takes a key that is new (or whose
previous claim's lease ran out, meaning its worker died), reports it ``DONE`` if a handler
already completed it, or ``BUSY`` while another worker holds a live claim. ``complete``
records success for ``ttl`` seconds; ``release`` drops a claim after a failure so a retry
can take it again.

A ``TransactionalIdempotencyStore`` can also record the key in the same database
transaction as the handler's side effects, so the two commit or roll back together: the
only way to get exactly-once effects out of at-least-once delivery.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

Params = Sequence[Any] | Mapping[str, Any]  # one statement's parameters, as DB-API takes them


class Claim(enum.Enum):
    NEW = "new"
    DONE = "done"
    BUSY = "busy"


@runtime_checkable
class IdempotencyStore(Protocol):
    """Keys of handled messages. Safe to use from many tasks and processes at once."""

    async def claim(self, key: str, lease: float) -> Claim: ...

    async def complete(self, key: str, ttl: float) -> None: ...

    async def release(self, key: str) -> None: ...

    async def close(self) -> None: ...


class StoreTransaction(Protocol):
    """An open database transaction; ``connection`` is the driver's connection for effects."""

    connection: Any


@runtime_checkable
class TransactionalIdempotencyStore(IdempotencyStore, Protocol):
    def transaction(self, key: str, ttl: float) -> AbstractAsyncContextManager[
        StoreTransaction | None
    ]:
        """Open a transaction that records ``key``; yields None if ``key`` was already done.

        Leaving the block normally commits the key and every effect written through
        ``connection``; an exception rolls both back. Concurrent holders of the same key wait
        for each other (a unique constraint), so at most one commits.
        """
        ...


