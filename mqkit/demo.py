"""The ``mqkit demo`` scenario: an order flow that shows what a broker and mqkit do for you.

Five steps run against one broker URL (memory:// unless told otherwise):

1. a user registers; the API publishes ``user-registered`` and answers at once, while the
   email and analytics consumers do their slow work afterwards;
2. orders fan out to three groups (billing, notifications, analytics): each sees every one;
3. a payment consumer, idempotent through a SQLite store (the key is recorded in the same
   transaction as the charge), gets each payment two or three times and charges once;
4. the payment gateway fails twice with ``ConnectionError``; the payment is retried with
   exponential backoff (redelivered by the broker) and then charged;
5. a malformed order is dead-lettered at once, an alert consumer sees it, ops inspect the
   dead-letter topic, a fix is deployed and the dead letter is replayed and billed;
6. the order saga (``mqkit.saga``): one order completes, one fails at payment and its
   completed steps are compensated in reverse order (release inventory, cancel order).

This module is the logic only: it reports what happens as ``Event``s to a callback and
returns a ``DemoReport`` whose ``checks`` are the demo's own invariants. ``demo_view``
renders both. Topic names carry a fresh run id, so reruns on a persistent broker never mix.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mqkit import dlq
from mqkit.client import Client
from mqkit.errors import ErrorKind, PermanentError, classify
from mqkit.message import Delivery, dlq_topic, new_id
from mqkit.middleware import DeadLetter, Idempotency, Logging, Retry, RetryPolicy
from mqkit.middleware.base import Handler, Middleware
from mqkit.middleware.idempotency import current_transaction
from mqkit.stores import IdempotencyStore, MemoryIdempotencyStore, TransactionalIdempotencyStore

ORDER_GROUPS = ("billing", "notifications", "analytics")
RETRY = RetryPolicy(max_attempts=5, base_delay=0.05, max_delay=0.5)
FLAKY_FAILURES = 2


@dataclass(frozen=True)
class Event:
    """One line of the timeline: seconds since the start, who did it, what happened."""

    at: float
    actor: str
    text: str
    kind: str = "info"
    """step, publish, handle, duplicate, retry, fail, dead, alert, ops, ok."""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class GroupStats:
    deliveries: int = 0
    handled: int = 0
    duplicates: int = 0
    failures: int = 0


@dataclass
class DemoReport:
    url: str
    run_id: str
    store: str
    elapsed: float = 0.0
    registration_ms: float = 0.0
    sync_estimate_ms: float = 0.0
    orders_published: int = 0
    payments_published: int = 0
    unique_payments: int = 0
    charges: int = 0
    retries: int = 0
    dead_lettered: int = 0
    replayed: int = 0
    dlq_left: int = 0
    sagas: dict[str, str] = field(default_factory=dict)
    """Order id -> how its saga ended."""
    saga_compensations: dict[str, list[str]] = field(default_factory=dict)
    groups: dict[str, GroupStats] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


class MalformedOrder(PermanentError):
    """An order the billing service cannot parse: retrying will not help."""


class FlakyGateway:
    """A payment gateway that times out the first ``failures`` times it sees a payment."""

    def __init__(self, flaky: set[str], failures: int) -> None:
        self.flaky = flaky
        self.failures = failures
        self.calls: dict[str, int] = {}

    async def charge(self, payment_id: str) -> None:
        self.calls[payment_id] = n = self.calls.get(payment_id, 0) + 1
        await asyncio.sleep(0)
        if payment_id in self.flaky and n <= self.failures:
            raise ConnectionError(f"payment gateway timed out (call {n})")


def parse_amount(raw: Any, *, lenient: bool) -> float:
    """Billing's amount parser; the "fix" (``lenient``) accepts ``"12,50 EUR"``."""
    if isinstance(raw, int | float):
        return float(raw)
    if lenient and isinstance(raw, str):
        try:
            return float(raw.split()[0].replace(",", "."))
        except (ValueError, IndexError):
            pass
    raise MalformedOrder(f"amount {raw!r} is not a number")


EventSink = Callable[[Event], None]


class OrderFlowDemo:
    """One run of the demo. Use ``await OrderFlowDemo(url).run()`` once."""

    def __init__(
        self, url: str = "memory://", *, fast: bool = False, on_event: EventSink | None = None
    ) -> None:
        self.url = url
        self.fast = fast
        self.on_event = on_event or (lambda event: None)
        self.run_id = new_id()[:8]
        prefix = f"mqkit-demo-{self.run_id}"
        self.t_users = f"{prefix}.user-registered"
        self.t_orders = f"{prefix}.orders"
        self.t_payments = f"{prefix}.payments"
        self.api = Client(url)
        self.workers = Client(url)
        self.report = DemoReport(url=self.api.url.safe(), run_id=self.run_id, store="")
        memory = self.api.url.scheme == "memory"
        self.idle = 0.25 if memory else 2.0
        self.wait_timeout = 10.0 if memory else 60.0
        self.email_delay = 0.0 if fast else 0.15
        self.analytics_delay = 0.0 if fast else 0.05
        self.gateway = FlakyGateway({"p-4"}, FLAKY_FAILURES)
        self.fix_deployed = False
        self.effects: dict[str, list[str]] = {}
        self.charges: list[str] = []
        self._started = 0.0
        self._tmp = tempfile.TemporaryDirectory(prefix="mqkit-demo-")
        self._db = Path(self._tmp.name) / "payments.db"
        self._transactional = False

    # --- running ----------------------------------------------------------------------
    async def run(self) -> DemoReport:
        self._started = time.monotonic()
        try:
            store = await self._open_store()
            try:
                await self.api.connect()
                await self._subscribe(store)
                await self.workers.start()
                await self.step_registration()
                await self.step_fanout()
                await self.step_idempotent_payments()
                await self.step_retry()
                await self.step_poison_and_replay()
                await self.step_order_saga()
                await self._final_checks()
            finally:
                await self.workers.close()
                await self.api.close()
                await store.close()
            self.report.charges = self._count_charges()
            self._check_charges()
        finally:
            self._tmp.cleanup()
        self.report.elapsed = time.monotonic() - self._started
        return self.report

    def emit(self, actor: str, text: str, kind: str = "info") -> None:
        self.on_event(Event(time.monotonic() - self._started, actor, text, kind))

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.wait_timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"demo timed out waiting for {what}")
            await asyncio.sleep(0.005)

    def stats(self, group: str) -> GroupStats:
        return self.report.groups.setdefault(group, GroupStats())

    def handled(self, group: str, item: str) -> None:
        self.effects.setdefault(group, []).append(item)
        self.stats(group).handled += 1

    # --- the steps --------------------------------------------------------------------
    async def step_registration(self) -> None:
        self.emit("demo", "1. Async registration: the request returns before the work", "step")
        started = time.perf_counter()
        user = {"id": "u-1", "name": "Alice", "email": "alice@example.com"}
        await self.api.publish(self.t_users, user, key=user["id"], idempotency_key=user["id"])
        took = (time.perf_counter() - started) * 1000
        self.report.registration_ms = took
        self.report.sync_estimate_ms = (self.email_delay + self.analytics_delay) * 1000
        self.emit("api", f"POST /users Alice -> 201 in {took:.1f} ms (email, analytics queued)",
                  "publish")
        await self.until(
            lambda: len(self.effects.get("email", [])) == 1
            and len(self.effects.get("signups", [])) == 1,
            "the registration consumers",
        )

    async def step_fanout(self) -> None:
        self.emit("demo", "2. Fan-out: billing, notifications and analytics see every order",
                  "step")
        orders = [
            {"id": f"o-{i}", "customer": f"c-{i}", "amount": 10.0 * i} for i in range(1, 5)
        ]
        await self.api.publish_batch(
            self.t_orders, orders, key=lambda o: o["id"], idempotency_key=lambda o: o["id"]
        )
        self.report.orders_published += len(orders)
        self.emit("api", f"published {len(orders)} orders o-1..o-4 to one topic", "publish")
        await self.until(
            lambda: all(len(self.effects.get(g, [])) == 4 for g in ORDER_GROUPS),
            "every group to handle every order",
        )

    async def step_idempotent_payments(self) -> None:
        mode = "SQLite, key + charge in one transaction" if self._transactional else "memory"
        self.emit("demo", f"3. Idempotent payments ({mode}): duplicates charge once", "step")
        copies = {"p-1": 3, "p-2": 2, "p-3": 1}
        for payment_id, n in copies.items():
            for _ in range(n):
                await self.api.publish(
                    self.t_payments,
                    {"id": payment_id, "amount": 25.0},
                    key=payment_id,
                    idempotency_key=payment_id,
                )
        sent = sum(copies.values())
        self.report.payments_published += sent
        self.report.unique_payments += len(copies)
        self.emit("api", f"published {sent} payment messages for {len(copies)} payments "
                  "(the client retried after timeouts)", "publish")
        paid = self.stats("payments")
        expected = sent
        if self.api.capabilities.deduplicates:
            # The broker itself drops repeated idempotency keys (JetStream, SQS FIFO).
            expected = len(copies)
            self.emit("broker", f"de-duplicated {sent - expected} repeated publishes by "
                      "idempotency key before any consumer saw them", "duplicate")
        await self.until(lambda: paid.handled + paid.duplicates >= expected, "the payments")

    async def step_retry(self) -> None:
        self.emit("demo", "4. Transient failure: the gateway times out twice, backoff, success",
                  "step")
        await self.api.publish(
            self.t_payments, {"id": "p-4", "amount": 99.0}, key="p-4", idempotency_key="p-4"
        )
        self.report.payments_published += 1
        self.report.unique_payments += 1
        self.emit("api", "published payment p-4", "publish")
        await self.until(lambda: "p-4" in self.charges, "payment p-4 to be charged")

    async def step_poison_and_replay(self) -> None:
        self.emit("demo", "5. Poison message: dead-lettered, inspected, fixed, replayed", "step")
        bad = {"id": "o-5", "customer": "c-5", "amount": "12,50 EUR"}
        await self.api.publish(self.t_orders, bad, key="o-5", idempotency_key="o-5")
        self.report.orders_published += 1
        self.emit("api", "published order o-5 with amount '12,50 EUR'", "publish")
        await self.until(lambda: self.report.dead_lettered == 1, "the dead letter alert")
        await self.until(
            lambda: all(
                "o-5" in self.effects.get(g, []) for g in ORDER_GROUPS if g != "billing"
            ),
            "notifications and analytics to handle o-5",
        )
        letters = await dlq.inspect(self.api, self.t_orders, idle=self.idle)
        summary = ", ".join(f"{k}: {v}" for k, v in dlq.summarize(letters).items())
        self.emit("ops", f"inspected {dlq_topic(self.t_orders)}: {len(letters)} dead letter(s) "
                  f"({summary or 'none'}), left in place", "ops")
        self.fix_deployed = True
        self.emit("deploy", "billing v2 deployed: amounts like '12,50 EUR' are accepted", "ops")
        result = await dlq.replay(
            self.api,
            self.t_orders,
            error_type=MalformedOrder.__qualname__,
            idle=self.idle,
            on_progress=lambda old, new: self.emit(
                "ops", f"replayed dead letter {old.id[:8]} as new message {new.id[:8]} "
                f"(causation {old.id[:8]}) to {new.topic}", "ops"
            ),
        )
        self.report.replayed = result.replayed
        await self.until(
            lambda: "o-5" in self.effects.get("billing", [])
            and all(self.stats(g).duplicates >= 1 for g in ("notifications", "analytics")),
            "the replayed order",
        )

    async def step_order_saga(self) -> None:
        from mqkit.saga.demo_step import run_order_sagas

        self.emit("demo", "6. Order saga: one completes; one fails at payment and is "
                  "compensated in reverse order", "step")
        result = await run_order_sagas(Path(self._tmp.name) / "sagas.db", self.emit)
        self.report.sagas = {order: state.value for order, state in result.outcomes.items()}
        self.report.saga_compensations = result.compensations
        undone = result.compensations.get("o-11", [])
        self.report.checks.append(Check(
            "order saga o-10 completed without compensation",
            self.report.sagas.get("o-10") == "completed" and "o-10" not in result.compensations,
            self.report.sagas.get("o-10", "not run"),
        ))
        self.report.checks.append(Check(
            "order saga o-11 compensated in reverse: release inventory, then cancel order",
            self.report.sagas.get("o-11") == "compensated"
            and undone == ["release-inventory", "cancel-order"],
            f"{self.report.sagas.get('o-11', 'not run')}: {', '.join(undone) or 'nothing'}",
        ))

    async def _final_checks(self) -> None:
        found = await asyncio.gather(*(
            dlq.inspect(self.api, topic, idle=self.idle)
            for topic in (self.t_orders, self.t_payments, self.t_users)
        ))
        left = sum(len(letters) for letters in found)
        self.report.dlq_left = left
        r, checks = self.report, self.report.checks
        for group in ORDER_GROUPS:
            seen = sorted(self.effects.get(group, []))
            expected = [f"o-{i}" for i in range(1, r.orders_published + 1)]
            checks.append(Check(f"{group} handled every order exactly once", seen == expected,
                                f"{len(seen)} of {len(expected)}"))
        checks.append(Check(
            "email and analytics each handled the registration",
            self.effects.get("email") == ["u-1"] and self.effects.get("signups") == ["u-1"],
            f"email {len(self.effects.get('email', []))}, "
            f"analytics {len(self.effects.get('signups', []))}",
        ))
        flaky_calls = self.gateway.calls.get("p-4", 0)
        checks.append(Check("p-4 charged after its transient failures",
                            flaky_calls == FLAKY_FAILURES + 1 and r.retries == FLAKY_FAILURES,
                            f"{flaky_calls} gateway calls, {r.retries} retries"))
        checks.append(Check("the poison order was dead-lettered and replayed",
                            r.dead_lettered == 1 and r.replayed == 1,
                            f"{r.dead_lettered} dead-lettered, {r.replayed} replayed"))
        checks.append(Check("dead-letter topics are empty after replay", left == 0,
                            f"{left} left"))

    def _check_charges(self) -> None:
        r = self.report
        r.checks.append(Check("charges == unique payments", r.charges == r.unique_payments,
                              f"{r.charges} charges for {r.unique_payments} payments "
                              f"({r.payments_published} messages)"))

    # --- consumers --------------------------------------------------------------------
    async def _open_store(self) -> IdempotencyStore:
        try:
            from mqkit.stores.sqlite import SqliteIdempotencyStore
        except ImportError:
            self.report.store = "memory (mqkit.stores.sqlite is not available)"
            return MemoryIdempotencyStore()
        with sqlite3.connect(self._db) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS demo_charges "
                "(payment_id TEXT NOT NULL, amount REAL NOT NULL, message_id TEXT NOT NULL)"
            )
        conn.close()
        store = await SqliteIdempotencyStore.open(str(self._db))
        self._transactional = isinstance(store, TransactionalIdempotencyStore)
        self.report.store = "sqlite, transactional" if self._transactional else "sqlite"
        return store

    def _count_charges(self) -> int:
        if not self._transactional:
            return len(self.charges)
        with sqlite3.connect(self._db) as conn:
            (count,) = conn.execute("SELECT COUNT(*) FROM demo_charges").fetchone()
        conn.close()
        return int(count)

    def _stack(self, group: str, *inner: Middleware) -> list[Middleware]:
        return [Logging(), DeadLetter(), Retry(RETRY), self._observe(group), *inner]

    def _observe(self, group: str) -> Middleware:
        """Middleware inside retry: counts every delivery and narrates failures."""

        def layer(inner: Handler) -> Handler:
            async def observed(delivery: Delivery) -> Any:
                stats = self.stats(group)
                try:
                    result = await inner(delivery)
                except Exception as exc:
                    stats.deliveries += 1
                    stats.failures += 1
                    retry = (
                        classify(exc) is ErrorKind.TRANSIENT
                        and delivery.attempt < RETRY.max_attempts
                    )
                    if retry:
                        self.report.retries += 1
                    then = "retry with backoff" if retry else "dead-letter"
                    self.emit(group, f"attempt {delivery.attempt} failed: "
                              f"{type(exc).__name__}: {exc} -> {then}",
                              "retry" if retry else "fail")
                    raise
                stats.deliveries += 1
                if delivery.state.get("duplicate"):
                    stats.duplicates += 1
                    what = "replayed copy" if delivery.message.causation_id else "duplicate"
                    self.emit(group, f"{what} of {delivery.message.idempotency_key} absorbed "
                              "(already handled)", "duplicate")
                return result

            return observed

        return layer

    async def _subscribe(self, store: IdempotencyStore) -> None:
        w = self.workers
        orders_store = MemoryIdempotencyStore()

        @w.subscribe(self.t_users, group="email", middleware=self._stack("email"))
        async def send_welcome_email(user: dict[str, Any]) -> None:
            await asyncio.sleep(self.email_delay)
            self.handled("email", user["id"])
            self.emit("email", f"welcome email sent to {user['email']}", "handle")

        @w.subscribe(self.t_users, group="analytics", middleware=self._stack("signups"))
        async def count_signup(user: dict[str, Any]) -> None:
            await asyncio.sleep(self.analytics_delay)
            self.handled("signups", user["id"])
            self.emit("analytics", f"signup of {user['name']} counted", "handle")

        def order_consumer(group: str) -> None:
            stack = self._stack(group, Idempotency(orders_store))

            @w.subscribe(self.t_orders, group=group, middleware=stack)
            async def handle(order: dict[str, Any]) -> None:
                if group == "billing":
                    amount = parse_amount(order["amount"], lenient=self.fix_deployed)
                    text = f"invoiced {order['id']}: {amount:.2f}"
                elif group == "notifications":
                    text = f"order confirmation for {order['id']} sent to {order['customer']}"
                else:
                    text = f"{order['id']} added to the sales dashboard"
                self.handled(group, order["id"])
                self.emit(group, text, "handle")

        for group in ORDER_GROUPS:
            order_consumer(group)

        payments = Idempotency(store, transactional=self._transactional)

        @w.subscribe(self.t_payments, group="payments",
                     middleware=self._stack("payments", payments))
        async def charge(payment: dict[str, Any], delivery: Delivery) -> None:
            await self.gateway.charge(payment["id"])
            if self._transactional:
                await current_transaction().connection.execute(
                    "INSERT INTO demo_charges (payment_id, amount, message_id) VALUES (?, ?, ?)",
                    (payment["id"], payment["amount"], delivery.message.id),
                )
            self.charges.append(payment["id"])
            self.handled("payments", payment["id"])
            self.emit("payments", f"charged {payment['id']} {payment['amount']:.2f} "
                      f"(attempt {delivery.attempt})", "handle")

        @w.subscribe(dlq_topic(self.t_orders), group="alerts")
        async def alert(delivery: Delivery) -> None:
            letter = delivery.message
            self.report.dead_lettered += 1
            self.emit("alerts", f"dead letter {letter.idempotency_key} in "
                      f"{letter.topic}: {dlq.error_type_of(letter)}", "dead")


async def run_demo(
    url: str = "memory://", *, fast: bool = False, on_event: EventSink | None = None
) -> DemoReport:
    """Run the whole demo once against ``url`` and return its report."""
    return await OrderFlowDemo(url, fast=fast, on_event=on_event).run()
