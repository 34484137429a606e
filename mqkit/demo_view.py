"""Rich rendering of ``mqkit.demo``: a live, coloured timeline and the final summary."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mqkit.demo import DemoReport, Event

STYLES = {
    "step": "bold magenta",
    "publish": "cyan",
    "handle": "green",
    "duplicate": "yellow",
    "retry": "bold yellow",
    "fail": "bold red",
    "dead": "red",
    "ops": "bold blue",
    "info": "white",
}
ACTOR_WIDTH = 15


class TimelinePrinter:
    """An ``on_event`` callback printing each event as a timeline line as it happens."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, event: Event) -> None:
        style = STYLES.get(event.kind, "white")
        if event.kind == "step":
            self.console.print()
            self.console.print(Text(f"{event.at:7.3f}s  {event.text}", style=style))
            return
        line = Text(f"{event.at:7.3f}s  ", style="dim")
        line.append(f"{event.actor:<{ACTOR_WIDTH}}", style="bold")
        line.append(event.text, style=style)
        self.console.print(line)


def summary_table(report: DemoReport) -> Table:
    table = Table(title="Summary", title_style="bold", show_lines=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_column("note", style="dim")
    table.add_row(
        "registration answered in",
        f"{report.registration_ms:.1f} ms",
        f"vs ~{report.sync_estimate_ms:.0f} ms if email + analytics ran inline",
    )
    table.add_row("orders published", str(report.orders_published), "incl. 1 malformed")
    for group in ("billing", "notifications", "analytics"):
        stats = report.groups.get(group)
        if stats is None:
            continue
        table.add_row(
            f"  {group} deliveries",
            str(stats.deliveries),
            f"{stats.handled} handled, {stats.duplicates} duplicate(s) absorbed, "
            f"{stats.failures} failed",
        )
    table.add_row(
        "payments: charges / unique",
        f"{report.charges} / {report.unique_payments}",
        f"{report.payments_published} payment messages; store: {report.store}",
    )
    table.add_row("retries (transient failures)", str(report.retries), "backoff with jitter")
    table.add_row("dead-lettered", str(report.dead_lettered), "")
    table.add_row("replayed from the DLQ", str(report.replayed), "")
    table.add_row("left in dead-letter topics", str(report.dlq_left), "")
    for order, state in report.sagas.items():
        undone = report.saga_compensations.get(order, [])
        table.add_row(f"order saga {order}", state,
                      f"compensated: {', '.join(undone)}" if undone else "no compensation")
    return table


def checks_table(report: DemoReport) -> Table:
    table = Table(title="Invariants", title_style="bold")
    table.add_column("")
    table.add_column("check")
    table.add_column("detail", style="dim")
    for check in report.checks:
        mark = Text("PASS", style="bold green") if check.ok else Text("FAIL", style="bold red")
        table.add_row(mark, check.name, check.detail)
    return table


def print_report(console: Console, report: DemoReport) -> None:
    console.print()
    console.print(summary_table(report))
    console.print(checks_table(report))
    verdict = (
        Text(f"all invariants hold ({report.elapsed:.2f}s)", style="bold green")
        if report.ok
        else Text("some invariants FAILED", style="bold red")
    )
    console.print(verdict)
