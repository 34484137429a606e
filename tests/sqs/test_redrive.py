"""Native redrive: a message received max_receive_count times moves to <topic>.dlq; replay."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from mqkit.client import DLQ_GROUP
from mqkit.message import Message
from mqkit.transport import TopicSpec
from tests.sqs.conftest import ClientMaker, TransportFactory, with_options

TIMEOUT = 30


async def test_redrive_moves_to_the_dead_letter_queue_and_mqkit_dlq_replay_brings_it_back(
    transport_factory: TransportFactory, client_maker: ClientMaker, topic: str, sqs_url: str
) -> None:
    # Given a group whose queue redrives after 2 receives
    transport = await transport_factory(max_receive_count=2, wait_time=1)
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    await transport.publish([Message(topic=topic, body=b"poison", id="poison-1")])
    # When a consumer receives it twice and never settles it (nack hands it straight back)
    attempts: list[int] = []
    async with asyncio.timeout(TIMEOUT):
        subscription = aiter(transport.subscribe(topic, "g"))
        for _ in range(2):
            delivery = await anext(subscription)
            attempts.append(delivery.attempt)
            await delivery.nack()
    assert attempts == [1, 2]
    # Then SQS moves it to the dead-letter topic's mqkit.dlq queue on the next receive
    dead_letters = transport.subscribe(f"{topic}.dlq", DLQ_GROUP)
    async with asyncio.timeout(TIMEOUT):
        dead = await anext(aiter(dead_letters))
    assert (dead.message.id, dead.message.body) == ("poison-1", b"poison")
    await dead.nack()  # leave it for the replay
    await dead_letters.aclose()  # type: ignore[attr-defined]
    # And `mqkit dlq replay` republishes it to the topic, where the group gets it afresh.
    # (A long poll the closed subscription had in flight may hold the letter for up to
    # wait_time before handing it back: the replay waits 5 s of silence, not 1.)
    url = with_options(sqs_url, max_receive_count=2, wait_time=1)
    replay = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from mqkit.cli import app; app()",
        "dlq",
        "replay",
        topic,
        "--url",
        url,
        "--idle",
        "5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ),
    )
    output, _ = await asyncio.wait_for(replay.communicate(), TIMEOUT)
    assert replay.returncode == 0, output.decode()
    assert b"replayed 1 dead letter" in output
    async with asyncio.timeout(TIMEOUT):
        again = await anext(subscription)
    assert again.message.body == b"poison"
    assert again.message.causation_id == "poison-1"
    assert again.attempt == 1
    await again.ack()


async def test_ensure_topic_is_idempotent_and_sets_the_redrive_policy(
    transport_factory: TransportFactory, topic: str
) -> None:
    # Given a topic ensured twice, the second time by another transport
    first = await transport_factory(max_receive_count=4)
    await first.ensure_topic(TopicSpec(topic, groups=("g",)))
    second = await transport_factory(max_receive_count=4)
    await second.ensure_topic(TopicSpec(topic, groups=("g",)))
    # Then the group's queue redrives to the dead-letter queue after 4 receives


    sqs = second._conn.sqs
    url = sqs.get_queue_url(QueueName=second.topology.queue_name(topic, "g"))["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    policy = json.loads(attributes["RedrivePolicy"])
    assert int(policy["maxReceiveCount"]) == 4
    assert policy["deadLetterTargetArn"].endswith(
        second.topology.queue_name(f"{topic}.dlq", DLQ_GROUP)
    )
    assert "sns.amazonaws.com" in attributes["Policy"]
    subs = second._conn.sns.list_subscriptions_by_topic(TopicArn=second.topology.topic_arn(topic))
    assert len(subs["Subscriptions"]) == 1


async def test_redrive_allows_more_receives_than_the_retry_policy_attempts(
    transport_factory: TransportFactory, topic: str
) -> None:
    # Given a subscription whose retry policy makes 9 attempts (the client passes it on)
    transport = await transport_factory(max_receive_count=5)
    await transport.ensure_topic(TopicSpec(topic, groups=("g",), max_deliveries=9))
    # Then native redrive waits past them, so the core's dead letter (with headers) comes first


    sqs = transport._conn.sqs
    url = sqs.get_queue_url(QueueName=transport.topology.queue_name(topic, "g"))["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
    assert int(json.loads(attributes["Attributes"]["RedrivePolicy"])["maxReceiveCount"]) == 10
