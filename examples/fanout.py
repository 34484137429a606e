"""Fan-out: one topic, three consumer groups; each group sees every order once.

    python examples/fanout.py [--url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections import defaultdict
from typing import Any

from mqkit.client import Client

GROUPS = ("billing", "notifications", "analytics")
ORDERS = 10


async def main(url: str) -> int:
    topic = f"example-{uuid.uuid4().hex[:8]}.orders"
    seen: dict[str, list[str]] = defaultdict(list)
    all_seen = asyncio.Event()
    async with Client(url) as client:
        for group in GROUPS:

            def register(group: str) -> None:
                @client.subscribe(topic, group=group)
                async def handle(order: dict[str, Any]) -> None:
                    seen[group].append(order["id"])
                    if all(len(seen[g]) >= ORDERS for g in GROUPS):
                        all_seen.set()

            register(group)

        await client.start()
        orders = [{"id": f"o-{i}", "amount": i * 10} for i in range(1, ORDERS + 1)]
        await client.publish_batch(topic, orders, key=lambda o: o["id"])
        print(f"published {ORDERS} orders to {topic}")

        async with asyncio.timeout(30):
            await all_seen.wait()

    expected = sorted(o["id"] for o in orders)
    for group in GROUPS:
        print(f"  {group:<14} handled {len(seen[group])} orders")
    ok = all(sorted(seen[g]) == expected for g in GROUPS)
    print("ok: every group saw every order exactly once" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://", help="broker URL (default memory://)")
    sys.exit(asyncio.run(main(parser.parse_args().url)))
