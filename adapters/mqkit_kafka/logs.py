"""librdkafka's own log lines into Python logging, secrets scrubbed.

Without a ``logger`` option librdkafka writes to file descriptor 2, where an application's
logging configuration (levels, handlers, JSON formatters) never sees it. With one, its lines
are served by the producer's and consumers' poll calls and reach ``mqkit.kafka.librdkafka``.
"""

from __future__ import annotations

import logging
from typing import Any

from mqkit.url import redact_text, redact_urls_in_text

LOGGER = logging.getLogger("mqkit.kafka.librdkafka")


class LibrdkafkaLog:
    """The object confluent-kafka's ``logger`` option calls: ``log(level, fmt, *args)``
    with a Python logging level. Scrubs the transport's secret values and URL credentials."""

    def __init__(self, secrets: list[str]) -> None:
        self._secrets = list(secrets)

    def log(self, level: int, msg: str, *args: Any) -> None:
        if not LOGGER.isEnabledFor(level):
            return
        text = msg % args if args else msg
        LOGGER.log(level, "%s", redact_text(redact_urls_in_text(text), self._secrets))
