"""The processes of the order pipeline: the paced producer and one consumer per group.

Each role runs as its own process (``pipeline.py --role NAME``) and talks to the
orchestrator in JSON lines on stdout: ``ready``, a ``tick`` every second, then ``done`` with
its accounting. Logs go to stderr. A consumer stops on SIGTERM (gracefully: the batch in
hand finishes and is settled).

Groups: payments charges each order once (idempotency keys in PostgreSQL), inventory
reserves stock, shipping prepares the notification. Poison orders fail validation while
being decoded and are dead-lettered by mqkit.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from pipeline_orders import Order, RunNames, order_payload, pack, percentile
from pipeline_profile import RoleProfiler

from mqkit import Client, DeadLetter, Idempotency, Logging, Retry, RetryPolicy
from mqkit.middleware import current_transaction
from mqkit.stores.postgres import PostgresIdempotencyStore

RETRY = RetryPolicy(max_attempts=3, base_delay=0.2, max_delay=2.0)
PUBLISH_CHUNK = 1000  # most orders one publish carries when the producer catches up


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")
    sys.stdout.flush()


async def every_second(report: Callable[[], None], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        report()


# --- producer -----------------------------------------------------------------------------
async def run_producer(args: Any) -> None:
    """Open loop: orders are due by the wall clock; confirmations are awaited concurrently,
    at most ``max_inflight`` publishes at once (beyond that the producer is saturated)."""
    names = RunNames(args.run)
    total = int(args.rate * args.seconds)
    acked: list[list[int]] = []
    failed: list[list[int]] = []
    errors: list[str] = []
    inflight: set[asyncio.Task[None]] = set()
    stats = {"acked": 0, "scheduled": 0, "max_inflight": 0, "last_ack": 0.0}

    async with Client(args.url) as client:

        async def publish(start: int, payloads: list[dict[str, object]]) -> None:
            try:
                await client.publish_batch(
                    names.topic, payloads,
                    key=lambda p: str(p["customer"]),
                    idempotency_key=lambda p: str(p["order_id"]),
                )
            except Exception as exc:
                failed.append([start, start + len(payloads)])
                if len(errors) < 5:
                    errors.append(f"{type(exc).__name__}: {exc}")
                return
            acked.append([start, start + len(payloads)])
            stats["acked"] += len(payloads)
            stats["last_ack"] = time.time()

        emit("ready")
        stop = asyncio.Event()
        ticker = asyncio.create_task(every_second(
            lambda: emit("tick", acked=stats["acked"], scheduled=stats["scheduled"],
                         inflight=len(inflight)), stop))
        profiler = RoleProfiler.maybe(args.profile, "producer")
        loop = asyncio.get_running_loop()
        cpu0 = time.process_time()
        t0, wall0 = loop.time(), time.time()
        sent, tick = 0, 0
        while sent < total:
            tick += 1
            delay = t0 + tick * args.tick - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if loop.time() - t0 >= args.seconds:
                break  # the run lasts its seconds: orders a slow producer never sent are unsent
            due = min(total, int((loop.time() - t0) * args.rate))
            while sent < due and loop.time() - t0 < args.seconds:
                if len(inflight) >= args.max_inflight:
                    # Saturated: wait for a confirmation. Orders keep their scheduled time,
                    # so the wait shows in their latency (no coordinated omission).
                    await asyncio.wait(list(inflight), return_when=asyncio.FIRST_COMPLETED)
                    due = min(total, int((loop.time() - t0) * args.rate))
                end = min(due, sent + PUBLISH_CHUNK)
                payloads = [order_payload(n, args.run, wall0 + n / args.rate)
                            for n in range(sent, end)]
                task = asyncio.create_task(publish(sent, payloads))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                sent = stats["scheduled"] = end
            stats["max_inflight"] = max(stats["max_inflight"], len(inflight))
        scheduled_until = time.time()
        if inflight:
            await asyncio.wait(list(inflight))
        stop.set()
        await ticker
        cpu = time.process_time() - cpu0
        emit(
            "done", total=total, acked=stats["acked"], acked_ranges=merged(acked),
            failed_ranges=merged(failed), errors=errors, started_at=wall0,
            scheduled_until=scheduled_until, last_ack_at=stats["last_ack"],
            max_inflight=stats["max_inflight"], cpu_seconds=cpu,
            profile=profiler.finish() if profiler else None,
        )


def merged(ranges: list[list[int]]) -> list[list[int]]:
    """``[start, end)`` ranges sorted, with touching ones joined."""
    out: list[list[int]] = []
    for start, end in sorted(ranges):
        if out and out[-1][1] == start:
            out[-1][1] = end
        else:
            out.append([start, end])
    return out


# --- consumers ----------------------------------------------------------------------------
class Ledger:
    """What one group handled: a count per order and the end-to-end latency of each."""

    def __init__(self, total: int) -> None:
        self.counts = bytearray(total)
        self.latency = array.array("d")
        self.handled = 0

    def record(self, orders: list[Order], now: float) -> None:
        counts, latency = self.counts, self.latency
        for order in orders:
            if counts[order.n] < 255:
                counts[order.n] += 1
            latency.append(now - order.created_at)
        self.handled += len(orders)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latency)
        return {
            "handled": self.handled,
            "counts": pack(self.counts),
            "latency_ms": {
                "p50": percentile(ordered, 0.50) * 1000,
                "p99": percentile(ordered, 0.99) * 1000,
                "max": (ordered[-1] if ordered else float("nan")) * 1000,
            },
        }


Effect = Callable[[list[Order]], Awaitable[None]]


async def payments_effect(args: Any) -> tuple[Effect, Callable[[], Awaitable[None]]]:
    """Charge each order at most once: one transaction per batch, keys under a UNIQUE
    constraint, a charge row only for keys that were new (``ON CONFLICT DO NOTHING``)."""
    names = RunNames(args.run)
    conn = await psycopg.AsyncConnection.connect(args.postgres)
    charge = (
        f"WITH fresh AS (INSERT INTO {names.keys_table} (key) SELECT unnest(%(keys)s::text[]) "
        "ON CONFLICT DO NOTHING RETURNING key) "
        f"INSERT INTO {names.charges_table} (order_id, n, amount_cents) "
        "SELECT o.id, o.n, o.amount FROM unnest(%(keys)s::text[], %(ns)s::int[], "
        "%(amounts)s::int[]) AS o(id, n, amount) JOIN fresh ON fresh.key = o.id"
    )

    async def charge_batch(orders: list[Order]) -> None:
        unique = {o.order_id: o for o in orders}  # a redelivery inside one batch
        params = {
            "keys": list(unique),
            "ns": [o.n for o in unique.values()],
            "amounts": [o.amount_cents for o in unique.values()],
        }
        async with conn.transaction():
            await conn.execute(charge, params)

    return charge_batch, conn.close


def inventory_effect() -> Effect:
    stock: dict[str, int] = {}

    async def reserve(orders: list[Order]) -> None:
        for order in orders:
            stock[order.sku] = stock.get(order.sku, 0) - order.quantity

    return reserve


def shipping_effect() -> Effect:
    outbox: list[str] = []

    async def notify(orders: list[Order]) -> None:
        outbox.extend(f"order {o.order_id} for {o.customer} is being packed" for o in orders)
        del outbox[:-1000]  # a real sender would drain it; keep memory flat

    return notify


async def run_consumer(args: Any) -> None:
    role = args.role
    group = RunNames(args.run).group(role)
    total = int(args.rate * args.seconds)
    ledger = Ledger(total)
    closers: list[Callable[[], Awaitable[None]]] = []
    store: PostgresIdempotencyStore | None = None
    if role == "payments" and args.payments == "batch":
        effect, close_db = await payments_effect(args)
        closers.append(close_db)
    elif role == "payments":
        store = await PostgresIdempotencyStore.open(
            args.postgres, table=RunNames(args.run).keys_table + "_store",
            max_idle=args.concurrency)
        closers.append(store.close)
        effect = store_payment_effect(args)
    elif role == "inventory":
        effect = inventory_effect()
    else:
        effect = shipping_effect()

    client = Client(args.url)
    topic = RunNames(args.run).topic
    if args.handler == "batch":

        @client.subscribe(topic, group=group, batch_size=args.batch_size,
                          batch_timeout=args.batch_timeout, prefetch=args.prefetch, retry=RETRY)
        async def handle_batch(orders: list[Order]) -> None:
            await effect(orders)
            ledger.record(orders, time.time())
    else:
        stack = [Logging(), DeadLetter(), Retry(RETRY)]
        if store is not None:
            stack.append(Idempotency(store, transactional=True))

        @client.subscribe(topic, group=group, concurrency=args.concurrency,
                          prefetch=args.prefetch, middleware=stack)
        async def handle_one(order: Order) -> None:
            await effect([order])
            ledger.record([order], time.time())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await client.start()
    emit("ready", role=role)
    profiler = RoleProfiler.maybe(args.profile, role)
    cpu0 = time.process_time()
    ticking = asyncio.Event()
    ticker = asyncio.create_task(every_second(
        lambda: emit("tick", role=role, handled=ledger.handled), ticking))
    await stop.wait()
    await client.close()
    ticking.set()
    await ticker
    cpu = time.process_time() - cpu0
    for close in closers:
        await close()
    emit("done", role=role, cpu_seconds=cpu, failures=len(client.failures),
         profile=profiler.finish() if profiler else None, **ledger.summary())


def store_payment_effect(args: Any) -> Effect:
    """Per message, through mqkit's Idempotency middleware and PostgreSQL store: the key and
    the charge commit in one transaction (``current_transaction()``)."""
    names = RunNames(args.run)
    insert = (f"INSERT INTO {names.charges_table} (order_id, n, amount_cents) "
              "VALUES (%s, %s, %s)")

    async def charge_one(orders: list[Order]) -> None:
        connection = current_transaction().connection
        for order in orders:
            await connection.execute(insert, (order.order_id, order.n, order.amount_cents))

    return charge_one
