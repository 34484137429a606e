"""The seed's bank account, as an aggregate and two projections, shared by the tests."""

from __future__ import annotations

from mqkit.eventsourcing import Aggregate, Event, EventTypes, RecordedEvent, StoreTransaction


class AccountOpened(Event):
    owner: str


class MoneyDeposited(Event):
    amount: int


class MoneyWithdrawn(Event):
    amount: int


TYPES = EventTypes([AccountOpened, MoneyDeposited, MoneyWithdrawn])


class Account(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.owner = ""
        self.balance = 0
        self.movements = 0

    def open(self, owner: str) -> None:
        if self.version:
            raise ValueError("already open")
        self.record(AccountOpened(owner=owner))

    def deposit(self, amount: int) -> None:
        self.record(MoneyDeposited(amount=amount))

    def withdraw(self, amount: int) -> None:
        if amount > self.balance:
            raise ValueError("insufficient funds")
        self.record(MoneyWithdrawn(amount=amount))

    def apply(self, event: Event) -> None:
        match event:
            case AccountOpened(owner=owner):
                self.owner = owner
            case MoneyDeposited(amount=amount):
                self.balance += amount
                self.movements += 1
            case MoneyWithdrawn(amount=amount):
                self.balance -= amount
                self.movements += 1


def account_of(event: RecordedEvent) -> str:
    return event.stream.split("-", 1)[1]


class BalanceView:
    """Read model: one row per account with its balance."""

    def __init__(self, prefix: str) -> None:
        self.name = "balances"
        self.table = f"{prefix}_balances"

    async def setup(self, tx: StoreTransaction) -> None:
        await tx.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (account text PRIMARY KEY, balance bigint)"
        )

    async def reset(self, tx: StoreTransaction) -> None:
        await tx.execute(f"DELETE FROM {self.table}")

    async def handle(self, event: RecordedEvent, tx: StoreTransaction) -> None:
        account = account_of(event)
        if event.type == "AccountOpened":
            await tx.execute(f"INSERT INTO {self.table} VALUES (?, 0)", (account,))
        elif event.type in ("MoneyDeposited", "MoneyWithdrawn"):
            sign = 1 if event.type == "MoneyDeposited" else -1
            await tx.execute(
                f"UPDATE {self.table} SET balance = balance + ? WHERE account = ?",
                (sign * int(event.data["amount"]), account),
            )

    async def rows(self, tx: StoreTransaction) -> list[tuple[object, ...]]:
        return await tx.execute(f"SELECT account, balance FROM {self.table} ORDER BY account")


class HistoryView:
    """Read model: every movement in global order."""

    def __init__(self, prefix: str) -> None:
        self.name = "history"
        self.table = f"{prefix}_history"

    async def setup(self, tx: StoreTransaction) -> None:
        await tx.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (position bigint PRIMARY KEY, "
            "account text, kind text, amount bigint)"
        )

    async def reset(self, tx: StoreTransaction) -> None:
        await tx.execute(f"DELETE FROM {self.table}")

    async def handle(self, event: RecordedEvent, tx: StoreTransaction) -> None:
        if event.type in ("MoneyDeposited", "MoneyWithdrawn"):
            await tx.execute(
                f"INSERT INTO {self.table} VALUES (?, ?, ?, ?)",
                (event.position, account_of(event), event.type, int(event.data["amount"])),
            )

    async def rows(self, tx: StoreTransaction) -> list[tuple[object, ...]]:
        return await tx.execute(f"SELECT * FROM {self.table} ORDER BY position")
