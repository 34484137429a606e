"""A transactional processor in its own process (for the kill test).

    python -m tests.kafka.txn_worker URL INPUT OUTPUT GROUP TXN_ID COUNT [--die-before-commit]

Doubles each input into OUTPUT (key and id kept). With --die-before-commit the process
exits hard (``os._exit``) after the first batch's outputs reached the broker and before the
transaction commits. Otherwise it runs until COUNT inputs were committed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from mqkit.message import Message
from mqkit_kafka import TransactionalProcessor


def main(argv: list[str]) -> None:
    url, source, output, group, txn_id, count = argv[:6]
    die = "--die-before-commit" in argv

    async def double(message: Message) -> Sequence[Message]:
        n = int(message.body)
        return [Message(topic=output, body=str(n * 2).encode(), key=message.key,
                        id=f"out-{message.id}")]

    def before_commit() -> None:
        if die:
            os._exit(17)  # killed between producing and committing

    async def run() -> None:
        processor = TransactionalProcessor(
            url, input_topic=source, group=group, transactional_id=txn_id,
            transform=double, batch_size=1000, before_commit=before_commit,
        )
        try:
            async with asyncio.timeout(60):
                while processor.processed < int(count):
                    await processor.process_batch()
        finally:
            await processor.close()

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1:])
