"""The ``mqkit`` command: publish, consume, look after dead letters, check a broker, demo.

Every command takes ``--url`` (default ``$MQKIT_URL``, else ``memory://``). Passwords and
secret options in URLs are never printed: output shows ``client.url.safe()`` and errors are
redacted. Exit codes: 0 success, 1 failure (broker unreachable, nothing found, a demo
invariant broken), 2 bad usage or configuration (unknown scheme, bad URL or option).

memory:// lives inside one process: ``mqkit publish`` and ``mqkit consume`` on memory://
only talk to each other when run in one process (tests drive them through typer's runner).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable
from dataclasses import fields
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mqkit import dlq
from mqkit import headers as h
from mqkit.cli_common import (
    DEFAULT_URL,
    Idle,
    Url,
    _fail,
    _out,
    _run,
    _with_client,
)
from mqkit.cli_positions import lag, replay
from mqkit.client import Client
from mqkit.errors import ConfigurationError, MqkitError
from mqkit.message import Message, dlq_topic, new_id
from mqkit.saga.cli import saga_app
from mqkit.transport import TopicSpec
from mqkit.url import redact_url

app = typer.Typer(
    name="mqkit",
    help="Publish, consume, inspect dead letters and check brokers, on any broker by URL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals would include the URL and its password
)
dlq_app = typer.Typer(help="Inspect and replay dead letters.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(saga_app, name="saga")
app.command("replay")(replay)
app.command("lag")(lag)

def _parse_body(body: str) -> Any:
    """JSON if ``body`` parses as JSON, else the text itself."""
    try:
        return json.loads(body)
    except ValueError:
        return body


def _parse_headers(pairs: list[str], url: str) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            _fail(f"--header needs name=value, got {pair!r}", url, code=2)
        parsed[name.strip()] = value
    return parsed


def _show_body(message: Message) -> str:
    ctype = message.content_type or ""
    if ctype.startswith("application/json"):
        try:
            return json.dumps(json.loads(message.body), indent=2, ensure_ascii=False)
        except ValueError:
            pass
    if ctype.startswith("text/") or ctype.startswith("application/json"):
        return message.body.decode(errors="replace")
    return repr(message.body[:500]) + (" ..." if len(message.body) > 500 else "")


def _when(stamp: str | None) -> str:
    try:
        return datetime.fromtimestamp(float(stamp or ""), UTC).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return "-"


# --- publish / consume -------------------------------------------------------------------
@app.command()
def publish(
    topic: Annotated[str, typer.Argument(help="Topic to publish to.")],
    body: Annotated[
        str | None, typer.Argument(help="JSON (sent as JSON) or text; '-' reads stdin.")
    ] = None,
    key: Annotated[str | None, typer.Option("--key", "-k", help="Ordering key.")] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="name=value; repeatable.")
    ] = None,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Send N copies.")] = 1,
    url: Url = DEFAULT_URL,
) -> None:
    """Publish a message (or N copies of it) and wait for the broker's confirmation."""
    text = sys.stdin.read() if body == "-" else body
    if text is None:
        _fail("give a BODY (JSON or text), or '-' to read it from stdin", url, code=2)
    payload = _parse_body(text)
    headers = _parse_headers(header or [], url)

    async def main(client: Client) -> list[Message]:
        messages = [
            client.message(
                topic, payload, key=key, headers=headers, idempotency_key=idempotency_key
            )
            for _ in range(count)
        ]
        await client.publish_messages(messages)
        return messages

    out = _out()
    sent = _run(url, lambda: _with_client(url, main))
    out.print(f"published {len(sent)} message(s) to [bold]{topic}[/] on {redact_url(url)}")
    for message in sent[:10]:
        out.print(f"  id {message.id}")
    if url.startswith("memory:"):
        out.print(
            "[dim]note: memory:// lives in this process only; another mqkit command will "
            "not see these messages.[/]"
        )


@app.command()
def consume(
    topic: Annotated[str, typer.Argument(help="Topic (or pattern) to read.")],
    group: Annotated[str, typer.Option("--group", "-g", help="Consumer group.")] = "mqkit-cli",
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Stop after N.")] = 10,
    timeout: Annotated[
        float, typer.Option("--timeout", "-t", min=0.01, help="Stop after S quiet seconds.")
    ] = 5.0,
    url: Url = DEFAULT_URL,
) -> None:
    """Print messages of TOPIC for GROUP (id, key, headers, body) and ack them."""
    out = _out()

    async def main(client: Client) -> int:
        seen = 0
        stream = client.consume(topic, group=group, prefetch=min(count, 100))
        try:
            while seen < count:
                try:
                    async with asyncio.timeout(timeout):
                        delivery = await anext(stream)
                except (TimeoutError, StopAsyncIteration):
                    break
                m = delivery.message
                out.rule(f"[bold]{m.topic}[/] {m.id}")
                out.print(f"key: {m.key}   attempt: {delivery.attempt}")
                for name, value in sorted(m.headers.items()):
                    out.print(f"  [cyan]{name}[/]: {value}")
                out.print(_show_body(m), markup=False)
                await delivery.ack()
                seen += 1
        finally:
            await stream.aclose()
        return seen

    seen = _run(url, lambda: _with_client(url, main))
    out.print(f"received and acked {seen} message(s) from {topic} (group {group})")


# --- dead letters ------------------------------------------------------------------------
@dlq_app.command("list")
def dlq_list(
    topic: Annotated[str, typer.Argument(help="Topic (orders) or its DLQ (orders.dlq).")],
    limit: Annotated[int, typer.Option("--limit", min=1)] = dlq.DEFAULT_LIMIT,
    idle: Idle = 2.0,
    url: Url = DEFAULT_URL,
) -> None:
    """Count dead letters by error type and list them, leaving them in place."""
    letters = _run(url, lambda: _with_client(
        url, lambda c: dlq.inspect(c, topic, limit=limit, idle=idle)
    ))
    out = _out()
    name = dlq_topic(topic)
    if not letters:
        out.print(f"no dead letters in [bold]{name}[/]")
        return
    out.print(f"[bold]{len(letters)} dead letter(s) in {name}[/]")
    counts = Table()
    counts.add_column("error type")
    counts.add_column("count", justify="right")
    for error, n in dlq.summarize(letters).items():
        counts.add_row(error, str(n))
    out.print(counts)
    rows = Table(show_lines=False)
    rows.add_column("id", no_wrap=True, min_width=32)  # ids stay whole for `dlq show`
    for column in ("key", "error", "message", "attempts", "failed at (UTC)"):
        rows.add_column(column, overflow="fold")
    for m in letters:
        rows.add_row(
            m.id,
            m.key or "",
            dlq.error_type_of(m),
            (m.headers.get(h.DLQ_ERROR_MESSAGE) or "")[:80],
            m.headers.get(h.DLQ_ATTEMPTS, "?"),
            _when(m.headers.get(h.DLQ_FAILED_AT)),
        )
    out.print(rows)


@dlq_app.command("show")
def dlq_show(
    topic: Annotated[str, typer.Argument(help="Topic (orders) or its DLQ (orders.dlq).")],
    message_id: Annotated[str, typer.Argument(help="The dead letter's message id.")],
    idle: Idle = 2.0,
    url: Url = DEFAULT_URL,
) -> None:
    """Show one dead letter: every header (traceback included) and its body."""
    letters = _run(url, lambda: _with_client(url, lambda c: dlq.inspect(c, topic, idle=idle)))
    found = next((m for m in letters if m.id == message_id), None)
    if found is None:
        _fail(f"no dead letter with id {message_id} in {dlq_topic(topic)} "
              f"({len(letters)} there)", url)
    out = _out()
    table = Table(title=f"dead letter {found.id}", show_header=False)
    table.add_column("field", style="cyan")
    table.add_column("value", overflow="fold")
    table.add_row("topic", found.topic)
    table.add_row("key", found.key or "")
    table.add_row("published at (UTC)", _when(str(found.timestamp)))
    for name, value in sorted(found.headers.items()):
        if name != h.DLQ_TRACEBACK:
            table.add_row(name, value)
    out.print(table)
    traceback = found.headers.get(h.DLQ_TRACEBACK)
    if traceback:
        out.rule("traceback")
        out.print(traceback.rstrip(), markup=False, highlight=False)
    out.rule("body")
    out.print(_show_body(found), markup=False)


@dlq_app.command("replay")
def dlq_replay(
    topic: Annotated[str, typer.Argument(help="Topic (orders) or its DLQ (orders.dlq).")],
    error_type: Annotated[
        str | None, typer.Option("--error-type", "-e", help="Only this error type.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1)] = None,
    idle: Idle = 2.0,
    url: Url = DEFAULT_URL,
) -> None:
    """Republish dead letters to their original topic (new id, fresh attempts), then ack them."""
    out = _out()

    async def main(client: Client) -> dlq.ReplayResult:
        letters = await dlq.inspect(client, topic, idle=idle)
        total = sum(1 for m in letters if error_type in (None, dlq.error_type_of(m)))
        total = min(total, limit) if limit is not None else total
        with Progress(
            TextColumn("[bold]replaying[/]"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=out,
        ) as progress:
            task = progress.add_task("replay", total=total or None)
            return await dlq.replay(
                client, topic, error_type=error_type, limit=limit, idle=idle,
                on_progress=lambda old, new: progress.advance(task),
            )

    result = _run(url, lambda: _with_client(url, main))
    out.print(
        f"replayed {result.replayed} dead letter(s) from {dlq_topic(topic)}; "
        f"{result.skipped} left in place"
    )
    for copy in result.copies[:20]:
        out.print(f"  {copy.causation_id} -> {copy.id} on {copy.topic}")


# --- doctor / bench / demo ---------------------------------------------------------------
@app.command()
def doctor(
    url: Url = DEFAULT_URL,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1)] = 10.0,
) -> None:
    """Connect, list the transport's capabilities and time a publish -> consume round trip."""
    out = _out()

    async def main() -> None:
        client = Client(url)
        out.print(f"broker   {client.url.safe()}")
        out.print(f"adapter  {type(client.transport).__module__}.{type(client.transport).__name__}")
        try:
            async with asyncio.timeout(timeout):
                await client.connect()
        except (MqkitError, OSError, TimeoutError) as exc:
            await _quietly(client.close())
            reason = str(exc) or type(exc).__name__
            _fail(f"cannot reach the broker at {client.url.safe()}: {reason}", url)
        try:
            caps = Table(title="capabilities")
            caps.add_column("flag")
            caps.add_column("value")
            for f in fields(client.capabilities):
                value = getattr(client.capabilities, f.name)
                shown = {True: "[green]yes[/]", False: "[dim]no[/]"}.get(value, str(value))
                caps.add_row(f.name, shown)
            out.print(caps)
            async with asyncio.timeout(timeout):
                rtt = await _round_trip(client)
            out.print(f"[green]ok[/]: publish -> consume round trip {rtt * 1000:.1f} ms")
        finally:
            await client.close()

    _run(url, main)


async def _quietly(awaitable: Awaitable[None]) -> None:
    try:
        await awaitable
    except Exception:  # best effort: the broker is already known to be unreachable
        pass


async def _round_trip(client: Client) -> float:
    topic, group = f"mqkit-doctor-{new_id()[:12]}", "doctor"
    await client.transport.ensure_topic(TopicSpec(topic, groups=(group,)))
    stream = client.consume(topic, group=group, prefetch=1)
    first = asyncio.ensure_future(anext(stream))
    try:
        if not client.capabilities.retains_unconsumed:
            await asyncio.sleep(0.2)  # let the subscription reach the broker first
        else:
            await asyncio.sleep(0)
        started = time.perf_counter()
        sent = await client.publish(topic, {"ping": "mqkit doctor"})
        delivery = await first
        took = time.perf_counter() - started
        await delivery.ack()
        if delivery.message.id != sent.id:
            raise MqkitError(f"round trip got message {delivery.message.id}, sent {sent.id}")
        return took
    finally:
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await stream.aclose()


@app.command()
def bench(
    url: Url = DEFAULT_URL,
    count: Annotated[int, typer.Option("--count", "-n", min=1)] = 10_000,
    size: Annotated[int, typer.Option("--size", min=0, help="Body bytes.")] = 256,
    rounds: Annotated[int, typer.Option("--rounds", min=1)] = 3,
) -> None:
    """Benchmark publish/consume on URL against the raw client (see mqkit.bench)."""
    try:
        from mqkit import bench as bench_module
    except ImportError as exc:
        _fail(f"the benchmark module mqkit.bench is not available ({exc})", url)
    try:
        bench_module.main(url, count=count, size=size, rounds=rounds, console=_out())
    except ConfigurationError as exc:
        _fail(str(exc), url, code=2)
    except (MqkitError, OSError, TimeoutError) as exc:
        _fail(str(exc) or type(exc).__name__, url)


@app.command()
def demo(
    url: Url = DEFAULT_URL,
    fast: Annotated[bool, typer.Option("--fast", help="Skip the simulated work delays.")] = False,
) -> None:
    """Run the order-flow demo: async work, fan-out, idempotency, retries, DLQ and replay."""
    from mqkit.demo import run_demo
    from mqkit.demo_view import TimelinePrinter, print_report

    # The timeline tells the story; the library's own warnings would repeat it on stderr.
    logging.getLogger("mqkit").addHandler(logging.NullHandler())
    out = _out()
    out.rule(f"[bold]mqkit demo[/] on {redact_url(url)}")
    report = _run(url, lambda: run_demo(url, fast=fast, on_event=TimelinePrinter(out)))
    print_report(out, report)
    if not report.ok:
        raise typer.Exit(1)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"mqkit {version('mqkit')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """mqkit: write a producer or consumer once; run it on any broker by URL."""
