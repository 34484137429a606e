"""The conformance suite, run on every transport this repository ships.

Test ids carry the transport name (``-k memory``, ``-k kafka``). Real brokers come from
``tests.brokers`` (environment URL, testcontainers, or a failure in CI).
"""

from __future__ import annotations

import pytest

from mqkit.memory import MemoryBroker
from mqkit.message import new_id
from mqkit.testing.conformance import *  # noqa: F403
from mqkit.testing.conformance import client_factory  # noqa: F401 - the fixture

TRANSPORTS = ["memory"]


@pytest.fixture(params=TRANSPORTS)
def conformance_url(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    if request.param == "memory":
        name = f"conformance-{new_id()}"
        yield f"memory://{name}"
        MemoryBroker.forget(name)
        return
    from tests.brokers import broker_url

    yield broker_url(request.param)
