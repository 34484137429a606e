"""SIGKILL the orchestrating process at every transition point, restart, recover().

The child runs two orders (one completes, one is refused at payment) and kills itself at
point k: after the k-th logged transition or committed participant effect. The test then
recovers in its own process and counts each participant effect: every saga that was started
ends completed or compensated, and every effect is applied exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path

from mqkit.saga import Orchestrator, SagaState
from mqkit.saga.store_sqlite import SqliteSagaStore
from tests.saga.crash_flow import SAGAS, open_effects, order_saga

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {
    "order-ok": Counter(["create-order", "reserve-inventory", "charge-payment", "ship-order"]),
    "order-bad": Counter(["create-order", "reserve-inventory", "release-inventory",
                          "cancel-order"]),
}
FINAL = {"order-ok": SagaState.COMPLETED, "order-bad": SagaState.COMPENSATED}


async def run_child(workdir: Path, kill_at: int) -> tuple[int, str]:
    os.makedirs(workdir)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.saga.crash_flow", str(workdir / "log.db"),
        str(workdir / "effects.db"), str(kill_at),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode()


def effects_by_saga(path: Path) -> dict[str, Counter[str]]:
    found: dict[str, Counter[str]] = {saga_id: Counter() for saga_id in SAGAS}
    with sqlite3.connect(path) as conn:
        for saga_id, effect in conn.execute("SELECT saga_id, effect FROM effects"):
            found[saga_id][effect] += 1
    conn.close()
    return found


async def recover(workdir: Path) -> dict[str, SagaState]:
    store = await SqliteSagaStore.open(str(workdir / "log.db"))
    effects = await open_effects(str(workdir / "effects.db"))
    try:
        orchestrator = Orchestrator(store, [order_saga(effects, lambda: None)])
        await orchestrator.recover()
        return {s.id: s.state for s in await store.list(limit=None)}
    finally:
        await effects.close()
        await store.close()


async def test_a_crash_at_any_point_recovers_with_every_effect_applied_once(
    tmp_path: Path,
) -> None:
    # Given the number of kill points in an uninterrupted run (which itself must be right)
    code, output = await run_child(tmp_path / "clean", kill_at=0)
    assert code == 0, output
    points = int(output.split()[-1])
    assert effects_by_saga(tmp_path / "clean" / "effects.db") == EXPECTED
    assert points > 25  # transitions and effects of both sagas

    # When the orchestrator is SIGKILLed at each point in turn (three at a time) ...
    gate = asyncio.Semaphore(3)

    Result = tuple[int, dict[str, SagaState], dict[str, Counter[str]]]

    async def crash_then_recover(k: int) -> Result:
        async with gate:
            code, output = await run_child(tmp_path / f"kill-{k}", kill_at=k)
        assert code == -signal.SIGKILL, f"point {k}: exit {code}\n{output}"
        # ... and a new process recovers
        states = await recover(tmp_path / f"kill-{k}")
        return k, states, effects_by_saga(tmp_path / f"kill-{k}" / "effects.db")

    results = await asyncio.gather(*(crash_then_recover(k) for k in range(1, points + 1)))

    # Then every saga that had started ended as it should, with each effect exactly once
    started_both = 0
    for k, states, effects in results:
        for saga_id, state in states.items():
            assert state is FINAL[saga_id], f"point {k}: {saga_id} is {state}"
            assert effects[saga_id] == EXPECTED[saga_id], f"point {k}: {saga_id} {effects}"
        for saga_id in set(SAGAS) - set(states):  # killed before it was started
            assert effects[saga_id] == Counter(), f"point {k}: {saga_id} has effects"
        started_both += len(states) == 2
    assert started_both > 0
