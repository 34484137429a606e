"""The two saga examples run on memory:// and end as they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "examples" / script), *args],
                          capture_output=True, text=True, timeout=60)


def test_orchestrated_example_completes_one_order_and_compensates_the_other(
    tmp_path: Path,
) -> None:
    done = run("saga_orchestrated.py", "--store", f"sqlite:///{tmp_path / 'sagas.db'}")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "completed" in done.stdout and "compensated" in done.stdout
    assert done.stdout.index("released the reservation for o-2") < done.stdout.index(
        "order o-2 cancelled")


def test_choreography_example_flows_compensating_events_backwards() -> None:
    done = run("saga_choreography.py")

    assert done.returncode == 0, done.stdout + done.stderr
    assert ("o-2: order-created -> inventory-reserved -> payment-failed -> "
            "inventory-released -> order-cancelled") in done.stdout
