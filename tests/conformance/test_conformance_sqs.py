"""The conformance suite on SNS/SQS (moto's server here, AWS wherever the URL points).

Two runs: ``sqs`` (standard topics: fan-out, at least once, no order) and ``sqs-fifo``
(every topic FIFO, order per key). The FIFO run deduplicates on message ids: the suite's
idempotency test publishes one payment three times with one idempotency key and expects a
second group to see all three, which FIFO deduplication on idempotency keys (the default,
tested in tests/sqs) would rightly absorb. It also short-polls (``wait_time=0``): moto's
long poll on a FIFO queue whose visible messages all belong to busy message groups spins
(its wait predicate is "any visible message", true at once), burning the GIL that the
deletes freeing those groups need; measured, 500 keyed messages took > 60 s that way.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mqkit.testing.conformance import *  # noqa: F403
from mqkit.testing.conformance import client_factory  # noqa: F401 - the fixture

VARIANTS = {"sqs": "", "sqs-fifo": "fifo=true&dedup=message-id&wait_time=0"}


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def conformance_url(request: pytest.FixtureRequest) -> Iterator[str]:
    from tests.brokers import broker_url

    url = broker_url("sqs")
    extra = VARIANTS[request.param]
    if extra:
        url += ("&" if "?" in url else "?") + extra
    yield url
