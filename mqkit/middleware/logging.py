"""Structured logging of each delivery's outcome (stdlib ``logging`` with ``extra`` fields)."""

from __future__ import annotations

import logging
import time
from typing import Any

from mqkit.message import Delivery
from mqkit.middleware.base import Handler, group_of
from mqkit.url import redact_urls_in_text

log = logging.getLogger("mqkit.consumer")


class Logging:
    """Middleware: one log record per delivery with topic, group, id, attempt and duration."""

    def __init__(self, logger: logging.Logger = log, level: int = logging.DEBUG) -> None:
        self.logger = logger
        self.level = level

    def __call__(self, inner: Handler) -> Handler:
        logger, level = self.logger, self.level

        def fields(delivery: Delivery, started: float) -> dict[str, Any]:
            return {
                "topic": delivery.message.topic,
                "group": group_of(delivery),
                "message_id": delivery.message.id,
                "attempt": delivery.attempt,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                "outcome": delivery.settled or "ok",
            }

        async def logged(delivery: Delivery) -> Any:
            # The fields are built only when a record is written: this runs per message.
            started = time.perf_counter()
            try:
                result = await inner(delivery)
            except Exception as exc:
                if logger.isEnabledFor(logging.WARNING):
                    logger.warning(
                        "handler failed: %s: %s",
                        type(exc).__name__,
                        redact_urls_in_text(str(exc)),
                        extra={"mqkit": fields(delivery, started)},
                    )
                raise
            if logger.isEnabledFor(level):
                extra = {"mqkit": fields(delivery, started)}
                logger.log(level, "handled %s", delivery.message.id, extra=extra)
            return result

        return logged
