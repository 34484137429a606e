"""In-process idempotency store: a dict with expiry. For tests and single-process demos."""

from __future__ import annotations

import time
from collections.abc import Callable

from mqkit.stores.base import Claim


class MemoryIdempotencyStore:
    """Keys kept in this process only; lost on exit. ``clock`` is injectable for tests."""

    SWEEP_MIN = 100_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # key -> (done, expires_at)
        self._keys: dict[str, tuple[bool, float]] = {}
        self._sweep_at = self.SWEEP_MIN

    async def claim(self, key: str, lease: float) -> Claim:
        now = self._clock()
        found = self._keys.get(key)
        if found is not None and found[1] > now:
            return Claim.DONE if found[0] else Claim.BUSY
        self._keys[key] = (False, now + lease)
        if len(self._keys) > self._sweep_at:
            self._expire(now)
            # Sweep again only after the live set doubled: amortised O(1) per claim.
            self._sweep_at = max(self.SWEEP_MIN, 2 * len(self._keys))
        return Claim.NEW

    async def complete(self, key: str, ttl: float) -> None:
        self._keys[key] = (True, self._clock() + ttl)

    async def release(self, key: str) -> None:
        found = self._keys.get(key)
        if found is not None and not found[0]:
            del self._keys[key]

    async def close(self) -> None:
        pass

    def _expire(self, now: float) -> None:
        for key in [k for k, (_, exp) in self._keys.items() if exp <= now]:
            del self._keys[key]

    def __len__(self) -> int:
        return len(self._keys)
