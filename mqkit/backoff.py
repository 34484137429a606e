"""Exponential backoff with full jitter, as one small pure function.

"Full jitter" (draw uniformly from zero to the exponential ceiling) spreads retries of many
failing consumers apart, which is what keeps a recovering dependency from a thundering herd.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_ceiling(attempt: int, base: float, cap: float, multiplier: float = 2.0) -> float:
    """The upper bound, in seconds, of the delay before retry number ``attempt`` (1-based).

    ``base * multiplier ** (attempt - 1)``, capped at ``cap``.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must be >= 0 seconds")
    # Cap the exponent so huge attempt counts do not overflow a float.
    exponent = min(attempt - 1, 64)
    return min(cap, base * multiplier**exponent)


def full_jitter(
    attempt: int,
    base: float,
    cap: float,
    multiplier: float = 2.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """A delay in seconds drawn uniformly from ``[0, backoff_ceiling(...)]``."""
    return rand() * backoff_ceiling(attempt, base, cap, multiplier)
