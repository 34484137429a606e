"""The conformance suite on the real Kafka that scripts/brokers starts (``-k kafka``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mqkit.testing.conformance import *  # noqa: F403
from mqkit.testing.conformance import client_factory  # noqa: F401 - the fixture


@pytest.fixture(params=["kafka"], ids=["kafka"])
def conformance_url(request: pytest.FixtureRequest) -> Iterator[str]:
    from tests.brokers import broker_url

    yield broker_url(request.param)
