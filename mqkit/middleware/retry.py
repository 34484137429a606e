"""Retry transient failures with exponential backoff and full jitter, via the broker.

A transient failure is nacked with a delay, so the broker redelivers it later while other
messages keep flowing; nothing sleeps inside the handler. Optional quick in-process retries
come first for blips that clear in milliseconds. Permanent errors are never retried; once
``max_attempts`` deliveries have failed the error propagates to the dead-letter layer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from mqkit.backoff import full_jitter
from mqkit.errors import Classifier, ConfigurationError, ErrorKind, default_classifier
from mqkit.message import Delivery
from mqkit.middleware.base import Handler

log = logging.getLogger("mqkit.retry")

EXHAUSTED = "retries-exhausted"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry. Seconds throughout."""

    max_attempts: int = 5
    """Deliveries in all, the first included, before the message is dead-lettered."""
    base_delay: float = 0.5
    max_delay: float = 300.0
    multiplier: float = 2.0
    immediate_retries: int = 0
    """Quick in-process retries of a transient failure before going back to the broker."""
    immediate_delay: float = 0.01
    classifier: Classifier = field(default=default_classifier, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError("RetryPolicy.max_attempts must be >= 1")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ConfigurationError("RetryPolicy needs 0 <= base_delay <= max_delay")
        if self.multiplier < 1:
            raise ConfigurationError("RetryPolicy.multiplier must be >= 1")
        if self.immediate_retries < 0 or self.immediate_delay < 0:
            raise ConfigurationError("RetryPolicy immediate retries and delay must be >= 0")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before redelivering after failed delivery number ``attempt``."""
        return full_jitter(attempt, self.base_delay, self.max_delay, self.multiplier)


class Retry:
    """Middleware: nack transient failures with a backoff delay until attempts run out."""

    def __init__(self, policy: RetryPolicy | None = None) -> None:
        self.policy = policy or RetryPolicy()

    def __call__(self, inner: Handler) -> Handler:
        policy = self.policy
        classify = policy.classifier.classify

        async def retry(delivery: Delivery) -> Any:
            quick = policy.immediate_retries
            while True:
                try:
                    return await inner(delivery)
                except Exception as exc:
                    if delivery.settled is not None or classify(exc) is ErrorKind.PERMANENT:
                        raise
                    if quick > 0:
                        quick -= 1
                        await asyncio.sleep(policy.immediate_delay)
                        continue
                    if delivery.attempt >= policy.max_attempts:
                        delivery.state["failure"] = EXHAUSTED
                        raise
                    delay = policy.delay(delivery.attempt)
                    log.info(
                        "retrying %s in %.3fs (attempt %d of %d): %s",
                        delivery.message.id,
                        delay,
                        delivery.attempt,
                        policy.max_attempts,
                        type(exc).__name__,
                    )
                    await delivery.nack(delay=delay)
                    return None

        return retry
