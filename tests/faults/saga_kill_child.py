"""The orchestrator process of the saga kill test: recovers, starts new sagas, dies on cue.

    python tests/faults/saga_kill_child.py BROKER_URL STORE_URL PREFIX BOUNDARY KILL_AT \
        NEW_SAGAS TOTAL

Each run calls ``Orchestrator.recover()`` (the restart path) and meanwhile starts up to
NEW_SAGAS sagas of ``PREFIX-0 .. PREFIX-{TOTAL-1}`` that are not in the saga log yet (all of
them when NEW_SAGAS is -1), and starts again (same id, same data) the unfinished ones, as
clients retrying would: up to 32 at a time. The process SIGKILLs itself the
KILL_AT-th time it passes BOUNDARY (``none``: never), one of these points of its work:

- ``saga-started``: the saga's ``running`` record is in the log, no step has begun;
- ``action-started``: a step's ``started`` entry is logged, its command not sent yet;
- ``command-sent``: the broker confirmed the command; the log still says ``started``;
- ``reply-received``: the participant's reply is in hand, the step's ``done`` not logged;
- ``compensation-sent``: a compensation command is at the broker, its outcome not logged;
- ``final-pending``: the last step's outcome is logged, ``completed``/``compensated`` not.

The saga: ``reserve`` (undone by ``release``), ``charge`` (``refund``), ``ship``; commands go
over the broker to participants that live in the test process. Saga ``n`` is refused at
``charge`` when ``n % 5 == 0`` and at ``ship`` when ``n % 5 == 1``, so 40% compensate.
Prints a JSON line of what it did when it was not killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make ``mqkit`` and ``tests`` importable
    sys.path.insert(0, str(ROOT))

from mqkit import Client  # noqa: E402
from mqkit.saga import (  # noqa: E402
    LogEntry,
    Orchestrator,
    Phase,
    Saga,
    SagaState,
    SagaStore,
    Status,
    Step,
    StepContext,
    StepFn,
    Transition,
    open_saga_store,
)

BOUNDARIES = ("saga-started", "action-started", "command-sent", "reply-received",
              "compensation-sent", "final-pending")
STEPS = (("reserve", "release"), ("charge", "refund"), ("ship", None))
SAGA_NAME = "fault-order"
STEP_TIMEOUT = 20.0
START_CONCURRENCY = 32


def saga_data(n: int) -> dict[str, Any]:
    refuse = {0: "charge", 1: "ship"}.get(n % 5)
    return {"n": n, "refuse": refuse}


def expected_effects(n: int) -> tuple[SagaState, set[tuple[str, str]]]:
    """How saga ``n`` must end and the (step, phase) effects participants must have applied."""
    refuse = saga_data(n)["refuse"]
    if refuse is None:
        return SagaState.COMPLETED, {(step, "action") for step, _ in STEPS}
    done = [step for step, _ in STEPS[: [s for s, _ in STEPS].index(refuse)]]
    return SagaState.COMPENSATED, ({(s, "action") for s in done}
                                   | {(s, "compensation") for s in done})


class Boundaries:
    """Counts passages of each boundary; SIGKILLs this process at the chosen one."""

    def __init__(self, boundary: str, kill_at: int) -> None:
        self.boundary, self.kill_at = boundary, kill_at
        self.passed: Counter[str] = Counter()

    def point(self, name: str) -> None:
        self.passed[name] += 1
        if name == self.boundary and self.passed[name] == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


class WatchedClient(Client):
    """A client that reports each command the broker confirmed (action or compensation)."""

    def __init__(self, url: str, prefix: str, boundaries: Boundaries) -> None:
        super().__init__(url)
        self.boundaries = boundaries
        self.actions = {f"{prefix}.{step}" for step, _ in STEPS}
        self.compensations = {f"{prefix}.{undo}" for _, undo in STEPS if undo}

    async def publish(self, topic: str, payload: Any, **fields: Any) -> Any:
        sent = await super().publish(topic, payload, **fields)
        if topic in self.actions:
            self.boundaries.point("command-sent")
        elif topic in self.compensations:
            self.boundaries.point("compensation-sent")
        return sent


class WatchedStore:
    """The saga log, with a boundary just before a saga's final state is written."""

    def __init__(self, inner: SagaStore, boundaries: Boundaries) -> None:
        self.inner, self.boundaries = inner, boundaries

    async def append(self, saga_id: str, entry: LogEntry, state: SagaState,
                     error: str | None = None) -> LogEntry:
        if entry.phase is Phase.SAGA and state in (SagaState.COMPLETED, SagaState.COMPENSATED):
            self.boundaries.point("final-pending")
        return await self.inner.append(saga_id, entry, state, error)

    def __getattr__(self, name: str) -> Any:  # create, get, list, close: unchanged
        return getattr(self.inner, name)


def fault_saga(prefix: str, boundaries: Boundaries) -> Saga:
    def command(topic: str, is_action: bool) -> StepFn:
        async def call(ctx: StepContext) -> Any:
            reply = await ctx.request(f"{prefix}.{topic}", {
                "saga_id": ctx.saga_id, "step": ctx.step, "phase": ctx.phase.value,
                "data": ctx.data,
            })
            if is_action:
                boundaries.point("reply-received")
            return reply

        return call

    return Saga(SAGA_NAME, [
        Step(step, command(step, True), command(undo, False) if undo else None,
             timeout=STEP_TIMEOUT)
        for step, undo in STEPS
    ])


async def main(broker: str, store_url: str, prefix: str, boundary: str, kill_at: int,
               new_sagas: int, total: int) -> dict[str, Any]:
    began = time.monotonic()
    boundaries = Boundaries(boundary, kill_at)

    async def on_transition(t: Transition) -> None:
        if t.entry.phase is Phase.SAGA and t.entry.status == SagaState.RUNNING.value:
            boundaries.point("saga-started")
        elif t.entry.phase is Phase.ACTION and t.entry.status == Status.STARTED.value:
            boundaries.point("action-started")

    store = WatchedStore(await open_saga_store(store_url, table=f"{prefix}_saga"), boundaries)
    client = WatchedClient(broker, prefix, boundaries)
    await client.connect()
    saga = fault_saga(prefix, boundaries)
    orchestrator = Orchestrator(store, [saga], client=client, hooks=[on_transition],
                                reply_topic=f"{prefix}.replies", recover_concurrency=32)
    known = {s.id: s.state for s in await store.list(limit=None)}
    fresh = [n for n in range(total) if f"{prefix}-{n}" not in known]
    if new_sagas >= 0:
        fresh = fresh[:new_sagas]
    # As in a service restarting under load: recovery runs while new sagas start and while
    # clients ask again for the unfinished ones (start with a known id drives that saga).
    retried = [n for n in range(total) if known.get(f"{prefix}-{n}", SagaState.COMPLETED)
               .unfinished]
    recovering = asyncio.create_task(orchestrator.recover())
    gate = asyncio.Semaphore(START_CONCURRENCY)

    async def start(n: int) -> SagaState:
        async with gate:
            outcome = await orchestrator.start(saga, saga_data(n), saga_id=f"{prefix}-{n}")
            return outcome.state

    started = await asyncio.gather(*(start(n) for n in fresh + retried))
    recovered = await recovering
    await orchestrator.close()
    await client.close()
    await store.close()
    return {"recovered": len(recovered), "started": len(fresh), "retried": len(retried),
            "ended": Counter(s.value for s in started),
            "passed": boundaries.passed, "seconds": round(time.monotonic() - began, 3)}


if __name__ == "__main__":
    broker, store_url, prefix, boundary, kill_at, new_sagas, total = sys.argv[1:8]
    if boundary not in (*BOUNDARIES, "none"):
        raise SystemExit(f"unknown boundary {boundary!r}")
    done = asyncio.run(main(broker, store_url, prefix, boundary, int(kill_at), int(new_sagas),
                            int(total)))
    print(json.dumps(done))
