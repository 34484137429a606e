"""Structured logging of each delivery's outcome (stdlib ``logging`` with ``extra`` fields)."""

from __future__ import annotations

import logging
import time
from typing import Any

from mqkit.message import Delivery
from mqkit.middleware.base import Handler, group_of

log = logging.getLogger("mqkit.consumer")


class Logging:
    """Middleware: one log record per delivery with topic, group, id, attempt and duration."""

    def __init__(self, logger: logging.Logger = log, level: int = logging.DEBUG) -> None:
        self.logger = logger
        self.level = level

    def __call__(self, inner: Handler) -> Handler:
        logger, level = self.logger, self.level

        async def logged(delivery: Delivery) -> Any:
            if not logger.isEnabledFor(logging.WARNING):
                return await inner(delivery)
            started = time.perf_counter()
            fields = {
                "topic": delivery.message.topic,
                "group": group_of(delivery),
                "message_id": delivery.message.id,
                "attempt": delivery.attempt,
            }
            try:
                result = await inner(delivery)
            except Exception as exc:
                fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
                logger.warning(
                    "handler failed: %s: %s", type(exc).__name__, exc, extra={"mqkit": fields}
                )
                raise
            if logger.isEnabledFor(level):
                fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
                fields["outcome"] = delivery.settled or "ok"
                logger.log(level, "handled %s", fields["message_id"], extra={"mqkit": fields})
            return result

        return logged
