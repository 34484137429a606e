"""On the real Kafka: consume-transform-produce in transactions survives a hard kill."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter

import confluent_kafka as ck

from mqkit.message import Message
from mqkit.transport import TopicSpec
from mqkit_kafka import KafkaTransport
from tests.brokers import ROOT
from tests.kafka.helpers import bootstrap, topic_name

COUNT = 200


async def run_worker(*args: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.kafka.txn_worker", *args, cwd=ROOT,
    )
    async with asyncio.timeout(90):
        return await proc.wait()


def read_all(url: str, topic: str, isolation: str, expect_at_least: int) -> list[bytes]:
    """Every record of ``topic`` visible at ``isolation``, read up to the log end."""
    consumer = ck.Consumer({
        "bootstrap.servers": bootstrap(url), "group.id": f"reader-{time.monotonic_ns()}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "isolation.level": isolation, "enable.partition.eof": True,
    })
    got: list[bytes] = []
    try:
        consumer.subscribe([topic])
        at_eof: set[int] = set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for record in consumer.consume(1000, 0.2):
                if record.error() is not None:
                    if record.error().code() == ck.KafkaError._PARTITION_EOF:
                        at_eof.add(record.partition())
                    continue
                at_eof.discard(record.partition())
                got.append(record.value())
            if len(at_eof) == 4 and len(got) >= expect_at_least:
                break
    finally:
        consumer.close()
    return got


async def test_killed_processor_leaves_no_output_and_restart_outputs_each_once(
    kafka_url: str,
) -> None:
    # Given inputs 0..199 and an empty output topic
    source, output = topic_name("txn-in"), topic_name("txn-out")
    group, txn_id = f"g-{source}", f"txn-{source}"
    transport = KafkaTransport(kafka_url)
    await transport.connect()
    try:
        await transport.ensure_topic(TopicSpec(source))
        await transport.ensure_topic(TopicSpec(output))
        await transport.publish(
            [Message(topic=source, body=str(n).encode(), key=f"k{n}") for n in range(COUNT)]
        )
    finally:
        await transport.close()
    args = (kafka_url, source, output, group, txn_id, str(COUNT))
    # When a processor is killed after producing its outputs and before committing
    assert await run_worker(*args, "--die-before-commit") == 17
    # Then the aborted outputs reached the log (read_uncommitted sees some)...
    uncommitted = await asyncio.to_thread(read_all, kafka_url, output, "read_uncommitted", 1)
    assert len(uncommitted) > 0
    # ...and after a restart (same transactional id) read_committed sees one output per input
    assert await run_worker(*args) == 0
    committed = await asyncio.to_thread(read_all, kafka_url, output, "read_committed", COUNT)
    assert Counter(committed) == Counter(str(n * 2).encode() for n in range(COUNT))
