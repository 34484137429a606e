"""The conformance suite on the real RabbitMQ (``-k rabbitmq``): classic and quorum queues."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mqkit.testing.conformance import *  # noqa: F403
from mqkit.testing.conformance import client_factory  # noqa: F401 - the fixture

VARIANTS = {"rabbitmq": "", "rabbitmq-quorum": "queue_type=quorum"}


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def conformance_url(request: pytest.FixtureRequest) -> Iterator[str]:
    from tests.brokers import broker_url

    url = broker_url("rabbitmq")
    extra = VARIANTS[request.param]
    if extra:
        url += ("&" if "?" in url else "?") + extra
    yield url
