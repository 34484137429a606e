import time
import uuid
from urllib.parse import urlsplit

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402


def test_kafka_topic_produce_transaction_consume(kafka_url: str) -> None:
    bootstrap = urlsplit(kafka_url).netloc
    run = uuid.uuid4().hex[:12]
    topic = f"smoke-{run}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    try:
        producer = ck.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        producer.produce(topic, key=b"k1", value=b"plain")
        assert producer.flush(15) == 0

        txn = ck.Producer({"bootstrap.servers": bootstrap, "transactional.id": f"smoke-{run}"})
        txn.init_transactions(30)
        txn.begin_transaction()
        txn.produce(topic, key=b"k2", value=b"in-transaction")
        txn.commit_transaction(30)

        consumer = ck.Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"smoke-{run}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        try:
            consumer.subscribe([topic])
            got: list[bytes] = []
            deadline = time.monotonic() + 30
            while len(got) < 2 and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                assert msg.error() is None, msg.error()
                got.append(msg.value())
                consumer.commit(msg, asynchronous=False)
            assert got == [b"plain", b"in-transaction"]
        finally:
            consumer.close()
    finally:
        admin.delete_topics([topic])[topic].result(30)
