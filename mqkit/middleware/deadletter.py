"""Dead-letter what cannot succeed: permanent errors and exhausted retries.

The message goes to ``<topic>.dlq`` with headers naming the error type, message, traceback,
attempts, original topic and failure time; the original is acked only after the broker
confirmed the dead-letter copy.
"""

from __future__ import annotations

import logging
from typing import Any

from mqkit import headers as h
from mqkit.errors import Classifier, ErrorKind, default_classifier
from mqkit.message import DLQ_SUFFIX, Delivery
from mqkit.middleware.base import Handler, group_of
from mqkit.middleware.retry import EXHAUSTED
from mqkit.url import redact_urls_in_text

log = logging.getLogger("mqkit.deadletter")

PERMANENT = "permanent-error"
DEAD_LETTER_RETRY_DELAY = 60.0


class DeadLetter:
    """Middleware: move failed messages to the dead-letter topic instead of losing them."""

    def __init__(self, classifier: Classifier = default_classifier) -> None:
        self.classifier = classifier

    def __call__(self, inner: Handler) -> Handler:
        classify = self.classifier.classify

        async def dead_letter(delivery: Delivery) -> Any:
            try:
                return await inner(delivery)
            except Exception as exc:
                if delivery.settled is not None:
                    raise
                if delivery.message.topic.endswith(DLQ_SUFFIX):
                    # A dead letter failing again has nowhere further to go: leave it in its
                    # dead-letter topic, and not in a hot loop.
                    log.error(
                        "handler failed on dead letter %s in %s; left in place: %s: %s",
                        delivery.message.id,
                        delivery.message.topic,
                        type(exc).__name__,
                        redact_urls_in_text(str(exc)),
                    )
                    await delivery.nack(delay=DEAD_LETTER_RETRY_DELAY)
                    return None
                if classify(exc) is ErrorKind.PERMANENT:
                    reason = PERMANENT
                else:
                    reason = delivery.state.get("failure", EXHAUSTED)
                group = {h.DLQ_GROUP: group_of(delivery)} if group_of(delivery) else None
                await delivery.dead_letter(reason, error=exc, extra_headers=group)
                log.warning(
                    "dead-lettered %s from %s after %d attempt(s): %s: %s",
                    delivery.message.id,
                    delivery.message.topic,
                    delivery.attempt,
                    type(exc).__name__,
                    redact_urls_in_text(str(exc)),
                )
                return None

        return dead_letter
