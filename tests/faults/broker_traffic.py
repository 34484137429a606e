"""Traffic against a dedicated broker, judged by the ledger: shared by the restart and freeze
tests.

``Traffic`` owns the ledger, the delivery log and the side-effects table of one run. Its
``handler`` is the consumer's side (record, apply once by message id, then return: ack);
``publish`` sends one batch and records its outcome: acked on confirm, indeterminate when
mqkit says the outcome is unknown (``PublishTimeout``, or the connection died:
``ConnectionFailed``), and anything else is a refusal that voids the run.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from mqkit import Client
from mqkit.errors import ConnectionFailed, PublishTimeout
from mqkit.message import Message, new_id
from mqkit.testing import wait_until
from tests.faults.instances import BrokerInstance
from tests.faults.ledger import DeliveryLog, Ledger, SideEffects

BROKERS = ("kafka", "rabbitmq", "jetstream")
"""Where a broker process can be killed or frozen apart from the test; each test module's
docstring says why memory and SQS are not among them."""

_INSTANCE_FIXTURE = {
    "kafka": "dedicated_kafka",
    "rabbitmq": "dedicated_rabbitmq",
    "jetstream": "dedicated_nats",
}


def instance_for(request: pytest.FixtureRequest, broker: str) -> BrokerInstance:
    instance: BrokerInstance = request.getfixturevalue(_INSTANCE_FIXTURE[broker])
    if not instance.running:  # a previous test may have left it killed
        instance.start()
    return instance


def url_of(instance: BrokerInstance, broker: str) -> str:
    return instance.url("jetstream" if broker == "jetstream" else None)


def publish_options(broker: str, timeout: float) -> dict[str, Any]:
    """The option that bounds one publish call (its confirm or PubAck wait), per adapter."""
    name = "request_timeout" if broker == "jetstream" else "publish_timeout"
    return {name: timeout}


def indeterminate(exc: BaseException) -> bool:
    """mqkit's verdict: the broker may or may not have stored the message."""
    return isinstance(exc, PublishTimeout | ConnectionFailed)


class Traffic:
    """One run's ledger and consumer side. See the module docstring."""

    def __init__(self, workdir: Path, topic: str) -> None:
        self.topic = topic
        self.ledger = Ledger()
        self.log = DeliveryLog(workdir / "deliveries")
        self.effects = SideEffects(workdir / "effects.db")
        self.delivered: set[str] = set()
        self.delivery_times: list[tuple[float, str]] = []
        self.attempt_times: dict[str, float] = {}
        self.confirm_times: list[float] = []
        self.errors: list[tuple[str, str]] = []
        """(type name, text) of each indeterminate publish; not the exception, whose traceback
        would keep the driver's objects (and their sockets) alive."""

    def ids(self, count: int) -> list[str]:
        return [f"{self.topic}.{i}.{new_id()[:8]}" for i in range(count)]

    async def handler(self, message: Message) -> None:
        self.log.record(message.id)
        self.effects.apply(message.id)
        self.delivered.add(message.id)
        self.delivery_times.append((time.monotonic(), message.id))

    async def publish(self, client: Client, ids: list[str]) -> bool:
        """Publish ``ids`` as one batch; True when confirmed. Raises on a refusal."""
        messages = [client.message(self.topic, {"id": m}, message_id=m) for m in ids]
        now = time.monotonic()
        for m in ids:
            self.ledger.attempt(m)
            self.attempt_times.setdefault(m, now)
        try:
            await client.publish_messages(messages)
        except Exception as exc:
            if not indeterminate(exc):
                raise
            self.errors.append((type(exc).__name__, str(exc)))
            for m in ids:
                self.ledger.unknown(m)
            return False
        for m in ids:
            self.ledger.ack(m)
        self.confirm_times.append(time.monotonic())
        return True

    async def all_acked_delivered(self, timeout: float) -> None:
        try:
            await wait_until(lambda: self.ledger.acked <= self.delivered, timeout,
                             interval=0.1, what="every acked message to be delivered")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {self.missing_report()}") from None

    def missing_report(self) -> str:
        """What the next engineer needs to tell a consumer that stopped from one that skipped
        messages: how many acked ids are missing, which, and when deliveries last came."""
        missing = sorted(self.ledger.acked - self.delivered)
        now = time.monotonic()
        last = max((t for t, _ in self.delivery_times), default=None)
        first_attempt = min((self.attempt_times[m] for m in missing), default=now)
        return (
            f"{len(missing)} of {len(self.ledger.acked)} acked ids undelivered (e.g. "
            f"{missing[:5]}), the oldest attempted {now - first_attempt:.1f}s ago; "
            f"{len(self.delivered)} delivered, the last "
            + (f"{now - last:.1f}s ago" if last is not None else "never")
        )

    async def settle_indeterminate(self, client: Client, timeout: float) -> dict[str, int]:
        """Once the consumer caught up, re-send every indeterminate id it has not seen, with
        the same id, until confirmed; then wait for those too.

        Returns the figures: indeterminate, recovered (delivered without a re-send), resent.
        """
        await self.all_acked_delivered(timeout)
        unknown = set(self.ledger.indeterminate)
        recovered = len(unknown & self.delivered)
        todo = sorted(unknown - self.delivered)
        deadline = time.monotonic() + timeout
        for start in range(0, len(todo), 100):
            chunk = todo[start : start + 100]
            while not await self.publish(client, chunk):
                assert time.monotonic() < deadline, "re-sending indeterminate publishes failed"
                await asyncio.sleep(0.5)
        await self.all_acked_delivered(timeout)
        return {"indeterminate": len(unknown), "recovered": recovered, "resent": len(todo)}

    def first_delivery_after(self, since: float, of: set[str] | None = None) -> float | None:
        """Seconds from ``since`` to the first delivery after it (of an id in ``of``)."""
        for at, message_id in self.delivery_times:
            if at >= since and (of is None or message_id in of):
                return at - since
        return None

    def state(self) -> str:
        """Where the run stands, for a failure message."""
        now = time.monotonic()
        last_delivery = now - self.delivery_times[-1][0] if self.delivery_times else None
        ledger = self.ledger
        return (f"attempted={len(ledger.attempted)} acked={len(ledger.acked)} "
                f"indeterminate={len(ledger.indeterminate)} delivered={len(self.delivered)} "
                f"last delivery {last_delivery and round(last_delivery, 1)}s ago; "
                f"errors={[text[:200] for _name, text in self.errors[-3:]]}")

    def close(self) -> None:
        self.log.close()
        self.effects.close()
