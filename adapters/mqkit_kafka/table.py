"""A table view of a compacted topic: the latest value of each key.

``table_view`` reads every partition from its beginning to the end it had when the call
started (without joining a consumer group or committing anything) and folds the records:
a later value replaces an earlier one, a tombstone (null value) removes its key. Records
without a key are ignored. It blocks a worker thread, not the event loop.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from mqkit.message import Message
from mqkit.url import BrokerURL
from mqkit_kafka.config import KafkaConfig
from mqkit_kafka.errors import UnknownTopicError, convert
from mqkit_kafka.headers import decode, decode_headers


async def table_view(url: str | BrokerURL, topic: str, timeout: float = 30.0) -> dict[str, Message]:
    """The latest message of each key of ``topic`` (tombstoned keys are absent)."""
    config = KafkaConfig.from_url(url if isinstance(url, BrokerURL) else BrokerURL.parse(url))
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _read, config, topic, timeout)


def _read(config: KafkaConfig, topic: str, timeout: float) -> dict[str, Message]:
    conf = config.consumer_conf(
        f"mqkit-table-{uuid.uuid4().hex}",
        **{"enable.auto.commit": False, "isolation.level": "read_committed"},
    )
    consumer = Consumer(conf)
    try:
        meta = consumer.list_topics(topic, timeout=config.connect_timeout)
        info = meta.topics.get(topic)
        if info is None or info.error is not None:
            raise UnknownTopicError(f"topic {topic!r} does not exist")
        ends: dict[int, int] = {}
        for partition in info.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=config.connect_timeout
            )
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        view: dict[str, Message] = {}
        waiting = dict(ends)
        deadline = _now() + timeout
        while waiting:
            if _now() > deadline:
                raise TimeoutError(f"reading {topic!r} took longer than {timeout:g}s")
            records: list[Any] = consumer.consume(1000, 0.2)
            for record in records:
                if record.error() is not None:
                    continue
                p, offset = record.partition(), record.offset()
                key = record.key()
                if key is not None and offset < ends.get(p, 0):
                    _, ts = record.timestamp()
                    message, _ = decode(topic, p, offset, key, record.value(),
                                        decode_headers(record.headers()), ts)
                    if record.value() is None:
                        view.pop(message.key or "", None)
                    else:
                        view[message.key or ""] = message
                if offset + 1 >= ends.get(p, 0):
                    waiting.pop(p, None)
            # Transaction markers and compacted gaps have no record: ask for the position.
            for tp in consumer.position([TopicPartition(topic, p) for p in list(waiting)]):
                if tp.offset >= 0 and tp.offset >= ends[tp.partition]:
                    waiting.pop(tp.partition, None)
        return view
    except KafkaException as exc:
        raise convert(exc, f"reading the table {topic!r}", secrets=config.secrets) from exc
    finally:
        consumer.close()


def _now() -> float:
    return time.monotonic()
