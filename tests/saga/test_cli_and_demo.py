"""``mqkit saga list|show`` over a saga log, and the order saga inside ``mqkit demo``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from mqkit.cli import app
from mqkit.saga import Orchestrator, open_saga_store
from tests.saga.orderflow import Ledger, order_saga

runner = CliRunner(env={"COLUMNS": "160"})


def make_log(path: Path) -> str:
    """A SQLite saga log with one completed and one compensated order; its URL."""
    url = f"sqlite:///{path}"

    async def fill() -> None:
        store = await open_saga_store(url)
        orchestrator = Orchestrator(store)
        await orchestrator.start(order_saga(Ledger()), {"order": 1}, saga_id="order-1")
        await Orchestrator(store).start(order_saga(Ledger(fail_at="charge-payment")),
                                        {"order": 2}, saga_id="order-2")
        await store.close()

    asyncio.run(fill())
    return url


def test_saga_list_shows_each_saga_with_its_state(tmp_path: Path) -> None:
    # Given a log with a completed and a compensated saga
    url = make_log(tmp_path / "sagas.db")

    # When listing it
    result = runner.invoke(app, ["saga", "list", "--store", url])

    # Then both appear with their states
    assert result.exit_code == 0, result.output
    assert "order-1" in result.output and "completed" in result.output
    assert "order-2" in result.output and "compensated" in result.output


def test_saga_list_filters_by_state(tmp_path: Path) -> None:
    url = make_log(tmp_path / "sagas.db")

    result = runner.invoke(app, ["saga", "list", "--store", url, "--state", "compensated"])

    assert result.exit_code == 0, result.output
    assert "order-2" in result.output and "order-1" not in result.output


def test_saga_show_prints_the_log_in_order(tmp_path: Path) -> None:
    # Given the compensated saga; when showing it
    url = make_log(tmp_path / "sagas.db")
    result = runner.invoke(app, ["saga", "show", "order-2", "--store", url])

    # Then its transitions read in order, compensations last-first
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.index("charge-payment") < text.index("compensating")
    assert text.index("reserve-inventory", text.index("compensating")) < text.index(
        "create-order", text.index("compensating"))


def test_saga_show_of_an_unknown_id_exits_1(tmp_path: Path) -> None:
    url = make_log(tmp_path / "sagas.db")

    result = runner.invoke(app, ["saga", "show", "nope", "--store", url])

    assert result.exit_code == 1
    assert "no saga 'nope'" in result.output


def test_an_unknown_store_scheme_exits_2_without_printing_the_password() -> None:
    result = runner.invoke(app, ["saga", "list", "--store", "mongo://u:hunter2@host/db"])

    assert result.exit_code == 2
    assert "hunter2" not in result.output


def test_the_demo_runs_the_order_saga_and_shows_compensations_in_order() -> None:
    # Given a fresh process; when `mqkit demo --fast` runs
    done = subprocess.run(
        [sys.executable, "-c", "from mqkit.cli import app; app()", "demo", "--fast"],
        capture_output=True, text=True, timeout=60,
    )

    # Then o-10 completes, o-11 fails at payment, and is undone in reverse order
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "o-10: saga completed" in out
    assert "o-11: charge-payment failed" in out
    assert out.index("o-11: reserve-inventory compensated") < out.index(
        "o-11: create-order compensated") < out.index("o-11: saga compensated")
    assert "FAIL" not in out
