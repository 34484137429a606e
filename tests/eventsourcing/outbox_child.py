"""A relay process for the crash test: outbox -> a file "broker", slowly, until killed.

    python -m tests.eventsourcing.outbox_child STORE_URL PREFIX SINK_PATH

Each published message becomes one JSON line in SINK_PATH, written with ``os.write`` (so a
SIGKILL loses nothing already written), a few milliseconds apart so a kill lands mid-batch.
Exits 0 once the outbox is empty.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Sequence

from mqkit.eventsourcing import OutboxRelay, open_event_store
from mqkit.message import Delivery, Message
from mqkit.transport import Capabilities, TopicSpec


class FileSink:
    """A publish-only transport that appends each message to a file as one JSON line."""

    capabilities = Capabilities(persistent=True)

    def __init__(self, path: str, pause: float) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._pause = pause

    async def connect(self) -> None: ...

    async def close(self) -> None:
        os.close(self._fd)

    async def publish(self, messages: Sequence[Message]) -> None:
        for m in messages:
            line = {"id": m.id, "key": m.key, "topic": m.topic, "headers": dict(m.headers),
                    "body": m.body.decode()}
            os.write(self._fd, (json.dumps(line) + "\n").encode())
            await asyncio.sleep(self._pause)

    def subscribe(self, topic: str, group: str, *, prefetch: int = 10) -> AsyncIterator[Delivery]:
        raise NotImplementedError

    async def ensure_topic(self, spec: TopicSpec) -> None: ...


async def main(url: str, prefix: str, sink: str) -> None:
    store = await open_event_store(url, prefix=prefix)
    relay = OutboxRelay(store, FileSink(sink, pause=0.004), batch_size=20)
    await relay.drain()
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
