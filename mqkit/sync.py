"""Publishing from sync code (Django, Flask, scripts): a client on a private event loop thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from mqkit.message import Message
from mqkit.settings import Settings

T = TypeVar("T")


class SyncPublisher:
    """A blocking publisher. Thread-safe; each call blocks until the broker confirmed.

    ``with SyncPublisher("amqp://...") as pub: pub.publish("orders", {"id": 1})``
    """

    def __init__(self, url: str | Settings | None = None, **options: Any) -> None:
        from mqkit.client import Client

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="mqkit-sync-publisher", daemon=True
        )
        self._thread.start()
        self._client = self._call(self._make(Client, url, options))

    @staticmethod
    async def _make(cls: Any, url: Any, options: dict[str, Any]) -> Any:
        client = cls(url, **options)
        await client.connect()
        return client

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if not self._thread.is_alive():
            coro.close()
            raise RuntimeError("SyncPublisher is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def publish(self, topic: str, payload: Any, **fields: Any) -> Message:
        result: Message = self._call(self._client.publish(topic, payload, **fields))
        return result

    def publish_batch(self, topic: str, payloads: list[Any], **fields: Any) -> list[Message]:
        result: list[Message] = self._call(self._client.publish_batch(topic, payloads, **fields))
        return result

    def close(self) -> None:
        """Close the client and stop the loop thread. Safe to call twice."""
        if not self._thread.is_alive():
            return
        try:
            self._call(self._client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()

    def __enter__(self) -> SyncPublisher:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
