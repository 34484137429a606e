"""Absorb duplicate deliveries: a message whose key was already handled is acked unhandled.

The key comes from the idempotency-key header (falling back to the message id, which
absorbs broker redeliveries) or from a function of the message; it is scoped by group, since
every group handles each message once. With a transactional store (SQLite, PostgreSQL) and
``transactional=True`` the key is recorded in the same database transaction as the handler's
effects, which the handler reaches through ``current_transaction()``: the effect and the key
commit together or not at all.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

from mqkit.errors import ConfigurationError
from mqkit.message import Delivery, Message
from mqkit.middleware.base import Handler, group_of
from mqkit.stores.base import (
    Claim,
    IdempotencyStore,
    StoreTransaction,
    TransactionalIdempotencyStore,
)

log = logging.getLogger("mqkit.idempotency")

_transaction: contextvars.ContextVar[StoreTransaction | None] = contextvars.ContextVar(
    "mqkit_idempotency_transaction", default=None
)


def current_transaction() -> StoreTransaction:
    """The store transaction the running handler's effects should be written through."""
    tx = _transaction.get()
    if tx is None:
        raise RuntimeError(
            "no idempotency transaction: use Idempotency(store, transactional=True) "
            "with a SQLite or PostgreSQL store"
        )
    return tx


def default_key(message: Message) -> str:
    return message.idempotency_key or message.id


class Idempotency:
    """Middleware: handle each key at most once per group (exactly once with a transaction)."""

    def __init__(
        self,
        store: IdempotencyStore,
        *,
        key: Callable[[Message], str | None] = default_key,
        ttl: float = 7 * 24 * 3600,
        lease: float = 60.0,
        transactional: bool = False,
        busy_retry_delay: float = 1.0,
    ) -> None:
        if ttl <= 0 or lease <= 0:
            raise ConfigurationError("Idempotency needs ttl > 0 and lease > 0 seconds")
        if transactional and not isinstance(store, TransactionalIdempotencyStore):
            raise ConfigurationError(
                f"{type(store).__name__} cannot record keys in the handler's transaction; "
                "use a SQLite or PostgreSQL store, or transactional=False"
            )
        self.store = store
        self.key = key
        self.ttl = ttl
        self.lease = lease
        self.transactional = transactional
        self.busy_retry_delay = busy_retry_delay

    def __call__(self, inner: Handler) -> Handler:
        if self.transactional:
            return self._transactional(inner)
        store, ttl, lease, key_of = self.store, self.ttl, self.lease, self.key

        async def idempotent(delivery: Delivery) -> Any:
            raw = key_of(delivery.message)
            if raw is None:
                return await inner(delivery)
            key = f"{delivery.state.get('group', '')}:{raw}"  # group_of, inlined: per message
            claim = await store.claim(key, lease)
            if claim is Claim.DONE:
                delivery.state["duplicate"] = True
                log.info("duplicate %s absorbed (key %s)", delivery.message.id, raw)
                return None
            if claim is Claim.BUSY:
                # Another consumer is handling the same key right now: look again later.
                await delivery.nack(delay=self.busy_retry_delay)
                return None
            try:
                result = await inner(delivery)
            except BaseException:
                await store.release(key)
                raise
            await store.complete(key, ttl)
            return result

        return idempotent

    def _transactional(self, inner: Handler) -> Handler:
        store = self.store
        assert isinstance(store, TransactionalIdempotencyStore)
        ttl, key_of = self.ttl, self.key

        async def idempotent_tx(delivery: Delivery) -> Any:
            raw = key_of(delivery.message)
            if raw is None:
                return await inner(delivery)
            async with store.transaction(f"{group_of(delivery)}:{raw}", ttl) as tx:
                if tx is None:
                    delivery.state["duplicate"] = True
                    log.info("duplicate %s absorbed (key %s)", delivery.message.id, raw)
                    return None
                token = _transaction.set(tx)
                try:
                    return await inner(delivery)
                finally:
                    _transaction.reset(token)

        return idempotent_tx
