"""The order pipeline's shared vocabulary: the order, which orders are poison, run names.

Orders are numbered 0..N-1 so every process can account for each one in a bytearray
(``n`` indexes it). One order in ``POISON_EVERY`` is poison: it is valid JSON but fails the
model's validation (quantity 0), so every group dead-letters it.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass

from pydantic import BaseModel, Field

POISON_EVERY = 1000  # 0.1 % of orders
ROLES = ("payments", "inventory", "shipping")


class Order(BaseModel):
    order_id: str
    n: int = Field(ge=0)
    customer: str
    sku: str
    quantity: int = Field(gt=0)
    amount_cents: int = Field(gt=0)
    created_at: float
    """When the open-loop schedule said the order was placed (epoch seconds)."""


def is_poison(n: int) -> bool:
    return n % POISON_EVERY == POISON_EVERY - 1


def order_payload(n: int, run: str, created_at: float) -> dict[str, object]:
    """The JSON the producer sends for order ``n`` (poison ones carry quantity 0)."""
    return {
        "order_id": f"{run}-{n}",
        "n": n,
        "customer": f"c-{n % 9973}",
        "sku": f"sku-{n % 257}",
        "quantity": 0 if is_poison(n) else 1 + n % 3,
        "amount_cents": 500 + n % 5000,
        "created_at": created_at,
    }


@dataclass(frozen=True)
class RunNames:
    """Every broker and database name one run uses, unique per run."""

    run: str

    @property
    def topic(self) -> str:
        return f"pipeline.orders.{self.run}"

    @property
    def dlq(self) -> str:
        return f"{self.topic}.dlq"

    def group(self, role: str) -> str:
        """The consumer group of ``role`` (payments, inventory, shipping or audit)."""
        return f"pipeline-{role}-{self.run}"

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self.group(role) for role in ROLES)

    @property
    def keys_table(self) -> str:
        return f"pipeline_{self.run}_payment_keys"

    @property
    def charges_table(self) -> str:
        return f"pipeline_{self.run}_charges"


# --- compact transfer of per-order counts between processes (JSON lines) -----------------
def pack(counts: bytearray) -> str:
    return base64.b64encode(zlib.compress(bytes(counts), 6)).decode()


def unpack(text: str) -> bytearray:
    return bytearray(zlib.decompress(base64.b64decode(text)))


def ranges_to_counts(ranges: list[list[int]], total: int) -> bytearray:
    """A 0/1 bytearray with 1 for each order inside ``[start, end)`` ranges."""
    marks = bytearray(total)
    for start, end in ranges:
        marks[start:end] = b"\x01" * (end - start)
    return marks


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]
