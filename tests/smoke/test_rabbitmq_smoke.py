import uuid

import pytest

pika = pytest.importorskip("pika")


def test_rabbitmq_publish_confirmed_then_basic_get(rabbitmq_url: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()  # basic_publish now raises unless the broker confirms
        queue = f"smoke-{uuid.uuid4().hex[:12]}"
        ch.queue_declare(queue, durable=True)
        try:
            ch.basic_publish(
                "",
                queue,
                b"hello",
                pika.BasicProperties(delivery_mode=2, message_id=queue),
                mandatory=True,
            )
            method, props, body = ch.basic_get(queue, auto_ack=False)
            assert method is not None and body == b"hello" and props.message_id == queue
            ch.basic_ack(method.delivery_tag)
            assert ch.basic_get(queue, auto_ack=True) == (None, None, None)
        finally:
            ch.queue_delete(queue)
    finally:
        conn.close()
