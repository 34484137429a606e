"""Two event-store writers race on the same streams; one is SIGKILLed in the middle of appends.

Both writers (``eventstore_child.py``, separate processes) append 1-3 event batches to the
same four streams with an expected version they only correct on a ``ConcurrencyError``, so
they conflict often. Once the victim has had a random number of appends acknowledged, it is
SIGKILLed from outside: usually inside an ``append`` call. The survivor must finish all its
appends. Then the store is read back and judged:

- every stream's versions are 1..n and the global positions 1..N, without gaps or repeats;
- every batch a writer saw succeed is there exactly once, at the versions it was told
  (nothing lost, nothing overwritten); every batch is there whole or not at all;
- nothing is in the store that no writer attempted; conflicts were raised.

Runs on the durable event stores mqkit offers: a SQLite file and PostgreSQL. The memory store
is left out: it lives inside one process, so two processes cannot share it, and a killed
process takes it along. No broker is involved, so the broker list does not apply.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from mqkit.eventsourcing import RecordedEvent, iterate_all, open_event_store
from tests.faults.ledger import DeliveryLog, Ledger, report

CHILD = Path(__file__).with_name("eventstore_child.py")
ROOT = Path(__file__).resolve().parents[2]
STREAMS = 4
APPENDS = 300  # batches each writer must get acknowledged
TABLES = ("events", "head", "snapshots", "checkpoints", "outbox")


@dataclass
class Batch:
    writer: str
    event_ids: list[str]
    stream: str | None = None
    first_version: int | None = None
    conflicted: bool = False


@dataclass
class Writers:
    """What both writers recorded, read back from their files."""

    batches: dict[str, Batch] = field(default_factory=dict)
    conflicts: int = 0

    @classmethod
    def read(cls, out: Path, names: list[str]) -> Writers:
        found = cls()
        for name in names:
            for line in DeliveryLog(out / f"{name}.attempted").counts():
                batch_id, ids = line.split()
                found.batches[batch_id] = Batch(name, ids.split(","))
            for line in DeliveryLog(out / f"{name}.acked").counts():
                batch_id, stream, first, _ = line.split()
                batch = found.batches[batch_id]
                batch.stream, batch.first_version = stream, int(first)
            for line in DeliveryLog(out / f"{name}.conflicts").counts():
                found.batches[line.split()[0]].conflicted = True
                found.conflicts += 1
        return found

    def ledger(self) -> Ledger:
        ledger = Ledger()
        for batch in self.batches.values():
            for event_id in batch.event_ids:
                ledger.attempt(event_id)
                if batch.stream is not None:
                    ledger.ack(event_id)
                elif not batch.conflicted:  # in flight when its writer died
                    ledger.unknown(event_id)
        return ledger


def acked_lines(out: Path, name: str) -> int:
    path = out / f"{name}.acked"
    return path.read_bytes().count(b"\n") if path.exists() else 0


async def spawn(
    url: str, prefix: str, name: str, out: Path, seed: int
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), url, prefix, name, str(APPENDS), str(STREAMS), str(out),
        str(seed), cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def drop_tables(url: str, prefix: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for table in TABLES:
            await conn.execute(f'DROP TABLE IF EXISTS "{prefix}_{table}"')


@pytest.fixture
def prefix() -> str:
    return f"race_{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, prefix: str
) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'events.db'}"
        return
    url = str(request.getfixturevalue("postgres_url"))
    yield url
    await drop_tables(url, prefix)


async def read_back(url: str, prefix: str) -> list[RecordedEvent]:
    store = await open_event_store(url, prefix=prefix)
    try:
        return [event async for event in iterate_all(store)]
    finally:
        await store.close()


async def test_racing_writers_with_one_killed_lose_and_overwrite_nothing(
    store_url: str, prefix: str, tmp_path: Path
) -> None:
    seed = random.randrange(1_000_000)
    kill_after = random.Random(seed).randint(40, 150)  # acked appends before the SIGKILL
    backend = store_url.split("://", 1)[0].replace("postgresql", "postgres")
    out = tmp_path / "writers"
    out.mkdir()
    started = time.monotonic()
    # Given the store's tables exist before the writers race to use them
    await (await open_event_store(store_url, prefix=prefix)).close()

    # When two writers race on the same streams and the victim is killed mid-run
    victim = await spawn(store_url, prefix, "victim", out, seed)
    survivor = await spawn(store_url, prefix, "survivor", out, seed + 1)
    try:
        deadline = time.monotonic() + 60
        while not all((out / f"{name}.ready").exists() for name in ("victim", "survivor")):
            assert victim.returncode is None and survivor.returncode is None
            assert time.monotonic() < deadline, "the writers did not open the store"
            await asyncio.sleep(0.01)
        for proc in (victim, survivor):
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        # (or, should the victim lag, while the survivor still has half its appends to do)
        while (acked_lines(out, "victim") < kill_after
               and acked_lines(out, "survivor") < APPENDS // 2):
            assert victim.returncode is None, "the victim ended before it could be killed"
            assert time.monotonic() < deadline, "the victim made no progress"
            await asyncio.sleep(0.002)
        victim.send_signal(signal.SIGKILL)
        survivor_at_kill = acked_lines(out, "survivor")
        await asyncio.wait_for(victim.wait(), timeout=10)
        victim_acks = acked_lines(out, "victim")
        survivor_out, survivor_err = await asyncio.wait_for(survivor.communicate(), timeout=90)
    finally:
        for proc in (victim, survivor):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    seconds = time.monotonic() - started

    # Then the victim died by the signal and the survivor carried on to the end
    assert victim.returncode == -signal.SIGKILL
    assert survivor.returncode == 0, (survivor_out + survivor_err).decode()
    assert acked_lines(out, "survivor") == APPENDS
    survivor_after_kill = APPENDS - survivor_at_kill

    events = await read_back(store_url, prefix)
    writers = Writers.read(out, ["victim", "survivor"])
    ledger = writers.ledger()
    verdict = ledger.verdict(Counter(e.event_id for e in events))

    # ... positions and every stream's versions have no gap and no repeat
    assert [e.position for e in events] == list(range(1, len(events) + 1))
    versions: dict[str, list[int]] = {}
    for e in events:
        versions.setdefault(e.stream, []).append(e.version)
    for stream, seen in versions.items():
        assert sorted(seen) == list(range(1, len(seen) + 1)), f"{stream}: {seen}"
    # ... every acknowledged batch is stored whole at the versions its writer was told
    at = {(e.stream, e.version): e.event_id for e in events}
    overwritten = [
        b for b in writers.batches.values() if b.stream is not None and b.first_version is not None
        and [at.get((b.stream, b.first_version + i)) for i in range(len(b.event_ids))]
        != b.event_ids
    ]
    assert not overwritten, overwritten[:3]
    # ... and any other batch is stored whole or not at all
    stored = set(at.values())
    torn = [b for b in writers.batches.values()
            if 0 < sum(i in stored for i in b.event_ids) < len(b.event_ids)]
    assert not torn, torn[:3]
    # ... a refused append stored nothing
    assert not any(i in stored for b in writers.batches.values() if b.conflicted
                   for i in b.event_ids)
    assert verdict.ok, str(verdict)
    assert verdict.duplicates == 0
    assert writers.conflicts > 0
    assert survivor_after_kill > 0
    in_flight = [b for b in writers.batches.values() if b.stream is None and not b.conflicted]
    assert len(in_flight) <= 1  # only the victim's last call can be unresolved
    landed = sum(all(i in stored for i in b.event_ids) for b in in_flight)

    report(
        "eventstore-race-kill", backend, **verdict.row(), events=len(events),
        streams=len(versions), conflicts=writers.conflicts, killed_after_acks=victim_acks,
        in_flight_at_kill=len(in_flight), in_flight_landed=landed,
        survivor_appends_after_kill=survivor_after_kill, overwritten=len(overwritten),
        torn=len(torn), seed=seed, seconds=round(seconds, 2),
    )
