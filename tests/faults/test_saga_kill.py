"""200 sagas over a real broker, the orchestrator SIGKILLed 30 times at six boundaries.

The orchestrator runs in a child process (``saga_kill_child.py``) with a durable saga log;
the participants (reserve/release, charge/refund, ship) run in the test process, subscribed
through the broker with ``participant``, and apply their effects through ``Idempotency``
in the same SQLite transaction as the idempotency key. The effects table has no unique key
(only the idempotency key stands between a resent command and a second effect), and a
second table counts every command delivered (tries), keyed by saga id, step and phase.

Schedule: five rounds over the six boundaries of the child's docstring (saga-started,
action-started, command-sent, reply-received, compensation-sent, final-pending); each run
recovers, starts six new sagas and kills itself at a random passage of its boundary, which
six new sagas always reach, so each of the 30 runs must end by SIGKILL. A last, unkilled
run recovers the rest and starts the remaining sagas. Then all 200 must be completed or
compensated, as their data says, within 60 s of that restart; every (saga, step, phase)
effect applied at most once, and exactly the expected ones.

Ledger mapping: a saga id is *attempted* when the test asks for it, *acked* once its start
is in the saga log, *delivered* when the log says completed or compensated; so lost =
sagas started but never finished.

Brokers: RabbitMQ with the SQLite saga log and JetStream with the PostgreSQL saga log (both
stores, two brokers, one run each). memory:// is left out: its queues die with the killed
orchestrator's process. Kafka is left out for time: each of the 31 orchestrator restarts
would join a consumer group for its replies (seconds each), and remote steps are
already proved on Kafka in tests/saga/test_remote.py. SQS on moto is left out for the same
budget reason (long-poll round trips per step); the saga code paths are broker-agnostic.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mqkit import Client
from mqkit.message import Delivery
from mqkit.middleware import Idempotency, RetryPolicy
from mqkit.middleware.idempotency import current_transaction
from mqkit.saga import (
    LogEntry,
    Orchestrator,
    Phase,
    Saga,
    SagaRecord,
    SagaState,
    Step,
    StepContext,
    StepFailed,
    open_saga_store,
    participant,
)
from mqkit.stores.sqlite import SqliteIdempotencyStore
from tests.faults.ledger import Ledger, SideEffects, report
from tests.faults.saga_kill_child import BOUNDARIES, STEPS, expected_effects

CHILD = Path(__file__).with_name("saga_kill_child.py")
ROOT = Path(__file__).resolve().parents[2]
SAGAS = 200
ROUNDS = 5
NEW_PER_RUN = 6
# The highest passage to kill at, per boundary: six new sagas always pass it that often
# (the saga-started and final-pending once each, three reply-bearing actions for most, one
# compensation command for a charge refusal and two for a ship refusal).
KILL_AT_MAX = {"saga-started": 6, "action-started": 12, "command-sent": 12,
               "reply-received": 10, "compensation-sent": 3, "final-pending": 6}
RECOVERY_LIMIT = 60.0
FAST = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2)
FINAL = (SagaState.COMPLETED.value, SagaState.COMPENSATED.value)


class Participants:
    """The services the sagas command; effects and tries land in SQLite tables."""

    def __init__(self, client: Client, prefix: str, db: Path) -> None:
        self.db = db
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS applied "
                         "(saga_id TEXT NOT NULL, step TEXT NOT NULL, phase TEXT NOT NULL)")
        conn.close()
        self.tries = SideEffects(db.with_name("tries.db"))
        self.client, self.prefix = client, prefix
        self.keys: SqliteIdempotencyStore | None = None

    async def serve(self) -> None:
        self.keys = await SqliteIdempotencyStore.open(str(self.db))
        for step, undo in STEPS:
            for topic in (step, undo):
                if topic is not None:
                    self._serve(topic, self.keys)
        await self.client.start()

    def _serve(self, topic: str, keys: SqliteIdempotencyStore) -> None:
        tries = self.tries

        def count_tries(inner: Callable[[Delivery], Awaitable[Any]]) -> Any:
            async def counted(delivery: Delivery) -> Any:
                tries.apply(delivery.message.idempotency_key or delivery.message.id)
                return await inner(delivery)

            return counted

        @participant(self.client, f"{self.prefix}.{topic}", group=topic, retry=FAST,
                     middleware=[count_tries, Idempotency(keys, transactional=True)])
        async def handle(command: dict[str, Any]) -> dict[str, Any]:
            if command["phase"] == "action" and command["data"]["refuse"] == command["step"]:
                raise StepFailed(f"{command['step']} refused")
            await current_transaction().connection.execute(
                "INSERT INTO applied (saga_id, step, phase) VALUES (?, ?, ?)",
                (command["saga_id"], command["step"], command["phase"]),
            )
            return {"by": topic}

    def applied(self) -> Counter[tuple[str, str, str]]:
        with sqlite3.connect(self.db) as conn:
            rows = conn.execute("SELECT saga_id, step, phase FROM applied").fetchall()
        conn.close()
        return Counter((saga_id, step, phase) for saga_id, step, phase in rows)

    async def close(self) -> None:
        await self.client.close()
        if self.keys is not None:
            await self.keys.close()
        self.tries.close()


@pytest.fixture
def prefix() -> str:
    return f"fsaga_{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def saga_log(
    saga_store: str, prefix: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """URL of the saga log the orchestrator keeps (its tables are dropped afterwards)."""
    if saga_store == "sqlite":
        yield f"sqlite:///{tmp_path / 'saga.db'}"
        return
    url = str(request.getfixturevalue("postgres_url"))
    yield url
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f'DROP TABLE IF EXISTS "{prefix}_saga", "{prefix}_saga_log"')


async def run_orchestrator(
    broker: str, log_url: str, prefix: str, boundary: str, kill_at: int, new: int,
    timeout: float = 60,
) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), broker, log_url, prefix, boundary, str(kill_at), str(new),
        str(SAGAS), cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize(("broker", "saga_store"), [("rabbitmq", "sqlite"),
                                                    ("jetstream", "postgres")])
async def test_sagas_end_completed_or_compensated_after_thirty_orchestrator_kills(
    broker: str, saga_store: str, fault_url: str, saga_log: str, prefix: str, tmp_path: Path
) -> None:
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    began = time.monotonic()
    participants = Participants(Client(fault_url), prefix, tmp_path / "participants.db")
    try:
        await participants.serve()
        # Given the orchestrator killed five times at each boundary, restarted after each
        kills: list[tuple[str, int]] = []
        for _ in range(ROUNDS):
            for boundary in BOUNDARIES:
                kill_at = rng.randint(1, KILL_AT_MAX[boundary])
                code, output = await run_orchestrator(fault_url, saga_log, prefix, boundary,
                                                      kill_at, NEW_PER_RUN)
                assert code == -signal.SIGKILL, f"{boundary}@{kill_at}: exit {code}\n{output}"
                kills.append((boundary, kill_at))
        killed_for = time.monotonic() - began

        # When it is restarted once more and left alone
        restarted = time.monotonic()
        code, output = await run_orchestrator(fault_url, saga_log, prefix, "none", 0, -1,
                                              timeout=RECOVERY_LIMIT + 30)
        recovery = time.monotonic() - restarted
        assert code == 0, output
        last_run = json.loads(output.strip().splitlines()[-1])
    finally:
        await participants.close()

    # Then every saga ended as its data says, within the limit of the restart
    store = await open_saga_store(saga_log, table=f"{prefix}_saga")
    try:
        sagas = {s.id: s.state for s in await store.list(limit=None)}
        records = [await store.get(saga_id) for saga_id in sagas]
    finally:
        await store.close()
    ids = [f"{prefix}-{n}" for n in range(SAGAS)]
    ledger = Ledger()
    for saga_id in ids:
        ledger.attempt(saga_id)
    for saga_id in sagas:
        ledger.ack(saga_id)
    final = [i for i, state in sagas.items()
             if state in (SagaState.COMPLETED, SagaState.COMPENSATED)]
    verdict = ledger.verdict(final)
    assert verdict.ok, str(verdict)
    assert sorted(sagas) == sorted(ids)
    wrong = {i: sagas[i].value for i in ids if sagas[i] is not expected_effects(
        int(i.rsplit("-", 1)[1]))[0]}
    assert not wrong, wrong
    assert recovery < RECOVERY_LIMIT
    # ... and no saga was driven again after it ended: its final entry is its last, and only
    ended_twice = [r.id for r in records if r is not None and [
        e.seq for e in r.entries if e.phase is Phase.SAGA and e.status in FINAL
    ] != [r.entries[-1].seq]]
    assert not ended_twice, ended_twice[:5]

    # ... and each step's effect was applied at most once: exactly the effects owed
    applied = participants.applied()
    assert max(applied.values()) == 1, applied.most_common(3)
    for saga_id in ids:
        owed = {(saga_id, step, phase)
                for step, phase in expected_effects(int(saga_id.rsplit("-", 1)[1]))[1]}
        got = {key for key in applied if key[0] == saga_id}
        assert got == owed, f"{saga_id}: {sorted(got ^ owed)}"
    with sqlite3.connect(tmp_path / "tries.db") as conn:
        tries = Counter(dict(conn.execute("SELECT message_id, tries FROM effects").fetchall()))
    conn.close()

    states = Counter(s.value for s in sagas.values())
    report(
        "saga-orchestrator-kill", broker, **(verdict.row() | {"side_effects": len(applied)}),
        saga_store=saga_store, sagas=SAGAS, completed=states["completed"],
        compensated=states["compensated"], kills=len(kills),
        kills_per_boundary=dict(Counter(b for b, _ in kills)),
        commands_delivered=sum(tries.values()), max_tries_per_step=max(tries.values()),
        resent_or_redelivered=sum(tries.values()) - len(tries),
        last_run_recovered=last_run["recovered"], last_run_started=last_run["started"],
        log_entries=sum(len(r.entries) for r in records if r is not None),
        recovery_seconds=round(recovery, 2), kill_phase_seconds=round(killed_for, 2),
        seconds=round(time.monotonic() - began, 2), seed=seed,
    )


class LateReads:
    """A saga log whose reads arrive late: the first after 0.05 s, the others after 0.5 s."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.reads = inner, 0

    async def get(self, saga_id: str) -> Any:
        record = await self.inner.get(saga_id)  # read now, handed over later
        self.reads += 1
        await asyncio.sleep(0.05 if self.reads == 1 else 0.5)
        return record

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_recovery_racing_a_repeated_start_drives_the_saga_once(tmp_path: Path) -> None:
    # Given an unfinished saga in the log, as a killed orchestrator leaves it
    calls: Counter[str] = Counter()

    def step(name: str) -> Step:
        async def act(ctx: StepContext) -> str:
            calls[name] += 1
            return name

        return Step(name, act)

    saga = Saga("late-read", [step("a"), step("b")])
    log = await open_saga_store(f"sqlite:///{tmp_path / 'saga.db'}")
    now = time.time()
    await log.create(SagaRecord("s-1", saga.name, SagaState.RUNNING, {"k": 1}, now, now,
                                entries=[LogEntry(Phase.SAGA, SagaState.RUNNING.value, at=now)]))
    orchestrator = Orchestrator(LateReads(log), [saga])

    # When a client starts it again while recovery reads it (and that read arrives after the
    # client's drive has ended)
    again = asyncio.create_task(orchestrator.start(saga, {"k": 1}, saga_id="s-1"))
    recovered = await orchestrator.recover()
    outcome = await again
    record = await log.get("s-1")
    await log.close()

    # Then each step ran once and the log ends at its one "completed"
    assert outcome.state is SagaState.COMPLETED
    assert [o.state for o in recovered] == [SagaState.COMPLETED]
    assert calls == Counter({"a": 1, "b": 1})
    assert record is not None
    assert [e.status for e in record.entries if e.phase is Phase.SAGA] == ["running", "completed"]
    report("saga-stale-read-redrive", "sqlite", lost=0, unexpected=0, duplicates=0,
           side_effects=sum(calls.values()), step_runs=dict(calls))
