"""Partial batch failures (with a stub client), configuration and connection errors."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from mqkit.errors import ConfigurationError, ConnectionFailed, PublishError
from mqkit.message import Message
from mqkit.url import BrokerURL
from mqkit_sqs import SqsTransport, UnknownTopicError
from mqkit_sqs.config import SqsConfig
from mqkit_sqs.publisher import Publisher
from mqkit_sqs.topology import Topology
from tests.sqs.conftest import TransportFactory


class StubSns:
    """Fails the entries named in ``plan`` (one list of failures per call, then none)."""

    def __init__(self, plan: list[dict[int, tuple[str, bool]]]) -> None:
        self.plan = plan
        self.calls: list[list[str]] = []

    def publish_batch(self, TopicArn: str, PublishBatchRequestEntries: list[Any]) -> Any:
        ids = [e["Id"] for e in PublishBatchRequestEntries]
        self.calls.append(ids)
        failing = self.plan.pop(0) if self.plan else {}
        failed = [
            {"Id": i, "Code": failing[int(i)][0], "SenderFault": failing[int(i)][1]}
            for i in ids
            if int(i) in failing
        ]
        ok = [{"Id": i, "MessageId": i} for i in ids if int(i) not in failing]
        return {"Successful": ok, "Failed": failed}


class StubConnection:
    region = "us-east-1"

    def __init__(self, sns: StubSns) -> None:
        self.sns = sns

    async def call(self, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
        return fn(**kwargs)


def publisher(sns: StubSns) -> Publisher:
    config = SqsConfig()
    conn: Any = StubConnection(sns)
    topology = Topology(conn, config)
    topology.set_identity("aws", "123456789012")
    return Publisher(conn, topology, config)


def batch(n: int) -> list[Message]:
    return [Message(topic="t", body=str(i).encode(), id=f"m{i}") for i in range(n)]


async def test_failed_entries_of_a_batch_are_resent_alone() -> None:
    # Given SNS fails entries 3 and 7 once with a fault that is not the sender's
    sns = StubSns([{3: ("InternalError", False), 7: ("Throttling", True)}])
    # When a batch of 10 is published
    await publisher(sns).publish(batch(10))
    # Then exactly those two were sent again, and the call succeeded
    assert sns.calls == [[str(i) for i in range(10)], ["3", "7"]]


async def test_entries_that_keep_failing_are_raised_by_message_id() -> None:
    # Given SNS refuses entry 2 as the sender's fault and fails entry 5 on every attempt
    plan = [{2: ("InvalidParameter", True), 5: ("InternalError", False)}] + [
        {5: ("InternalError", False)}
    ] * 10
    sns = StubSns(plan)
    # When a batch of 6 is published
    with pytest.raises(PublishError, match="2 of 6") as caught:
        await publisher(sns).publish(batch(6))
    # Then the error names both messages; the others were accepted on the first call
    assert "m2: InvalidParameter" in str(caught.value)
    assert "m5: InternalError" in str(caught.value)
    assert sns.calls[1:] == [["5"]] * (len(sns.calls) - 1)


async def test_more_than_ten_messages_go_in_batches_of_ten() -> None:
    sns = StubSns([])
    await publisher(sns).publish(batch(25))
    assert sorted(len(c) for c in sns.calls) == [5, 10, 10]


def test_bad_options_and_credentials_in_the_url_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="unknown sqs:// options"):
        SqsTransport("sqs://127.0.0.1:5000?regoin=us-east-1")
    with pytest.raises(ConfigurationError, match="mode must be one of"):
        SqsTransport("sqs://127.0.0.1:5000?mode=kafka")
    with pytest.raises(ConfigurationError, match="no credentials in the URL") as caught:
        SqsTransport(BrokerURL.parse("sqs://AKIA:s3cr3t@127.0.0.1:5000"))
    assert "s3cr3t" not in str(caught.value)


async def test_unreachable_endpoint_fails_fast_with_connection_failed() -> None:
    # Given an endpoint where nothing listens
    transport = SqsTransport("sqs://127.0.0.1:9?region=us-east-1&connect_timeout=1")
    started = time.monotonic()
    # Then connect raises ConnectionFailed within seconds
    with pytest.raises(ConnectionFailed, match="cannot reach"):
        await transport.connect()
    assert time.monotonic() - started < 10


async def test_publishing_to_a_topic_nobody_created_is_a_clear_error(
    transport_factory: TransportFactory, topic: str
) -> None:
    transport = await transport_factory()
    with pytest.raises(UnknownTopicError, match="ensure_topic"):
        await transport.publish([Message(topic=topic, body=b"lost?")])
