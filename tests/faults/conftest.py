"""Shared fixtures of the fault suite."""

from __future__ import annotations

import pytest

from tests.brokers import broker_url


@pytest.fixture
def fault_url(broker: str) -> str:
    """URL of the broker a test is parametrized with (``broker``: memory, kafka, ...).

    A real broker that cannot be reached fails the test when MQKIT_REQUIRE_BROKERS=1."""
    if broker == "memory":
        return "memory://"
    return broker_url(broker)
