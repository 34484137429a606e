import os
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

boto3 = pytest.importorskip("boto3")


def _client(service: str, sqs_url: str) -> Any:
    url = urlsplit(sqs_url)
    region = parse_qs(url.query).get("region", [os.environ.get("AWS_DEFAULT_REGION", "us-east-1")])
    return boto3.client(
        service,
        endpoint_url=f"http://{url.netloc}",
        region_name=region[0],
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    )


def test_sqs_send_receive_delete(sqs_url: str) -> None:
    sqs = _client("sqs", sqs_url)
    queue = sqs.create_queue(QueueName=f"smoke-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    try:
        sqs.send_message(
            QueueUrl=queue,
            MessageBody="hello",
            MessageAttributes={"kind": {"DataType": "String", "StringValue": "smoke"}},
        )
        got = sqs.receive_message(
            QueueUrl=queue, MaxNumberOfMessages=1, WaitTimeSeconds=2, MessageAttributeNames=["All"]
        )["Messages"]
        assert got[0]["Body"] == "hello"
        assert got[0]["MessageAttributes"]["kind"]["StringValue"] == "smoke"
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=got[0]["ReceiptHandle"])
        assert not sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0).get("Messages")
    finally:
        sqs.delete_queue(QueueUrl=queue)


def test_sns_fans_out_to_sqs(sqs_url: str) -> None:
    sqs, sns = _client("sqs", sqs_url), _client("sns", sqs_url)
    name = f"smoke-{uuid.uuid4().hex[:12]}"
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    topic = sns.create_topic(Name=name)["TopicArn"]
    try:
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
        sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=arn["Attributes"]["QueueArn"],
            Attributes={"RawMessageDelivery": "true"},
        )
        sns.publish(TopicArn=topic, Message="fan-out")
        got = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=2)["Messages"]
        assert got[0]["Body"] == "fan-out"
    finally:
        sns.delete_topic(TopicArn=topic)
        sqs.delete_queue(QueueUrl=queue)
