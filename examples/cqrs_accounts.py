"""CQRS with event sourcing: commands -> aggregate -> events -> projections -> read table.

    python examples/cqrs_accounts.py                                 # SQLite + memory://
    python examples/cqrs_accounts.py --store postgresql://mqkit:mqkit@127.0.0.1:5432/mqkit \\
                                     --url kafka://127.0.0.1:9092

The write side validates commands on an ``Account`` aggregate and appends its events (with a
snapshot every 3 events, and one outbox row per event, in the same transaction). The read
side is a balance table and a movement history kept by projections with checkpoints beside
them. After each command the caller waits until the projections reached the command's
position (read-your-own-writes), so the query that follows always sees it. An outbox relay
publishes the events to the broker, where a notifier with ``Idempotency`` reacts once each.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from mqkit import Client, Idempotency
from mqkit.eventsourcing import (
    Aggregate,
    Event,
    EventTypes,
    OutboxRelay,
    ProjectionRunner,
    RecordedEvent,
    Repository,
    StoreTransaction,
    open_event_store,
)
from mqkit.stores import MemoryIdempotencyStore
from mqkit.testing import wait_until


class AccountOpened(Event):
    owner: str


class MoneyDeposited(Event):
    amount: int


class MoneyWithdrawn(Event):
    amount: int


class Account(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.balance = 0
        self.open = False

    # --- commands: check, then record ------------------------------------------------
    def open_for(self, owner: str) -> None:
        if self.open:
            raise ValueError(f"account {self.id} is already open")
        self.record(AccountOpened(owner=owner))

    def deposit(self, amount: int) -> None:
        if amount <= 0:
            raise ValueError("deposit a positive amount")
        self.record(MoneyDeposited(amount=amount))

    def withdraw(self, amount: int) -> None:
        if amount > self.balance:
            raise ValueError(f"insufficient funds: {self.balance} < {amount}")
        self.record(MoneyWithdrawn(amount=amount))

    # --- state changes -----------------------------------------------------------------
    def apply(self, event: Event) -> None:
        match event:
            case AccountOpened():
                self.open = True
            case MoneyDeposited(amount=amount):
                self.balance += amount
            case MoneyWithdrawn(amount=amount):
                self.balance -= amount


class BalanceTable:
    name = "balances"

    def __init__(self, table: str) -> None:
        self.table = table

    async def setup(self, tx: StoreTransaction) -> None:
        await tx.execute(f"CREATE TABLE IF NOT EXISTS {self.table} "
                         "(account text PRIMARY KEY, owner text, balance bigint)")

    async def reset(self, tx: StoreTransaction) -> None:
        await tx.execute(f"DELETE FROM {self.table}")

    async def handle(self, event: RecordedEvent, tx: StoreTransaction) -> None:
        account = event.stream.split("-", 1)[1]
        if event.type == "AccountOpened":
            await tx.execute(f"INSERT INTO {self.table} VALUES (?, ?, 0)",
                             (account, event.data["owner"]))
        elif event.type in ("MoneyDeposited", "MoneyWithdrawn"):
            sign = 1 if event.type == "MoneyDeposited" else -1
            await tx.execute(f"UPDATE {self.table} SET balance = balance + ? WHERE account = ?",
                             (sign * event.data["amount"], account))


class HistoryTable:
    name = "history"

    def __init__(self, table: str) -> None:
        self.table = table

    async def setup(self, tx: StoreTransaction) -> None:
        await tx.execute(f"CREATE TABLE IF NOT EXISTS {self.table} "
                         "(position bigint PRIMARY KEY, account text, kind text, amount bigint)")

    async def reset(self, tx: StoreTransaction) -> None:
        await tx.execute(f"DELETE FROM {self.table}")

    async def handle(self, event: RecordedEvent, tx: StoreTransaction) -> None:
        if event.type in ("MoneyDeposited", "MoneyWithdrawn"):
            await tx.execute(f"INSERT INTO {self.table} VALUES (?, ?, ?, ?)",
                             (event.position, event.stream.split("-", 1)[1], event.type,
                              event.data["amount"]))


async def main(store_url: str, url: str) -> int:
    prefix = f"cqrs_{uuid.uuid4().hex[:8]}"
    topic = f"example-{prefix}.accounts"
    store: Any = await open_event_store(store_url, prefix=prefix)
    repo = Repository(store, Account, EventTypes([AccountOpened, MoneyDeposited, MoneyWithdrawn]),
                      snapshot_every=3, outbox_topic=topic)
    balances, history = BalanceTable(f"{prefix}_balances"), HistoryTable(f"{prefix}_history")
    runner = ProjectionRunner(store, [balances, history])
    await runner.setup()
    projecting = asyncio.create_task(runner.run())
    notified: list[str] = []

    async def execute(account_id: str, command: str, *args: Any) -> None:
        """Handle one command: load, decide, save; then wait until the read side has it."""
        account = await repo.load(account_id)
        getattr(account, command)(*args)
        recorded = await repo.save(account)
        await runner.wait_for(recorded[-1].position)

    async def query_balance(account_id: str) -> int:
        async with store.transaction() as tx:
            rows = await tx.execute(f"SELECT balance FROM {balances.table} WHERE account = ?",
                                    (account_id,))
        return int(rows[0][0])

    async with Client(url, middleware=[Idempotency(MemoryIdempotencyStore())]) as client:
        await client.ensure_topic(topic, groups=["notifier"])

        @client.subscribe(topic, group="notifier")
        async def notify(event: dict[str, Any]) -> None:
            notified.append(str(event))

        await client.start()
        relay = OutboxRelay(store, client.transport)
        relaying = asyncio.create_task(relay.run())
        try:
            await execute("12345", "open_for", "ada")
            for command, amount in [("deposit", 1000), ("withdraw", 200), ("deposit", 50),
                                    ("withdraw", 350)]:
                await execute("12345", command, amount)
                print(f"{command:>8} {amount:>5} -> balance {await query_balance('12345')}")
            try:
                await execute("12345", "withdraw", 10_000)
            except ValueError as exc:
                print(f"rejected: {exc}")
            await wait_until(lambda: len(notified) == 5, timeout=20, what="5 notifications")
            balance = await query_balance("12345")
            async with store.transaction() as tx:
                movements = await tx.execute(f"SELECT count(*) FROM {history.table}")
            snapshot = await store.load_snapshot("Account-12345")
        finally:
            relay.stop()
            runner.stop()
            await asyncio.gather(relaying, projecting)
            if store_url.startswith("postgres"):
                async with store.transaction() as tx:
                    for t in ("events", "head", "snapshots", "checkpoints", "outbox",
                              "balances", "history"):
                        await tx.execute(f"DROP TABLE IF EXISTS {prefix}_{t}")
            await store.close()
    ok = balance == 500 and movements[0][0] == 4 and snapshot is not None and len(notified) == 5
    print(f"{'ok' if ok else 'FAILED'}: balance {balance}, {movements[0][0]} movements, "
          f"snapshot at version {snapshot.version if snapshot else None}, "
          f"{len(notified)} events published through the outbox")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="memory://cqrs-example")
    parser.add_argument("--store", default=None, help="event store URL (default: SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store_url = args.store or f"sqlite:///{Path(tmp) / 'accounts.db'}"
        sys.exit(asyncio.run(main(store_url, args.url)))
