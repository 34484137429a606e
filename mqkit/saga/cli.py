"""``mqkit saga list|show --store URL``: look into a saga log from the shell.

Exit codes as the rest of ``mqkit``: 0 success, 1 not found or store unreachable, 2 bad
usage (unknown store scheme, bad state name). The store URL's password is never printed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mqkit.errors import ConfigurationError, MqkitError
from mqkit.saga.model import SagaRecord, SagaState, SagaSummary
from mqkit.saga.store import SagaStore, open_saga_store
from mqkit.url import BrokerURL, redact_text, redact_url

T = TypeVar("T")

saga_app = typer.Typer(help="Inspect sagas in a saga log.", no_args_is_help=True)

DEFAULT_STORE = "sqlite:///mqkit-saga.db"
Store = Annotated[
    str,
    typer.Option("--store", envvar="MQKIT_SAGA_STORE", show_envvar=True,
                 help="Saga log URL: sqlite:///path.db or postgresql://user:pass@host/db."),
]
STATE_STYLES = {
    SagaState.RUNNING: "cyan", SagaState.COMPENSATING: "yellow",
    SagaState.COMPLETED: "green", SagaState.COMPENSATED: "blue", SagaState.STUCK: "bold red",
}


def _fail(message: str, store: str, code: int = 1) -> NoReturn:
    try:
        password = BrokerURL.parse(store).password
    except MqkitError:
        password = None
    text = redact_text(message.replace(store, redact_url(store)), [password] if password else [])
    Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {text}")
    raise typer.Exit(code)


def _with_store(store: str, body: Callable[[SagaStore], Awaitable[T]]) -> T:
    async def main() -> T:
        opened = await open_saga_store(store)
        try:
            return await body(opened)
        finally:
            await opened.close()

    try:
        return asyncio.run(main())
    except ConfigurationError as exc:
        _fail(str(exc), store, code=2)
    except (MqkitError, OSError) as exc:
        _fail(str(exc) or type(exc).__name__, store)


def _when(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _state(state: SagaState) -> Text:
    return Text(state.value, style=STATE_STYLES[state])


@saga_app.command("list")
def saga_list(
    store: Store = DEFAULT_STORE,
    state: Annotated[list[str] | None, typer.Option(
        "--state", "-s", help="Only sagas in this state (repeatable): running, "
        "compensating, completed, compensated, stuck.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
) -> None:
    """List sagas, most recently updated first, with their state."""
    try:
        states = [SagaState(s) for s in state] if state else None
    except ValueError:
        _fail(f"unknown state in {state}; use {[s.value for s in SagaState]}", store, code=2)
    rows: list[SagaSummary] = _with_store(store, lambda s: s.list(states=states, limit=limit))
    out = Console(highlight=False)
    if not rows:
        out.print(f"no sagas in {redact_url(store)}")
        return
    table = Table(title=f"sagas in {redact_url(store)}")
    table.add_column("id", no_wrap=True)
    for column in ("saga", "state", "updated (UTC)", "error"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r.id, r.name, _state(r.state), _when(r.updated_at), r.error or "")
    out.print(table)
    stuck = sum(r.state is SagaState.STUCK for r in rows)
    if stuck:
        out.print(f"[bold red]{stuck} stuck saga(s) need an operator[/]: fix the cause, then "
                  "Orchestrator.resume(id)")


@saga_app.command("show")
def saga_show(
    saga_id: Annotated[str, typer.Argument(help="The saga's id.")],
    store: Store = DEFAULT_STORE,
) -> None:
    """Show one saga: its state, input and every transition of its log."""
    record: SagaRecord | None = _with_store(store, lambda s: s.get(saga_id))
    if record is None:
        _fail(f"no saga {saga_id!r} in {redact_url(store)}", store)
    out = Console(highlight=False)
    out.print(Text.assemble(f"saga {record.id} ({record.name}): ", _state(record.state)))
    out.print(f"input: {json.dumps(record.data)}", markup=False)
    if record.error:
        out.print(f"error: {record.error}", markup=False)
    out.print(f"created {_when(record.created_at)} UTC, updated {_when(record.updated_at)} UTC")
    table = Table(title="log")
    for column in ("seq", "time", "phase", "step", "status", "try"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail", overflow="fold")
    for e in record.entries:
        detail: Any = "" if e.detail is None else json.dumps(e.detail)
        clock = datetime.fromtimestamp(e.at, UTC).strftime("%H:%M:%S.%f")[:-3]
        table.add_row(str(e.seq), clock, e.phase.value, e.step_name or "", e.status,
                      str(e.attempt or ""), detail)
    out.print(table)
