"""Interop with raw boto3 both ways, many headers, binary and empty bodies, the size limit."""

from __future__ import annotations

import asyncio
import json

import pytest

from mqkit.errors import MessageTooLarge
from mqkit.message import Message
from mqkit.transport import TopicSpec
from tests.sqs.conftest import TransportFactory, raw_client

TIMEOUT = 30


async def test_raw_boto3_producer_to_mqkit_consumer(
    transport_factory: TransportFactory, topic: str, sqs_url: str
) -> None:
    # Given a group's queue made by mqkit
    transport = await transport_factory(wait_time=1)
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    # When a plain boto3 producer publishes to the SNS topic with two attributes
    sns = raw_client(sqs_url, "sns")
    sent = await asyncio.to_thread(
        sns.publish,
        TopicArn=transport.topology.topic_arn(topic),
        Message='{"order": 7}',
        MessageAttributes={
            "content-type": {"DataType": "String", "StringValue": "application/json"},
            "tenant": {"DataType": "String", "StringValue": "acme"},
        },
    )
    # Then mqkit reads its body, and its attributes as headers
    async with asyncio.timeout(TIMEOUT):
        delivery = await anext(aiter(transport.subscribe(topic, "g")))
    await delivery.ack()
    message = delivery.message
    assert message.body == b'{"order": 7}'
    assert message.headers == {"content-type": "application/json", "tenant": "acme"}
    assert message.topic == topic and message.id  # SQS's own message id
    assert sent["MessageId"]
    assert delivery.attempt == 1


async def test_mqkit_producer_to_raw_boto3_consumer(
    transport_factory: TransportFactory, topic: str, sqs_url: str
) -> None:
    # Given a group's queue and a plain boto3 consumer of it
    transport = await transport_factory()
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    sqs = raw_client(sqs_url, "sqs")
    url = sqs.get_queue_url(QueueName=transport.topology.queue_name(topic, "g"))["QueueUrl"]
    # When mqkit publishes a JSON message with a key and headers
    sent = Message(topic=topic, body=b'{"a": 1}', key="k-1", headers={"tenant": "acme"})
    await transport.publish([sent])
    # Then the raw consumer reads the body as is and mqkit's headers in the "mqkit" attribute
    reply = await asyncio.to_thread(
        sqs.receive_message, QueueUrl=url, MessageAttributeNames=["All"], WaitTimeSeconds=5
    )
    [raw] = reply["Messages"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=raw["ReceiptHandle"])
    assert raw["Body"] == '{"a": 1}'
    envelope = json.loads(raw["MessageAttributes"]["mqkit"]["StringValue"])
    assert (envelope["id"], envelope["k"], envelope["h"]) == (sent.id, "k-1", {"tenant": "acme"})


async def test_fifteen_headers_binary_and_empty_bodies_round_trip(
    transport_factory: TransportFactory, topic: str
) -> None:
    # Given 15 headers (SQS carries at most 10 attributes), a binary body and an empty one
    transport = await transport_factory(wait_time=1)
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    headers = {f"x-header-{i}": f"välue {i} ✓" for i in range(15)}
    sent = [
        Message(topic=topic, body=b"text", headers=headers, key="ключ"),
        Message(topic=topic, body=bytes(range(256)) + b"\x00\xff"),
        Message(topic=topic, body=b""),
    ]
    await transport.publish(sent)
    # When they are received
    got: dict[str, Message] = {}
    async with asyncio.timeout(TIMEOUT):
        async for delivery in transport.subscribe(topic, "g"):
            got[delivery.message.id] = delivery.message
            await delivery.ack()
            if len(got) == 3:
                break
    # Then each comes back exactly as sent
    for message in sent:
        back = got[message.id]
        assert (back.body, back.key, dict(back.headers)) == (
            message.body,
            message.key,
            dict(message.headers),
        )
        assert back.timestamp == pytest.approx(message.timestamp)


async def test_oversize_message_is_refused_before_sending(
    transport_factory: TransportFactory, topic: str
) -> None:
    # Given a message whose body fits 256 KiB but whose encoding (binary: base64) does not
    transport = await transport_factory()
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    limit = transport.capabilities.max_message_bytes
    small = Message(topic=topic, body=b"fine")
    big = Message(topic=topic, body=b"\xff" * (limit - 1000))
    # When both are published in one call
    with pytest.raises(MessageTooLarge, match=r"at most 262144") as caught:
        await transport.publish([small, big])
    # Then the error names the message, and nothing was sent (the small one neither)
    assert big.id in str(caught.value)
    sqs = transport._conn.sqs
    url = sqs.get_queue_url(QueueName=transport.topology.queue_name(topic, "g"))["QueueUrl"]
    reply = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    assert reply.get("Messages", []) == []
