"""A broker cut off by a silent network partition for 15 s, then healed.

The client reaches its broker only through ``BlackHoleProxy`` (tests/faults/partition.py: no
RST, no FIN, new connections unanswered while cut). One client publishes a message every
20 ms and consumes them, across the cut. Asserted per broker:

- the dead connection is noticed within two heartbeats of the cut. The heartbeat is made
  short through the adapter's options; "noticed" is the moment the client gives up on the
  dead connection and closes it, which the proxy sees (``drops``) the same way whatever the
  client library. The adapter must also have reported the loss (its WARNING log record)
  while the cut lasts;
- the client is back within 10 s of the heal: from ``heal()`` to the first message whose
  publish succeeded after the heal and that was delivered;
- the ledger over the whole run has lost = 0 and unexpected = 0 (a publish that raised counts
  as indeterminate), every delivered message has its side effect once, and (RabbitMQ, NATS)
  the dead connections are closed after the heal: the proxy ends with exactly the
  connections the transport holds, no leak.

Brokers and what their heartbeat is:

- rabbitmq: AMQP ``heartbeat=1`` on both of the transport's connections (publish, consume);
- nats, jetstream: ``ping_interval=1`` with ``max_outstanding_pings=1`` (the second
  unanswered PING declares the connection stale);
- kafka: librdkafka sends nothing on an idle connection, but the consumer always has a
  fetch in flight and a request unanswered for ``socket.timeout.ms`` drops its connection:
  that timeout (2 s) is the heartbeat. The adapter reports the loss later, when librdkafka
  says all brokers are down (after a reconnect attempt failed too), so for Kafka the report
  is only required to come during the cut. The broker advertises its own address, so a
  dedicated instance (tests/faults/instances.py) advertises the proxy's port instead.

Also measured: publishes that returned successfully while the broker was cut off
(``acked_while_cut``, counted from two heartbeats after the cut, when the loss is known, to
the heal). None may on RabbitMQ, JetStream and Kafka, whose publish waits for the broker's
confirmation. Core NATS is only reported: mqkit's core publish confirms with a PING round
trip through nats-py's ``flush()``, which skips the round trip while nats-py reconnects, so
publishes made during the cut return at once and their messages wait in nats-py's
reconnect buffer (sent after the heal; lost if the buffer overflows or the client closes).

Left out: memory (no network); sqs on moto (HTTP: each call is its own request, no
connection is watched between calls, so a partition is only a request timeout, which the
broker-frozen scenario covers).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mqkit.client import Client
from mqkit.errors import MessageTooLarge
from mqkit.message import Delivery, new_id
from mqkit.testing.conformance import group_name, topic_name
from mqkit.testing.waiting import wait_until
from tests.brokers import broker_url
from tests.faults.instances import BrokerUnavailable, start_instance
from tests.faults.ledger import DeliveryLog, Ledger, SideEffects, report
from tests.faults.partition import BlackHoleProxy, port_of

SCENARIO = "network partition"
CUT_SECONDS = 15.0
RECONNECT_BOUND = 10.0
PUBLISH_EVERY = 0.02
WARM_UP = 20  # deliveries before the cut
NATS_OPTIONS = {
    "ping_interval": 1, "max_outstanding_pings": 1, "connect_timeout": 2, "request_timeout": 2,
}


@dataclass(frozen=True)
class Profile:
    """How a broker is told to watch its connections, and how it says it lost one."""

    options: dict[str, Any]
    heartbeat: float
    """Seconds of silence the client notices a dead connection by (see the docstring)."""
    logger: str
    loss_marker: str
    """Part of the adapter's WARNING message saying a connection was lost."""
    drops: int
    """Connections that must be noticed dead: every one the transport keeps busy."""
    connections: int | None
    """Connections the transport holds once healed (None: librdkafka decides)."""
    report_bound: float | None = None
    """Seconds after the cut by which the adapter reports it (None: two heartbeats)."""
    confirms_only_when_reached: bool = True
    """No publish returns successfully while the broker is unreachable (see the docstring)."""

    @property
    def notice_bound(self) -> float:
        return 2 * self.heartbeat


PROFILES = {
    "rabbitmq": Profile(
        {"heartbeat": 1, "connect_timeout": 2, "publish_timeout": 5, "reconnect_max_delay": 1},
        heartbeat=1.0, logger="mqkit.rabbitmq", loss_marker="lost", drops=2, connections=2,
    ),
    "nats": Profile(NATS_OPTIONS, heartbeat=1.0, logger="mqkit.nats",
                    loss_marker="disconnected", drops=1, connections=1,
                    confirms_only_when_reached=False),
    "jetstream": Profile(NATS_OPTIONS, heartbeat=1.0, logger="mqkit.nats",
                         loss_marker="disconnected", drops=1, connections=1),
    "kafka": Profile(
        {"socket.timeout.ms": 2000, "connect_timeout": 2},
        heartbeat=2.0, logger="mqkit.kafka", loss_marker="brokers are down", drops=1,
        connections=None, report_bound=CUT_SECONDS,
    ),
}


class LossWatch(logging.Handler):
    """Times (monotonic) of the adapter's WARNING records saying a connection was lost."""

    def __init__(self, marker: str) -> None:
        super().__init__(logging.WARNING)
        self.marker = marker
        self.times: list[float] = []
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.records.append(message)
        if self.marker in message:
            self.times.append(time.monotonic())


@dataclass
class Traffic:
    """The ledger run: publish every PUBLISH_EVERY seconds, record deliveries and effects."""

    client: Client
    topic: str
    ledger: Ledger
    log: DeliveryLog
    effects: SideEffects
    acked_at: dict[str, float] = field(default_factory=dict)
    delivered_at: dict[str, float] = field(default_factory=dict)
    errors: set[str] = field(default_factory=set)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, body: bytes, delivery: Delivery) -> None:
        message_id = delivery.message.id
        self.log.record(message_id)
        self.delivered_at.setdefault(message_id, time.monotonic())
        self.effects.apply(message_id)

    async def publish(self) -> None:
        n = 0
        while not self.stop.is_set():
            message_id = f"p-{n:05d}-{new_id()[:8]}"
            n += 1
            self.ledger.attempt(message_id)
            try:
                await self.client.publish(self.topic, b"x", message_id=message_id)
            except MessageTooLarge:
                raise  # refused before sending: a bug in this test, not a partition effect
            except Exception as exc:  # timed out or its connection died: outcome unknown
                self.ledger.unknown(message_id)
                self.errors.add(type(exc).__name__)
            else:
                self.ledger.ack(message_id)
                self.acked_at[message_id] = time.monotonic()
            await asyncio.sleep(PUBLISH_EVERY)

    def acked_between(self, start: float, end: float) -> int:
        return sum(start <= acked < end for acked in self.acked_at.values())

    def back_after(self, healed_at: float) -> float | None:
        """Seconds from the heal to the first message acked after it and delivered."""
        done = [
            max(acked, self.delivered_at[mid])
            for mid, acked in self.acked_at.items()
            if acked >= healed_at and mid in self.delivered_at
        ]
        return min(done) - healed_at if done else None


def after(times: list[float], start: float, nth: int) -> float | None:
    """Seconds from ``start`` to the ``nth`` (1-based) of ``times`` at or after it."""
    later = sorted(t - start for t in times if t >= start)
    return later[nth - 1] if len(later) >= nth else None


async def run_partition(
    broker: str, target_url: str, proxy: BlackHoleProxy, tmp_path: Path
) -> None:
    profile = PROFILES[broker]
    watch = LossWatch(profile.loss_marker)
    logger = logging.getLogger(profile.logger)
    level = logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.INFO)
    topic = topic_name("partition")
    client = Client(proxy.url_for(target_url), **profile.options)
    traffic = Traffic(
        client, topic, Ledger(), DeliveryLog(tmp_path / "deliveries.log"),
        SideEffects(tmp_path / "effects.db"),
    )
    client.subscribe(topic, group=group_name(topic, "partition"))(traffic.handle)
    began = time.monotonic()
    publishing: asyncio.Task[None] | None = None
    try:
        await client.start()
        publishing = asyncio.create_task(traffic.publish())
        await wait_until(lambda: len(traffic.delivered_at) >= WARM_UP, 30, what="warm-up")
        cut_at = await asyncio.to_thread(proxy.cut)
        await asyncio.sleep(CUT_SECONDS)
        healed_at = await asyncio.to_thread(proxy.heal)
        noticed = after(proxy.drops, cut_at, profile.drops)
        reported = after(watch.times, cut_at, 1)
        await wait_until(
            lambda: traffic.back_after(healed_at) is not None, 30, what="traffic after heal"
        )
        back = traffic.back_after(healed_at)
        # Nothing crosses the proxy meanwhile: an ack from after the loss was noticed cannot
        # come from the broker (the first heartbeat window may still see in-flight acks).
        blind = traffic.acked_between(cut_at + profile.notice_bound, healed_at)
        await asyncio.sleep(1.0)  # some more traffic over the new connections
        traffic.stop.set()
        await asyncio.wait_for(publishing, 30)
        await wait_until(
            lambda: traffic.ledger.acked <= set(traffic.delivered_at), 30,
            what="every acked message delivered",
        )
        if profile.connections is not None:
            await wait_until(
                lambda: proxy.open_connections == profile.connections, 10,
                what=f"{profile.connections} connection(s) through the proxy",
            )
        verdict = traffic.ledger.verdict(traffic.log.counts(), traffic.effects)
    finally:
        traffic.stop.set()
        if publishing is not None:
            publishing.cancel()
            await asyncio.gather(publishing, return_exceptions=True)
        await client.close()
        logger.removeHandler(watch)
        logger.setLevel(level)
        traffic.log.close()
        traffic.effects.close()
    report(
        SCENARIO, broker, **verdict.row(), heartbeat_s=profile.heartbeat,
        notice_bound_s=profile.notice_bound, noticed_s=noticed, reported_s=reported,
        reconnect_s=back, reconnect_bound_s=RECONNECT_BOUND, cut_s=CUT_SECONDS,
        acked_while_cut=blind,
        indeterminate_errors=sorted(traffic.errors), seconds=round(time.monotonic() - began, 1),
    )
    assert verdict.ok, verdict
    assert verdict.side_effects == verdict.delivered_unique, verdict
    assert noticed is not None, f"the client never gave up on the dead connection(s): {proxy.drops}"
    assert noticed <= profile.notice_bound, (
        f"noticed {noticed:.1f}s after the cut; two heartbeats are {profile.notice_bound:g}s"
    )
    report_bound = profile.report_bound or profile.notice_bound
    assert reported is not None and reported <= report_bound, (
        f"the adapter reported the loss after {reported}s (bound {report_bound:g}s): "
        f"{watch.records}"
    )
    assert back is not None and back <= RECONNECT_BOUND, f"back {back}s after the heal"
    if profile.confirms_only_when_reached:
        assert blind == 0, f"{blind} publish(es) confirmed while the broker was unreachable"


@pytest.fixture
def behind_proxy(broker: str, tmp_path: Path) -> Iterator[tuple[str, BlackHoleProxy]]:
    """The broker's URL and a started proxy in front of it. Kafka: a dedicated instance
    advertising the proxy's port (the shared one would send clients around the proxy)."""
    if broker != "kafka":
        url = broker_url(broker)
        with BlackHoleProxy(port_of(url)) as proxy:
            yield url, proxy
        return
    proxy = BlackHoleProxy(0)
    try:
        instance = start_instance("kafka", tmp_path / "kafka", advertised_port=proxy.port)
    except BrokerUnavailable as exc:
        proxy.close()
        if os.environ.get("MQKIT_REQUIRE_BROKERS") == "1":
            pytest.fail(f"dedicated kafka: {exc}")
        pytest.skip(f"dedicated kafka: {exc}")
    try:
        proxy.target = ("127.0.0.1", instance.port)
        proxy.start()
        yield instance.url(), proxy
    finally:
        proxy.close()
        instance.stop()


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["rabbitmq", "nats", "jetstream", "kafka"])
async def test_partition_noticed_and_healed(
    broker: str, behind_proxy: tuple[str, BlackHoleProxy], tmp_path: Path
) -> None:
    url, proxy = behind_proxy
    await run_partition(broker, url, proxy, tmp_path)


def test_proxy_cut_is_silent_and_heal_delivers_what_was_held() -> None:
    """The proxy itself: while cut no byte passes, nothing is closed or refused, a new
    connect gets no answer, a client giving up is seen; healed, the held bytes arrive."""
    with socket.create_server(("127.0.0.1", 0)) as server, BlackHoleProxy(
        server.getsockname()[1]
    ) as proxy:
        server.settimeout(5)
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        upstream, _ = server.accept()
        upstream.settimeout(5)
        client.sendall(b"before")
        assert upstream.recv(100) == b"before"
        leaver = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        leaver_upstream, _ = server.accept()
        cut_at = proxy.cut()
        client.sendall(b"held")
        upstream.sendall(b"held back")
        for quiet in (client, upstream):
            quiet.settimeout(0.5)
            with pytest.raises(TimeoutError):  # no byte, and no FIN (that would be b"")
                quiet.recv(100)
        first = socket.create_connection(("127.0.0.1", proxy.port), timeout=1)
        with pytest.raises(TimeoutError):  # one handshake may wait in the backlog...
            first.settimeout(0.5)
            first.recv(1)
        with pytest.raises(TimeoutError):  # ...the next SYN is dropped, not refused
            socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
        first.close()
        leaver.close()  # a client giving up on its dead connection
        wait = time.monotonic() + 5
        while not proxy.drops and time.monotonic() < wait:
            time.sleep(0.02)
        assert len(proxy.drops) == 1 and proxy.drops[0] >= cut_at
        proxy.heal()
        for side, expected in ((upstream, b"held"), (client, b"held back")):
            side.settimeout(5)
            assert side.recv(100) == expected
        leaver_upstream.settimeout(5)
        assert leaver_upstream.recv(100) == b""  # the leaver's FIN, delivered once healed
        for end in (client, upstream, leaver_upstream):
            end.close()
