"""Fixtures shared by the Kafka adapter's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mqkit_kafka import KafkaTransport


@pytest.fixture
async def transport(kafka_url: str) -> AsyncIterator[KafkaTransport]:
    """A connected transport on the broker of ``MQKIT_KAFKA_URL``, closed after the test."""
    t = KafkaTransport(kafka_url)
    await t.connect()
    try:
        yield t
    finally:
        await t.close()
