"""The ``mqkit`` command, driven in-process (memory:// lives in one process) or as a subprocess.

These tests are synchronous on purpose: each CLI command runs its own event loop.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from mqkit import registry
from mqkit.cli import app
from mqkit.client import Client
from mqkit.errors import ConnectionFailed
from mqkit.memory import MemoryBroker, MemoryTransport
from mqkit.message import Message
from mqkit.testing.waiting import wait_until
from mqkit.transport import TopicSpec

runner = CliRunner()


@pytest.fixture
def memory_url() -> Iterator[str]:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}"
    MemoryBroker.forget(name)


def mqkit(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input)


class OutOfStock(ValueError):
    """A permanent error for the dead-letter scenario."""


async def make_dead_letter(url: str) -> str:
    """An order that failed for good: its id, now waiting in ``orders.dlq``."""
    letters: list[Message] = []
    async with Client(url) as client:
        await client.transport.ensure_topic(TopicSpec("orders", groups=("audit",)))

        @client.subscribe("orders", group="billing")
        async def bill(order: dict[str, Any]) -> None:
            raise OutOfStock(f"sku {order['sku']} is out of stock")

        @client.subscribe("orders.dlq", group="watcher")
        async def watch(message: Message) -> None:
            letters.append(message)

        await client.start()
        sent = await client.publish("orders", {"sku": "A-1"}, key="o-1")
        await wait_until(lambda: len(letters) == 1, timeout=5, what="the dead letter")
    return sent.id


# --- demo --------------------------------------------------------------------------------
def test_demo_exits_0_and_prints_its_summary() -> None:
    # Given a fresh process; when `mqkit demo --fast` runs on memory://
    done = subprocess.run(
        [sys.executable, "-c", "from mqkit.cli import app; app()", "demo", "--fast"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    # Then it succeeds, with its timeline, summary and invariants
    assert done.returncode == 0, done.stdout + done.stderr
    for expected in ("Fan-out", "Summary", "charges / unique", "Invariants", "all invariants hold"):
        assert expected in done.stdout
    assert "FAIL" not in done.stdout


# --- publish / consume -------------------------------------------------------------------
def test_publish_then_consume_round_trip(memory_url: str) -> None:
    # Given a group that has subscribed once (so the broker keeps messages for it)
    assert mqkit("consume", "greetings", "--group", "g", "--timeout", "0.05",
                 "--url", memory_url).exit_code == 0

    # When a JSON message with a key, a header and an idempotency key is published
    published = mqkit("publish", "greetings", '{"hello": "world"}', "--key", "k-1",
                      "--header", "tenant=acme", "--idempotency-key", "idem-1",
                      "--url", memory_url)
    assert published.exit_code == 0, published.output
    assert "published 1 message(s)" in published.output

    # Then consuming prints it and acks it
    consumed = mqkit("consume", "greetings", "--group", "g", "--count", "5",
                     "--timeout", "0.2", "--url", memory_url)
    assert consumed.exit_code == 0, consumed.output
    out = consumed.output
    assert "key: k-1" in out
    assert "tenant" in out and "acme" in out
    assert "idem-1" in out
    assert '"hello": "world"' in out
    assert "received and acked 1 message(s)" in out
    # and it is gone for the group: a second read finds nothing
    again = mqkit("consume", "greetings", "--group", "g", "--timeout", "0.05", "--url", memory_url)
    assert "received and acked 0 message(s)" in again.output


def test_publish_sends_text_from_stdin_count_times(memory_url: str) -> None:
    # Given a subscribed group
    mqkit("consume", "notes", "--group", "g", "--timeout", "0.05", "--url", memory_url)

    # When plain text is piped in and published three times
    published = mqkit("publish", "notes", "-", "--count", "3", "--url", memory_url,
                      input="not json at all")
    assert published.exit_code == 0, published.output

    # Then three text messages arrive
    consumed = mqkit("consume", "notes", "--group", "g", "--timeout", "0.2", "--url", memory_url)
    assert consumed.output.count("not json at all") == 3
    assert "text/plain" in consumed.output


def test_publish_rejects_a_header_without_value(memory_url: str) -> None:
    # When a header is not name=value; then it is a usage error
    result = mqkit("publish", "t", "x", "--header", "novalue", "--url", memory_url)
    assert result.exit_code == 2
    assert "name=value" in result.output


# --- dead letters ------------------------------------------------------------------------
def test_dlq_list_counts_by_error_type(memory_url: str) -> None:
    # Given one dead-lettered order
    letter_id = asyncio.run(make_dead_letter(memory_url))

    # When the dead letters are listed
    result = mqkit("dlq", "list", "orders", "--idle", "0.2", "--url", memory_url)

    # Then the table names its error type, count and id
    assert result.exit_code == 0, result.output
    assert "1 dead letter(s) in orders.dlq" in result.output
    assert "OutOfStock" in result.output
    assert letter_id in result.output


def test_dlq_show_prints_every_header_and_the_traceback(memory_url: str) -> None:
    # Given one dead-lettered order
    letter_id = asyncio.run(make_dead_letter(memory_url))

    # When it is shown
    result = mqkit("dlq", "show", "orders.dlq", letter_id, "--idle", "0.2", "--url", memory_url)

    # Then its DLQ headers, traceback and body are printed
    assert result.exit_code == 0, result.output
    for expected in ("x-dlq-error-type", "x-dlq-original-topic", "Traceback", "out of stock",
                     '"sku": "A-1"'):
        assert expected in result.output


def test_dlq_show_of_an_unknown_id_fails(memory_url: str) -> None:
    # Given an empty dead-letter topic; when an id is shown; then it fails clearly
    result = mqkit("dlq", "show", "orders", "nope", "--idle", "0.1", "--url", memory_url)
    assert result.exit_code == 1
    assert "no dead letter with id nope" in result.output


def test_dlq_replay_moves_the_dead_letter_back_to_its_topic(memory_url: str) -> None:
    # Given one dead-lettered order and an audit group on the original topic
    letter_id = asyncio.run(make_dead_letter(memory_url))

    # When it is replayed
    result = mqkit("dlq", "replay", "orders", "--error-type", "OutOfStock", "--idle", "0.2",
                   "--url", memory_url)

    # Then one dead letter was replayed, the DLQ is empty and the copy names its cause
    assert result.exit_code == 0, result.output
    assert "replayed 1 dead letter(s)" in result.output
    listed = mqkit("dlq", "list", "orders", "--idle", "0.1", "--url", memory_url)
    assert "no dead letters" in listed.output
    audit = mqkit("consume", "orders", "--group", "audit", "--timeout", "0.2", "--url", memory_url)
    assert "received and acked 2 message(s)" in audit.output  # the original and the copy
    assert f"causation-id: {letter_id}" in audit.output


def test_dlq_replay_of_another_error_type_leaves_it(memory_url: str) -> None:
    # Given one OutOfStock dead letter
    asyncio.run(make_dead_letter(memory_url))

    # When only a different error type is replayed
    result = mqkit("dlq", "replay", "orders", "--error-type", "Other", "--idle", "0.2",
                   "--url", memory_url)

    # Then nothing moved
    assert "replayed 0 dead letter(s)" in result.output
    assert "1 left in place" in result.output


# --- doctor, bench, errors ---------------------------------------------------------------
def test_doctor_lists_capabilities_and_round_trip(memory_url: str) -> None:
    # When the doctor checks memory://; then it reports capabilities and a round trip
    result = mqkit("doctor", "--url", memory_url)
    assert result.exit_code == 0, result.output
    assert "capabilities" in result.output
    assert "native_delay" in result.output
    assert "round trip" in result.output


class UnreachableTransport(MemoryTransport):
    """A transport whose broker never answers; its error echoes the URL, password and all."""

    def __init__(self, url: Any, **options: Any) -> None:
        super().__init__("memory://unreachable")
        self.raw = url.raw

    async def connect(self) -> None:
        raise ConnectionFailed(f"connection to {self.raw} refused")


@pytest.fixture
def unreachable_scheme(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(registry._overrides, "unreachable", UnreachableTransport)
    return "unreachable"


def test_doctor_exits_1_when_the_broker_is_unreachable_and_hides_the_password(
    unreachable_scheme: str,
) -> None:
    # Given a broker URL with a password that cannot be reached
    url = f"{unreachable_scheme}://admin:hunter2-secret@127.0.0.1:1"

    # When the doctor checks it
    result = mqkit("doctor", "--url", url)

    # Then it fails clearly, and the password appears nowhere
    assert result.exit_code == 1
    assert "cannot reach the broker" in result.output
    assert "hunter2-secret" not in result.output
    assert "admin:***@127.0.0.1:1" in result.output


def test_unknown_scheme_is_a_clear_configuration_error() -> None:
    # When a URL names a scheme no adapter provides
    result = mqkit("publish", "t", "x", "--url", "kafak://127.0.0.1:9092")

    # Then the command fails with the reason and a hint
    assert result.exit_code == 2
    assert "no transport for kafak://" in result.output
    assert "Traceback" not in result.output


def test_password_in_mqkit_url_is_never_printed(
    monkeypatch: pytest.MonkeyPatch, memory_url: str
) -> None:
    # Given $MQKIT_URL carrying a password
    name = memory_url.removeprefix("memory://")
    monkeypatch.setenv("MQKIT_URL", f"memory://user:pa55-secret@{name}")

    # When a message is published without --url
    result = mqkit("publish", "t", '{"a": 1}')

    # Then it went to that broker, shown with the password masked
    assert result.exit_code == 0, result.output
    assert "pa55-secret" not in result.output
    assert "user:***@" in result.output


def test_bench_prints_its_table_for_memory() -> None:
    # When a tiny benchmark runs on the in-memory broker
    result = mqkit("bench", "--url", "memory://", "--count", "200", "--rounds", "1")
    # Then it prints the comparison table with every contender
    assert result.exit_code == 0, result.output
    for contender in ("bare", "client", "queue", "kombu"):
        assert contender in result.output
