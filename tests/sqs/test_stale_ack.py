"""Stale acks and the ``extend_visibility`` option: a settlement after the visibility ran out
is sent anyway and logged as a warning; without the heartbeat a long handler's message
comes back."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from mqkit.errors import ConfigurationError
from mqkit.message import Message
from mqkit.testing import wait_until
from mqkit.transport import TopicSpec
from mqkit.url import BrokerURL
from mqkit_sqs.config import SqsConfig
from mqkit_sqs.subscriber import Subscription
from tests.sqs.conftest import TransportFactory

STALE = "passed its ack timeout"
TIMEOUT = 30


def stale_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if STALE in r.getMessage()]


def test_extend_visibility_is_on_by_default_and_parsed_like_other_flags() -> None:
    url = BrokerURL.parse("sqs://127.0.0.1:5000?region=us-east-1")
    assert SqsConfig.from_url(url).extend_visibility is True
    off = BrokerURL.parse("sqs://127.0.0.1:5000?region=us-east-1&extend_visibility=false")
    assert SqsConfig.from_url(off).extend_visibility is False
    assert SqsConfig.from_url(url, extend_visibility="no").extend_visibility is False
    with pytest.raises(ConfigurationError, match="extend_visibility"):
        SqsConfig.from_url(url, extend_visibility="sometimes")


async def test_without_extension_a_late_ack_is_logged_stale_and_still_sent(
    transport_factory: TransportFactory, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a 1 s visibility timeout and extension turned off
    caplog.set_level(logging.WARNING, logger="mqkit.sqs")
    transport = await transport_factory(
        visibility_timeout=1, wait_time=1, extend_visibility="false"
    )
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    await transport.publish([Message(topic=topic, body=b"slow")])
    sub = transport.subscribe(topic, "g")
    async with asyncio.timeout(TIMEOUT):
        first = await anext(sub)
        # When the handler outlives the visibility: SQS hands the message out again
        again = await anext(sub)
    assert (again.message.id, again.attempt) == (first.message.id, 2)
    # Then the first handler's late ack raises nothing and is logged as stale, once
    await first.ack()
    [record] = stale_records(caplog)
    assert record.levelno == logging.WARNING
    assert "stale ack" in record.getMessage() and first.message.id in record.getMessage()
    # And the redelivery's timely ack is not stale
    await again.ack()
    assert len(stale_records(caplog)) == 1
    assert isinstance(sub, Subscription) and len(sub._tasks) == 1  # the poller alone


async def test_with_extension_a_long_handler_acks_without_warning(
    transport_factory: TransportFactory, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a 1 s visibility timeout, extended by default
    caplog.set_level(logging.WARNING, logger="mqkit.sqs")
    transport = await transport_factory(visibility_timeout=1, wait_time=1)
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    await transport.publish([Message(topic=topic, body=b"slow")])
    sub = transport.subscribe(topic, "g")
    async with asyncio.timeout(TIMEOUT):
        delivery = await anext(sub)
    # When the handler runs 2.5 visibility timeouts
    await asyncio.sleep(2.5)
    await delivery.ack()
    # Then its lease was extended all along: the ack is not stale
    assert stale_records(caplog) == []
    assert delivery.attempt == 1


async def test_an_extension_that_came_too_late_still_makes_the_ack_stale(
    transport_factory: TransportFactory, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a 1 s visibility timeout, extended every 1/3 s
    caplog.set_level(logging.WARNING, logger="mqkit.sqs")
    transport = await transport_factory(visibility_timeout=1, wait_time=1)
    await transport.ensure_topic(TopicSpec(topic, groups=("g",)))
    await transport.publish([Message(topic=topic, body=b"slow")])
    sub = transport.subscribe(topic, "g", prefetch=1)  # no poll while it is held
    async with asyncio.timeout(TIMEOUT):
        delivery = await anext(sub)
    # When the event loop is blocked past the visibility (no extension can run), then the
    # heartbeat extends it once the loop is free again
    time.sleep(1.5)  # noqa: ASYNC251  (a handler blocking the loop: the behaviour under test)
    deadline = delivery.deadline
    await wait_until(lambda: delivery.deadline != deadline, TIMEOUT, what="a late extension")
    await delivery.ack()
    # Then the ack is still reported stale: SQS may have redelivered in the gap
    [record] = stale_records(caplog)
    assert "stale ack" in record.getMessage()
