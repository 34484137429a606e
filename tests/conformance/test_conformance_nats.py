"""The conformance suite on the real nats-server: core NATS and JetStream.

``-k nats`` selects both; ``-k jetstream`` only JetStream. Tests skip themselves by the
transports' capabilities (core NATS is at-most-once and keeps nothing for absent
subscribers). JetStream runs twice: with the default configuration, where the idempotency
key is sent as ``Nats-Msg-Id`` and the server de-duplicates, and with ``msg_id=message-id``.
"""

from __future__ import annotations

import pytest

from mqkit.testing.conformance import *  # noqa: F403
from mqkit.testing.conformance import client_factory  # noqa: F401 - the fixture
from tests.brokers import broker_url


@pytest.fixture(params=["nats", "jetstream", "jetstream-msgid"])
def conformance_url(request: pytest.FixtureRequest) -> str:
    if request.param == "jetstream-msgid":
        url = broker_url("jetstream")
        return url + ("&" if "?" in url else "?") + "msg_id=message-id"
    return broker_url(request.param)
