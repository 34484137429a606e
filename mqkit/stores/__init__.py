"""Stores behind small protocols: idempotency keys today; saga, event and offset stores later.

``open_idempotency_store(url)`` picks the backend from a URL: ``memory://``,
``sqlite:///path.db`` (the embedded default), ``redis://host:port/db`` (``SET NX EX``) or
``postgresql://user:pass@host/db`` (unique constraint).
"""

from mqkit.stores.base import (
    Claim,
    IdempotencyStore,
    StoreTransaction,
    TransactionalIdempotencyStore,
)
from mqkit.stores.factory import open_idempotency_store
from mqkit.stores.memory import MemoryIdempotencyStore

__all__ = [
    "Claim",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "StoreTransaction",
    "TransactionalIdempotencyStore",
    "open_idempotency_store",
]
