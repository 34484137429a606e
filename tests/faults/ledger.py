"""The delivery ledger every fault test is judged by.

Publishers record each message id as *attempted* before the call, then *acked* when the
broker confirmed it or *indeterminate* when the call timed out or the connection died with
the outcome unknown (a refused publish stays merely attempted). Consumers record every
delivery, and apply their side effect to a table keyed by the message id, so a redelivery
cannot apply it twice. From these:

    lost        = acked - delivered          (must be empty)
    unexpected  = delivered - attempted      (must be empty)
    duplicates  = deliveries - unique ids    (allowed: at-least-once; absorbed by the table)

Consumers often run in child processes that are killed with SIGKILL, so deliveries go to an
append-only file (one ``write`` per line: the kernel keeps it whatever happens to the
process) and side effects to SQLite in WAL mode (a committed row survives the kill).
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


class DeliveryLog:
    """Append-only record of deliveries, safe to write from several processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.touch()
        self._fd: int | None = None

    def record(self, message_id: str) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(self._fd, message_id.encode() + b"\n")  # O_APPEND: one atomic line

    def counts(self) -> Counter[str]:
        with self.path.open("rb") as lines:
            return Counter(line.rstrip(b"\n").decode() for line in lines if line.strip())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SideEffects:
    """The consumer's side effect: a row per message id, applied at most once."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS effects (message_id TEXT PRIMARY KEY, tries INTEGER)"
        )

    def apply(self, message_id: str) -> bool:
        """Apply once; True when this call applied it, False for a repeat."""
        before = self._db.total_changes
        self._db.execute(
            "INSERT INTO effects VALUES (?, 1) "
            "ON CONFLICT(message_id) DO UPDATE SET tries = tries + 1",
            (message_id,),
        )
        row = self._db.execute(
            "SELECT tries FROM effects WHERE message_id = ?", (message_id,)
        ).fetchone()
        return bool(self._db.total_changes > before and row[0] == 1)

    def applied(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT message_id FROM effects")}

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM effects").fetchone()[0])

    def close(self) -> None:
        self._db.close()


@dataclass
class Verdict:
    attempted: int
    acked: int
    indeterminate: int
    delivered_unique: int
    deliveries: int
    lost: set[str]
    unexpected: set[str]
    duplicates: int
    side_effects: int | None = None

    @property
    def ok(self) -> bool:
        return not self.lost and not self.unexpected

    def row(self) -> dict[str, int | None]:
        """The figures, for a report table."""
        return {
            "attempted": self.attempted,
            "acked": self.acked,
            "indeterminate": self.indeterminate,
            "delivered": self.delivered_unique,
            "deliveries": self.deliveries,
            "lost": len(self.lost),
            "unexpected": len(self.unexpected),
            "duplicates": self.duplicates,
            "side_effects": self.side_effects,
        }

    def __str__(self) -> str:
        sample = sorted(self.lost)[:5] + sorted(self.unexpected)[:5]
        return f"{self.row()} sample={sample}"


@dataclass
class Ledger:
    """Publish outcomes (kept by the publishing process) and the verdict."""

    attempted: set[str] = field(default_factory=set)
    acked: set[str] = field(default_factory=set)
    indeterminate: set[str] = field(default_factory=set)

    def attempt(self, message_id: str) -> None:
        self.attempted.add(message_id)

    def ack(self, message_id: str) -> None:
        self.indeterminate.discard(message_id)
        self.acked.add(message_id)

    def unknown(self, message_id: str) -> None:
        """The publish timed out or its connection died: it may or may not be stored."""
        if message_id not in self.acked:
            self.indeterminate.add(message_id)

    def verdict(
        self, deliveries: Counter[str] | Iterable[str], side_effects: SideEffects | None = None
    ) -> Verdict:
        counts = deliveries if isinstance(deliveries, Counter) else Counter(deliveries)
        delivered = set(counts)
        return Verdict(
            attempted=len(self.attempted),
            acked=len(self.acked),
            indeterminate=len(self.indeterminate),
            delivered_unique=len(delivered),
            deliveries=sum(counts.values()),
            lost=self.acked - delivered,
            unexpected=delivered - self.attempted,
            duplicates=sum(counts.values()) - len(delivered),
            side_effects=side_effects.count() if side_effects is not None else None,
        )


REPORT = Path(
    os.environ.get(
        "MQKIT_FAULTS_REPORT",
        Path(__file__).resolve().parents[2] / ".pytest_cache" / "faults-report.jsonl",
    )
)


def report(scenario: str, broker: str, **figures: object) -> None:
    """Append one row of figures (lost, duplicates, seconds, ...) for docs/reliability.md."""
    import json
    import time

    REPORT.parent.mkdir(parents=True, exist_ok=True)
    row = {"scenario": scenario, "broker": broker, "at": time.time(), **figures}
    with REPORT.open("a") as out:
        out.write(json.dumps(row, default=str) + "\n")
