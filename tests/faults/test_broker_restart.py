"""The broker SIGKILLed and restarted twice during a 5,000-message run: nothing acked is lost.

A publisher and a consumer (``mqkit.Client`` each, in the test process) run against a
dedicated broker (``tests/faults/instances.py``; the shared brokers are never touched). The
publisher sends 5,000 messages in batches, paced so the run spans both restarts; the ledger
marks each id acked on confirm, or indeterminate when mqkit reports the outcome unknown
(``PublishTimeout``, or ``ConnectionFailed`` when the connection died). The broker is
SIGKILLed at 30 % and 60 % of the run and started again on the same data. Afterwards every
indeterminate id either was delivered (recovered) or is re-sent with the same id. Passes only
with lost = 0, unexpected = 0, side effects = acked + recovered = every attempted id, and
consumption resumed within 30 s of the broker being back: measured from ``restart()``
returning to the first delivery of a message first published after the kill (so it went
through the new incarnation, not a client-side buffer). The publisher holds at 40 % and 70 %
until the kill began, so each kill lands mid-run however fast the machine is.

Durability is the real thing: Kafka acks=all on a single node (what a SIGKILL of the process
keeps: written to the page cache), RabbitMQ durable classic queues, persistent messages and
publisher confirms, JetStream file storage.

Not memory: the memory broker lives in the test process, there is no broker to kill. Not SQS:
moto keeps no state across a restart, so a restart is a new, empty broker.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from mqkit import Client
from mqkit.message import new_id
from mqkit.testing import wait_until
from tests.faults.broker_traffic import (
    BROKERS,
    Traffic,
    instance_for,
    publish_options,
    url_of,
)
from tests.faults.instances import (  # noqa: F401 - session fixtures used by instance_for
    dedicated_kafka,
    dedicated_nats,
    dedicated_rabbitmq,
)
from tests.faults.ledger import report

N = 5_000
BATCH = 100
PACE = 0.02
"""Seconds between batches, so messages keep flowing around each kill."""
RESTART_AT = (0.3, 0.6)
HOLD = 0.1
"""The publisher waits at ``share + HOLD`` until the kill for ``share`` began, so a fast run
cannot finish before the broker is killed: each kill lands while it is publishing."""
PUBLISH_TIMEOUT = 5.0
RESUME_LIMIT = 30.0


def client_options(broker: str) -> dict[str, object]:
    options: dict[str, object] = publish_options(broker, PUBLISH_TIMEOUT)
    if broker == "rabbitmq":
        options["reconnect_max_delay"] = 1  # the default backoff grows to 30 s
    return options


def resumed_after(traffic: Traffic, killed: float, back: float) -> float | None:
    """Seconds from ``back`` to the first delivery of a message first attempted after
    ``killed``: it can only have gone through the restarted broker."""
    fresh = {m for m, at in traffic.attempt_times.items() if at >= killed}
    return traffic.first_delivery_after(back, fresh)


def first_confirm_after(traffic: Traffic, back: float) -> float | None:
    """Seconds from ``back`` to the first publish confirmed after it, if any was."""
    confirmed = min((t for t in traffic.confirm_times if t >= back), default=None)
    return None if confirmed is None else round(confirmed - back, 2)


@pytest.mark.slow
@pytest.mark.parametrize("broker", BROKERS)
async def test_broker_killed_and_restarted_twice_loses_nothing(
    broker: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    began = time.monotonic()
    instance = instance_for(request, broker)
    url = url_of(instance, broker)
    topic = f"faults.restart.{new_id()[:12]}"
    group = f"restart-{topic.rsplit('.', 1)[-1]}"
    traffic = Traffic(tmp_path, topic)
    ids = traffic.ids(N)
    resumes: list[float] = []
    backs: list[float] = []  # when each restarted broker was back
    restart_seconds: list[float] = []
    try:
        async with Client(url, **client_options(broker)) as consumer, \
                Client(url, **client_options(broker)) as producer:
            await producer.ensure_topic(topic, groups=[group])
            consumer.subscribe(topic, group=group, concurrency=8)(traffic.handler)
            await consumer.start()

            kills = [asyncio.Event() for _ in RESTART_AT]

            async def produce() -> None:
                for start in range(0, N, BATCH):
                    for share, kill in zip(RESTART_AT, kills, strict=True):
                        if start >= (share + HOLD) * N:
                            await kill.wait()
                    await traffic.publish(producer, ids[start : start + BATCH])
                    await asyncio.sleep(PACE)

            async def restart_at(share: float, kill: asyncio.Event) -> None:
                await wait_until(lambda: len(traffic.ledger.attempted) >= share * N, 120,
                                 what=f"{share:.0%} of the publishes")
                # restart() in its two halves: what is attempted once the kill returned cannot
                # have reached the old incarnation.
                await asyncio.to_thread(instance.kill)
                killed = time.monotonic()
                kill.set()
                await asyncio.to_thread(instance.start)
                back = time.monotonic()
                restart_seconds.append(back - killed)
                try:
                    await wait_until(lambda: resumed_after(traffic, killed, back) is not None,
                                     RESUME_LIMIT, interval=0.05,
                                     what="a delivery of a message published after the kill")
                except AssertionError as exc:
                    raise AssertionError(f"{exc}: {traffic.state()}") from None
                resumes.append(resumed_after(traffic, killed, back) or 0.0)
                backs.append(back)

            producing = asyncio.create_task(produce())
            try:
                for share, kill in zip(RESTART_AT, kills, strict=True):
                    await restart_at(share, kill)
                await asyncio.wait_for(producing, 300)
            finally:
                producing.cancel()
            # Indeterminate publishes: delivered already, or sent again with the same id.
            settled = await traffic.settle_indeterminate(producer, 120)
        verdict = traffic.ledger.verdict(traffic.log.counts(), traffic.effects)
        applied = traffic.effects.applied()
        # Read once every publish returned: at the first delivery after a restart the
        # publish that carried it may still be waiting for its confirm.
        confirms = [first_confirm_after(traffic, back) for back in backs]
        report("broker_restart", broker, **{**verdict.row(), **settled},
               restarts=len(resumes), restart_s=[round(s, 1) for s in restart_seconds],
               resumed_s=[round(s, 2) for s in resumes],
               first_confirm_s=confirms,
               publish_errors=sorted({name for name, _text in traffic.errors}),
               seconds=round(time.monotonic() - began, 1))
        assert verdict.ok, str(verdict)
        assert applied == traffic.ledger.acked | (traffic.ledger.attempted & traffic.delivered)
        assert applied == traffic.ledger.attempted, "an attempted publish was neither acked, "\
            "recovered nor re-sent"
        assert verdict.side_effects == N
        assert len(resumes) == len(RESTART_AT)
        assert max(resumes) < RESUME_LIMIT
    finally:
        traffic.close()
