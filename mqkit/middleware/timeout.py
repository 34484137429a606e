"""Bound a handler's running time; running over is a transient ``HandlerTimeout``."""

from __future__ import annotations

import asyncio
from typing import Any

from mqkit.errors import ConfigurationError, HandlerTimeout
from mqkit.message import Delivery
from mqkit.middleware.base import Handler


class Timeout:
    """Middleware: cancel the handler after ``seconds`` and raise ``HandlerTimeout``."""

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ConfigurationError("Timeout needs seconds > 0")
        self.seconds = seconds

    def __call__(self, inner: Handler) -> Handler:
        seconds = self.seconds

        async def timeout(delivery: Delivery) -> Any:
            try:
                async with asyncio.timeout(seconds):
                    return await inner(delivery)
            except TimeoutError as exc:
                raise HandlerTimeout(
                    f"handler for {delivery.message.topic!r} ran over {seconds:g}s"
                ) from exc

        return timeout
