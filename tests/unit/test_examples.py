"""Every example script runs on the embedded broker and reports success with exit code 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.py"))


def test_there_is_an_example_per_seed_scenario() -> None:
    # Given the examples directory; then each seed scenario has its script
    names = {p.name for p in EXAMPLES}
    assert {
        "async_registration.py",
        "fanout.py",
        "idempotent_payments.py",
        "retries_and_dlq.py",
    } <= names


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_on_memory_and_exits_0(script: Path) -> None:
    # Given an example script; when it runs on memory:// (its default)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=script.parent.parent,
    )

    # Then it succeeds and says so
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok:" in done.stdout
