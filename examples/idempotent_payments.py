"""Idempotent payments: duplicates of a payment (same idempotency key) charge once.

The key is recorded in the same SQLite transaction as the charge, so the charge and the
"already handled" mark commit together or not at all (exactly-once effects).

    python examples/idempotent_payments.py [--url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from mqkit.client import Client
from mqkit.middleware import DeadLetter, Idempotency, Retry, current_transaction
from mqkit.stores import open_idempotency_store

# payment id -> how many times the (retrying) producer sent it
SENT = {"p-1": 3, "p-2": 2, "p-3": 1}


async def main(url: str) -> int:
    topic = f"example-{uuid.uuid4().hex[:8]}.payments"
    with tempfile.TemporaryDirectory() as tmp:
        store = await open_idempotency_store(f"sqlite:///{Path(tmp) / 'payments.db'}")
        handled = 0
        drained = asyncio.Event()
        async with Client(url) as client:

            @client.subscribe(
                topic,
                group="payments",
                middleware=[DeadLetter(), Retry(), Idempotency(store, transactional=True)],
            )
            async def charge(payment: dict[str, Any]) -> None:
                nonlocal handled
                db = current_transaction().connection
                await db.execute(
                    "CREATE TABLE IF NOT EXISTS charges (payment_id TEXT, amount REAL)"
                )
                await db.execute(
                    "INSERT INTO charges VALUES (?, ?)", (payment["id"], payment["amount"])
                )
                handled += 1
                if payment["id"] == "p-last":
                    drained.set()
                print(f"  charged {payment['id']} {payment['amount']:.2f}")

            await client.start()
            for payment_id, copies in SENT.items():
                for _ in range(copies):
                    await client.publish(topic, {"id": payment_id, "amount": 25.0},
                                         key=payment_id, idempotency_key=payment_id)
            print(f"published {sum(SENT.values())} messages for {len(SENT)} payments")

            # Wait until a fresh payment published last has been charged: the queue is drained.
            await client.publish(topic, {"id": "p-last", "amount": 1.0},
                                 key="p-last", idempotency_key="p-last")
            async with asyncio.timeout(30):
                await drained.wait()
            await asyncio.sleep(0.2)  # let any late duplicate arrive (it must be absorbed)

        await store.close()
        with sqlite3.connect(Path(tmp) / "payments.db") as db:
            rows = db.execute("SELECT payment_id, COUNT(*) FROM charges GROUP BY payment_id")
            charges = {str(pid): int(n) for pid, n in rows}
        db.close()

    charges.pop("p-last", None)
    print(f"charges per payment: {charges}")
    ok = charges == {pid: 1 for pid in SENT}
    print("ok: each payment charged exactly once" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://", help="broker URL (default memory://)")
    sys.exit(asyncio.run(main(parser.parse_args().url)))
